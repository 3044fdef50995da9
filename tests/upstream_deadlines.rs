//! The upstream's deadlines, each on its own clock: a response body that
//! stalls is cut after `body_timeout` and counted against its version; a
//! slow upload that keeps moving is not a slow upstream (`request_timeout`
//! runs from the end of the request).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn yaml(up: std::net::SocketAddr, timeouts: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  v1: {{endpoints: ["{up}"], connect_timeout: 500ms, {timeouts}}}
routes:
  - name: app
    stable: {{upstream: v1}}
"#
    )
}

/// An upstream that answers a 10-byte body with 5 bytes and then holds the
/// connection open, silent.
async fn stalling_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
                // Hold the socket for longer than any test waits.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_is_cut_after_body_timeout_and_counted() {
    let up = stalling_upstream().await;
    let weir = Weir::start(&yaml(up, "request_timeout: 5s, body_timeout: 300ms")).await;
    let started = Instant::now();
    let req = http::Request::get(weir.url("/")).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client().request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the head had arrived");
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    let body = body.expect("the client is not held forever");
    assert!(body.is_err(), "a 5-of-10-byte body must not look complete");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "cut after about body_timeout, took {took:?}");
    // Counted as an error of that version, and as an upstream timeout.
    let m = get(&client(), &format!("http://{}/metrics", weir.admin), &[]).await.2;
    assert!(m.contains(r#"weir_upstream_errors_total{route="app",version="stable",kind="timeout"} 1"#), "{m}");
    let v: serde_json::Value =
        serde_json::from_str(&get(&client(), &format!("http://{}/routes/app", weir.admin), &[]).await.2).unwrap();
    assert_eq!(v["stable"]["window"]["errors"], 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_that_keeps_moving_is_not_a_timeout() {
    let up = Upstream::start("stable").await;
    // The whole upload takes ~1.5 s, three times request_timeout.
    let weir = Weir::start(&yaml(up.addr, "request_timeout: 500ms, body_timeout: 2s")).await;
    let mut s = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    let total = 150_000usize;
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {total}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let piece = vec![b'u'; 10_000];
    for _ in 0..total / piece.len() {
        s.write_all(&piece).await.unwrap();
        // Pacing the client, not waiting for weir.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut resp = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !resp.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => resp.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), total, "the upstream got the whole body");
}

/// An upstream that, like nginx's `keepalive_timeout`, half-closes a
/// keep-alive connection after 200 ms without a request, then counts the
/// connections whose other end (weir) closed too.
async fn closing_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = std::sync::Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let wait = if buf.is_empty() { Duration::from_millis(200) } else { Duration::from_secs(5) };
                    match tokio::time::timeout(wait, s.read(&mut chunk)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                        Err(_) => break, // idle: close our side
                    }
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        buf.clear();
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                    }
                }
                let _ = s.shutdown().await;
                // weir's side is in CLOSE_WAIT now, until weir closes it.
                let mut rest = [0u8; 64];
                if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(30), s.read(&mut rest)).await {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_upstream_closed_are_closed_by_weir_without_new_traffic() {
    use std::sync::atomic::Ordering;
    let (up, closed) = closing_upstream().await;
    let weir = Weir::start(&yaml(up, "request_timeout: 5s")).await;
    // A burst: 40 requests at once open about 40 upstream connections.
    let http = client();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (http, url) = (http.clone(), weir.url("/"));
            tokio::spawn(async move { get(&http, &url, &[]).await.0 })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let pooled = weir.handle.live.load().upstreams[0].idle_connections();
    assert!(pooled >= 10, "the burst left {pooled} idle connections");
    // No more traffic. The upstream closes each after 200 ms; weir must
    // close its side on its own, not when a request pops it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::Relaxed) < pooled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed.load(Ordering::Relaxed) >= pooled, "{} of {pooled} closed", closed.load(Ordering::Relaxed));
    assert_eq!(weir.handle.live.load().upstreams[0].idle_connections(), 0, "the pool is empty again");
}

/// An upstream that answers as soon as it has the request head, then reads
/// the whole body anyway (a streaming API that acknowledges first), and
/// reports how many body bytes it got.
async fn early_answering_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let end = loop {
                    let mut chunk = [0u8; 8192];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let want: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                let mut got = buf.len() - end;
                while got < want {
                    let mut chunk = [0u8; 65536];
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => got += n,
                        _ => break,
                    }
                }
                let _ = tx.send(got);
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_does_not_stop_the_upload() {
    let (up, mut got) = early_answering_upstream().await;
    let weir = Weir::start(&yaml(up, "request_timeout: 5s, body_timeout: 5s")).await;
    let body = Bytes::from(vec![b'b'; 2 * 1024 * 1024]);
    let req = http::Request::post(weir.url("/upload")).body(Full::new(body)).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.unwrap().unwrap();
    assert_eq!(&text.to_bytes()[..], b"ok", "the client got the answer");
    let n = tokio::time::timeout(Duration::from_secs(15), got.recv()).await.unwrap().unwrap();
    assert_eq!(n, 2 * 1024 * 1024, "the upstream got the whole body after answering");
}
