//! weir's upstream HTTP/1.1 client against a scripted raw upstream: every
//! way a response body can be framed (RFC 9112 §6.3) reaches the client
//! whole, and a connection is reused exactly when its framing allows it.
//! The upstream answers by path and counts the connections it accepted, so
//! reuse is asserted on what the upstream saw.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::{Upstream, Weir, client, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The canned answer for a request path; `true`: close after it.
fn answer(path: &str) -> (Vec<u8>, bool) {
    let a = |s: &str| s.as_bytes().to_vec();
    match path {
        "/chunked" => (
            a(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            ),
            false,
        ),
        "/until-close" => (a("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this until the end"), true),
        "/continue" => (a("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"), false),
        "/head" => (a("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), false),
        "/no-content" => (a("HTTP/1.1 204 No Content\r\n\r\n"), false),
        "/not-modified" => (a("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), false),
        "/close" => (a("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbye"), false),
        "/big-head" => {
            let mut v = a("HTTP/1.1 200 OK\r\n");
            for i in 0..2000 {
                v.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
            }
            v.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
            (v, false)
        }
        // Framed two ways: Transfer-Encoding wins (RFC 9112 §6.3) and the
        // client must not be told a length that truncates the body.
        "/cl-te" => (
            a("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            false,
        ),
        // One header of 100 KB: over the 64 KiB head limit in few headers.
        "/fat-head" => {
            let mut v = a("HTTP/1.1 200 OK\r\nx-fat: ");
            v.extend(std::iter::repeat_n(b'f', 100 * 1024));
            v.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
            (v, false)
        }
        // An endless-looking stream of interim responses before the answer.
        "/interim-flood" => {
            let mut v = a("HTTP/1.1 102 Processing\r\n\r\n").repeat(1000);
            v.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            (v, false)
        }
        // A trailer line ended by a bare LF, and a second response behind it
        // that a lenient reader would take as the answer to the next request.
        "/trailer-lf" => (
            a("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\n\
               HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled\r\n\r\n"),
            false,
        ),
        "/early" => (a("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"), true),
        _ => (a("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false),
    }
}

/// A raw upstream serving `answer` per request; reads request heads only
/// (and `Content-Length` bodies, except for `/early`, which answers first).
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

impl Scripted {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if path != "/early" {
                            while buf.len() < length {
                                let mut chunk = [0u8; 4096];
                                match s.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            buf.drain(..length);
                        }
                        let (bytes, close) = answer(&path);
                        if s.write_all(&bytes).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, connections }
    }
}

async fn weir_in_front(up: SocketAddr) -> (Upstream, Weir) {
    let unused = Upstream::start("unused").await;
    let yaml = config(up, unused.addr, "  - name: app\n    stable: {upstream: v1}\n");
    (unused, Weir::start(&yaml).await)
}

async fn call(w: &Weir, method: Method, path: &str, body: &'static [u8]) -> (u16, http::HeaderMap, Bytes) {
    let req = Request::builder().method(method).uri(w.url(path)).body(Full::new(Bytes::from_static(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req)).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_framing_arrives_whole_and_reuse_follows_the_framing() {
    let up = Scripted::start().await;
    let (_u, w) = weir_in_front(up.addr).await;
    // Reusable framings: all of these travel on one upstream connection.
    let (s, _, b) = call(&w, Method::GET, "/chunked", b"").await;
    assert_eq!((s, &b[..]), (200, &b"hello world"[..]));
    let (s, _, b) = call(&w, Method::GET, "/continue", b"").await;
    assert_eq!((s, &b[..]), (200, &b"after"[..]), "interim 100 skipped");
    let (s, h, b) = call(&w, Method::HEAD, "/head", b"").await;
    assert_eq!((s, b.len()), (200, 0));
    assert_eq!(h.get("content-length").map(|v| v.as_bytes()), Some(&b"5"[..]), "HEAD keeps the length");
    let (s, _, b) = call(&w, Method::GET, "/no-content", b"").await;
    assert_eq!((s, b.len()), (204, 0));
    let (s, _, b) = call(&w, Method::GET, "/not-modified", b"").await;
    assert_eq!((s, b.len()), (304, 0));
    let (s, _, b) = call(&w, Method::POST, "/post", b"a body of some length").await;
    assert_eq!((s, &b[..]), (200, &b"ok"[..]));
    assert_eq!(up.connections.load(Ordering::Relaxed), 1, "one connection carried all six");

    // Read until close: whole body, and the connection is not reused.
    let (s, _, b) = call(&w, Method::GET, "/until-close", b"").await;
    assert_eq!((s, &b[..]), (200, &b"all of this until the end"[..]));
    let (s, _, _) = call(&w, Method::GET, "/after", b"").await;
    assert_eq!(s, 200);
    assert_eq!(up.connections.load(Ordering::Relaxed), 2);

    // `Connection: close` from the upstream: not reused either.
    let (s, _, b) = call(&w, Method::GET, "/close", b"").await;
    assert_eq!((s, &b[..]), (200, &b"bye"[..]));
    let (s, _, _) = call(&w, Method::GET, "/after", b"").await;
    assert_eq!(s, 200);
    assert_eq!(up.connections.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_head_is_a_502_and_an_early_answer_is_heard() {
    let up = Scripted::start().await;
    let (_u, w) = weir_in_front(up.addr).await;
    let (s, h, _) = call(&w, Method::GET, "/big-head", b"").await;
    assert_eq!(s, 502);
    assert_eq!(h.get("x-weir-error").map(|v| v.as_bytes()), Some(&b"upstream_protocol"[..]));
    // The upstream answers 413 before reading a 2 MiB body and closes:
    // the client gets the 413, not a 502.
    static BIG: [u8; 2 * 1024 * 1024] = [b'x'; 2 * 1024 * 1024];
    let (s, _, b) = call(&w, Method::POST, "/early", &BIG).await;
    assert_eq!((s, &b[..]), (413, &b"nope"[..]));
    // And weir carries on.
    let (s, _, b) = call(&w, Method::GET, "/after", b"").await;
    assert_eq!((s, &b[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_framed_two_ways_reaches_the_client_whole_and_a_fat_head_is_refused() {
    let up = Scripted::start().await;
    let (_u, w) = weir_in_front(up.addr).await;
    let (s, h, b) = call(&w, Method::GET, "/cl-te", b"").await;
    assert_eq!((s, &b[..]), (200, &b"hello"[..]), "the client read the whole chunked body");
    assert!(h.get("content-length").is_none_or(|v| v == "5"), "no stale length forwarded: {h:?}");
    // Not trusted again: the next request opens a new connection.
    let before = up.connections.load(Ordering::Relaxed);
    let (s, _, _) = call(&w, Method::GET, "/after", b"").await;
    assert_eq!(s, 200);
    assert_eq!(up.connections.load(Ordering::Relaxed), before + 1);
    // A 100 KB head whatever its header count: 502, counted as the upstream's fault.
    let (s, h, _) = call(&w, Method::GET, "/fat-head", b"").await;
    assert_eq!(s, 502);
    assert_eq!(h.get("x-weir-error").map(|v| v.as_bytes()), Some(&b"upstream_protocol"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_floods_and_bare_lf_in_trailers_are_refused() {
    let up = Scripted::start().await;
    let (_u, w) = weir_in_front(up.addr).await;
    let (s, h, _) = call(&w, Method::GET, "/interim-flood", b"").await;
    assert_eq!(s, 502, "1,000 interim responses are not skipped one by one");
    assert_eq!(h.get("x-weir-error").map(|v| v.as_bytes()), Some(&b"upstream_protocol"[..]));

    // The head is already forwarded when the bad trailer arrives: the client
    // sees its body cut (an error, never a clean end), and the bytes behind
    // the trailer never answer anyone.
    let req = Request::get(w.url("/trailer-lf")).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect()).await.unwrap();
    assert!(body.is_err(), "a body cut by bad framing must not look complete");
    let before = up.connections.load(Ordering::Relaxed);
    for _ in 0..3 {
        let (s, _, b) = call(&w, Method::GET, "/after", b"").await;
        assert_eq!((s, &b[..]), (200, &b"ok"[..]), "the smuggled response answered nobody");
    }
    assert!(up.connections.load(Ordering::Relaxed) > before, "the broken connection was not reused");
}

/// Read one response (head and a Content-Length body) from a raw socket.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            if buf.len() >= end + length {
                return String::from_utf8_lossy(&buf[..end + length]).to_string();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "weir closed before a whole response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_early_answer_the_rest_of_the_body_is_read_not_reset() {
    // The upstream answers 413 to the head alone and closes. The client
    // reads that answer first and only then sends its 2 MiB body: weir must
    // read and drop it (closing on unread bytes would reset the client,
    // which can lose the answer), and the connection then serves the next
    // request.
    let up = Scripted::start().await;
    let (_u, w) = weir_in_front(up.addr).await;
    let mut s = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let len = 2 * 1024 * 1024;
    let head = format!("POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 1024]).await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.ends_with("nope"), "{resp}");
    let rest = vec![b'x'; len - 1024];
    tokio::time::timeout(Duration::from_secs(20), s.write_all(&rest)).await.unwrap().unwrap();
    s.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let resp = read_response(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok"), "{resp}");
}

/// One HTTP/1.1 upstream connection that reads a chunked request to its
/// last chunk and trailer section, keeps the raw bytes, and answers with a
/// chunked body whose trailer section mixes fields a trailer may carry with
/// ones it may not.
async fn trailer_upstream() -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        // The head, then a chunked body whose last chunk is followed by a
        // trailer section ending in an empty line.
        let done = |b: &[u8]| {
            let Some(head_end) = b.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
            let body = &b[head_end + 4..];
            body.windows(5).position(|w| w == b"\r\n0\r\n").is_some_and(|i| body[i + 5..].ends_with(b"\r\n\r\n"))
                || body.starts_with(b"0\r\n") && body.ends_with(b"\r\n\r\n")
        };
        while !done(&buf) {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = tx.send(buf);
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
                      5\r\nhello\r\n0\r\nx-checksum: abc\r\ngrpc-status: 0\r\ncontent-length: 99\r\n\
                      x-weir-route: forged\r\nx-checksum: def\r\n\r\n";
        let _ = s.write_all(answer.as_bytes()).await;
        let mut rest = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await;
    });
    (addr, rx)
}

/// Trailers cross the protocols both ways: an HTTP/2 client's request
/// trailers reach an HTTP/1.1 upstream in the chunked body's trailer
/// section, and the upstream's chunked trailers reach the HTTP/2 client as
/// a trailing HEADERS frame. Fields a trailer may not carry (framing,
/// weir's own) are dropped in both directions; `TE: trailers` goes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_cross_between_http2_clients_and_http1_upstreams() {
    let (up, seen) = trailer_upstream().await;
    let (_u, w) = weir_in_front(up).await;
    let stream = tokio::net::TcpStream::connect(w.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut sent = http::HeaderMap::new();
    sent.insert("x-client-sum", "42".parse().unwrap());
    sent.insert("x-weir-version", "forged".parse().unwrap());
    sent.insert("content-length", "7".parse().unwrap());
    // A stream of frames: no length known in advance, so weir frames the
    // upload chunked, the only HTTP/1.1 framing with room for trailers.
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
        vec![Ok(http_body::Frame::data(Bytes::from_static(b"payload"))), Ok(http_body::Frame::trailers(sent))];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::post("http://x/up").header("te", "trailers").body(body).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), tx.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("the upstream's trailers reach the client");
    assert_eq!(collected.to_bytes(), &b"hello"[..]);
    let got: Vec<_> = trailers.get_all("x-checksum").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(got, ["abc", "def"]);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert!(trailers.get("content-length").is_none() && trailers.get("x-weir-route").is_none(), "{trailers:?}");

    let raw = tokio::time::timeout(Duration::from_secs(10), seen).await.unwrap().unwrap();
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.lines().any(|l| l == "te: trailers"), "{head}");
    assert!(head.lines().any(|l| l == "transfer-encoding: chunked"), "{head}");
    assert!(body.contains("payload"), "{body}");
    let trailer_section = body.rsplit_once("\r\n0\r\n").map(|(_, t)| t).unwrap_or(body);
    assert_eq!(trailer_section, "x-client-sum: 42\r\n\r\n", "only the allowed trailer goes up: {body:?}");
}
