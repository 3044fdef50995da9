//! Upstream faults (hardening.md E), from a small fault-injecting upstream:
//! the client sees the right status or an error signal (never a
//! complete-looking response), poisoned connections are never reused, and
//! every fault counts against the version that caused it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, get, refused_addr, route_view};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Copy)]
enum Fault {
    /// Read the request, never answer.
    Hang,
    /// Answer a head promising 100 bytes, send 10, then reset.
    ResetMidBody,
    /// Two different Content-Length headers.
    DuplicateLength,
    /// A complete response followed by stray bytes on the connection.
    ExtraBytes,
    /// A correct keep-alive response, then close the connection at once.
    CloseAfterEach,
}

/// A raw upstream that misbehaves in one way; counts connections accepted.
struct Faulty {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

impl Faulty {
    async fn start(fault: Fault) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let c2 = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                c2.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    loop {
                        // One request head per loop (the tests send no bodies).
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        match fault {
                            Fault::Hang => {
                                let _ = s.read(&mut buf).await;
                                return;
                            }
                            Fault::ResetMidBody => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
                                let _ = s.set_zero_linger();
                                return;
                            }
                            Fault::DuplicateLength => {
                                let _ = s
                                    .write_all(
                                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nokok!",
                                    )
                                    .await;
                                return;
                            }
                            Fault::ExtraBytes => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE").await;
                            }
                            Fault::CloseAfterEach => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, connections }
    }
}

/// weir with the faulty upstream as canary at 100 % (stable healthy).
async fn weir_with_canary(canary: SocketAddr, request_timeout: &str) -> (Upstream, Weir) {
    let stable = Upstream::start("stable").await;
    let yaml = config(
        stable.addr,
        canary,
        "  - name: app\n    stable: {upstream: v1}\n    canary: {upstream: v2}\n    weight: 100\n",
    )
    .replace("request_timeout: 5s", &format!("request_timeout: {request_timeout}"));
    (stable, Weir::start(&yaml).await)
}

async fn metrics(w: &Weir) -> String {
    get(&client(), &format!("http://{}/metrics", w.admin), &[]).await.2
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

/// Status and whether the body arrived whole (Err: the body failed).
async fn fetch(url: &str) -> Result<(u16, Bytes), String> {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_a_504_at_the_response_timeout_and_counts_against_it() {
    let f = Faulty::start(Fault::Hang).await;
    let (_s, w) = weir_with_canary(f.addr, "1s").await;
    let t0 = Instant::now();
    let (status, _) = fetch(&w.url("/x")).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(status, 504);
    // Bounded by request_timeout (1 s), not by an OS default.
    assert!(took < Duration::from_secs(5), "{took:?}");
    let text = metrics(&w).await;
    assert_eq!(metric(&text, r#"weir_upstream_errors_total{route="app",version="canary",kind="timeout"}"#), 1.0);
    assert_eq!(route_view(w.admin, "app").await["canary"]["window"]["errors"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_body_never_looks_like_a_complete_response() {
    let f = Faulty::start(Fault::ResetMidBody).await;
    let (_s, w) = weir_with_canary(f.addr, "5s").await;
    for _ in 0..3 {
        match fetch(&w.url("/x")).await {
            Ok((status, body)) => panic!("a complete-looking response: {status} {body:?}"),
            Err(e) => assert!(e.starts_with("body"), "{e}"),
        }
    }
    // Counted as canary errors (truncation), and each reset connection was
    // discarded: three requests, three upstream connections.
    let v = route_view(w.admin, "app").await;
    assert_eq!(v["canary"]["window"]["errors"], 3, "{v}");
    assert_eq!(f.connections.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_upstream_framing_is_a_502_and_the_connection_is_not_reused() {
    let f = Faulty::start(Fault::DuplicateLength).await;
    let (_s, w) = weir_with_canary(f.addr, "5s").await;
    for _ in 0..2 {
        let (status, _) = fetch(&w.url("/x")).await.unwrap();
        assert_eq!(status, 502);
    }
    assert_eq!(f.connections.load(Ordering::Relaxed), 2);
    let text = metrics(&w).await;
    assert_eq!(metric(&text, r#"weir_upstream_errors_total{route="app",version="canary",kind="protocol"}"#), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_after_a_response_poison_nothing() {
    let f = Faulty::start(Fault::ExtraBytes).await;
    let (_s, w) = weir_with_canary(f.addr, "5s").await;
    for i in 0..5 {
        let (status, body) = fetch(&w.url(&format!("/x{i}"))).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok"[..]), "request {i}");
    }
    // The connection with garbage on it is never used for the next request.
    assert_eq!(f.connections.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_closed_by_the_upstream_as_it_is_reused_is_not_a_502() {
    let f = Faulty::start(Fault::CloseAfterEach).await;
    let (_s, w) = weir_with_canary(f.addr, "5s").await;
    for i in 0..50 {
        let (status, body) = fetch(&w.url(&format!("/x{i}"))).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"ok"[..]), "request {i}");
    }
    let v = route_view(w.admin, "app").await;
    assert_eq!(v["canary"]["window"]["errors"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stable_is_a_fast_502_and_a_refused_canary_falls_back() {
    let dead = refused_addr().await;
    let ok = Upstream::start("ok").await;
    // Stable refused: 502 at once.
    let yaml = config(dead.addr, ok.addr, "  - name: app\n    stable: {upstream: v1}\n");
    let w = Weir::start(&yaml).await;
    let t0 = Instant::now();
    let (status, _) = fetch(&w.url("/x")).await.unwrap();
    assert_eq!(status, 502);
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Canary refused: the client gets stable, the canary is charged.
    let yaml = config(
        ok.addr,
        dead.addr,
        "  - name: app\n    stable: {upstream: v1}\n    canary: {upstream: v2}\n    weight: 100\n",
    );
    let w2 = Weir::start(&yaml).await;
    let (status, body) = fetch(&w2.url("/x")).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    let text = metrics(&w2).await;
    assert_eq!(metric(&text, r#"weir_upstream_errors_total{route="app",version="canary",kind="connect"}"#), 1.0);
    assert_eq!(metric(&text, r#"weir_routing_decisions_total{route="app",version="stable",reason="fallback"}"#), 1.0);
}
