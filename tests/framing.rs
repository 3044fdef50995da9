//! HTTP/1 framing and request smuggling (hardening.md A, B, D), over raw
//! sockets: each case asserts the status on the wire, whether weir closed
//! the connection, and what the recording upstream received (nothing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::{Upstream, Weir, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back for one raw request.
#[derive(Debug)]
struct Reply {
    status: Option<u16>,
    /// The server closed the connection after its answer.
    closed: bool,
    text: String,
}

/// Send `bytes`, then wait for an answer and for the connection to close
/// (bounded). A connection still open after the answer is `closed: false`.
async fn send(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut closed = false;
    loop {
        // Enough for weir to answer and close; a kept-alive connection
        // simply times out here.
        match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
    Reply { status, closed, text }
}

async fn setup() -> (Upstream, Weir) {
    let up = Upstream::start("stable").await;
    let w = Weir::start(&config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")).await;
    (up, w)
}

/// Cases that must be refused with 400, closed, and never reach the upstream.
const REFUSED: &[(&str, &str)] = &[
    ("two different CL", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("CL list 3, 3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ("CL +3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"),
    ("CL 0x3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc"),
    ("CL negative", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
    ("CL overflow", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    ("space before colon", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc"),
    ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"),
    ("NUL in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
    ("TE chunked, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE chunked then identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    (
        "two TE headers",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
    (
        "overflowing chunk size",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    ),
    ("no Host in HTTP/1.1", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_closed_and_never_forwarded() {
    let (up, w) = setup().await;
    let mut failures = Vec::new();
    for (name, req) in REFUSED {
        let r = send(w.addr, req.as_bytes()).await;
        // A chunk-size error is found while the body streams: the head may
        // already have gone upstream, so the rule there is "no complete
        // request upstream", checked below with the count of bodies.
        let body_error = name.contains("chunk size");
        if !(r.status == Some(400) || (body_error && r.status.is_some_and(|s| s >= 400))) || !r.closed {
            failures.push(format!("{name}: status {:?}, closed {}\n{}", r.status, r.closed, r.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    // Nothing reached the upstream complete: no request at all, or (for a
    // broken chunked body) never a finished one.
    let seen = up.requests();
    assert!(
        seen.is_empty(),
        "the upstream saw: {:?}",
        seen.iter().map(|s| (&s.method, &s.uri, &s.body)).collect::<Vec<_>>()
    );
}

/// CL and TE together (in either order), with a smuggled request behind:
/// hyper's parser takes `chunked`, drops `Content-Length` and closes the
/// connection after the answer (hardening.md A allows exactly this or a
/// 400). Asserted: the upstream never sees both headers, never sees the
/// smuggled request, and the client connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_is_reframed_as_chunked_closed_and_a_smuggled_request_never_reaches_the_upstream() {
    let (up, w) = setup().await;
    let smuggle = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cl_te = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}",
        5 + smuggle.len()
    );
    // A CL-reading hop would stop after "23\r\n" and parse the chunk as a request.
    let te_cl = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggle}\r\n0\r\n\r\n",
        smuggle.len()
    );
    for req in [cl_te, te_cl] {
        let r = send(w.addr, req.as_bytes()).await;
        assert!(matches!(r.status, Some(200 | 400)), "{}", r.text);
        assert!(r.closed, "connection kept open after CL+TE");
        assert_eq!(r.text.matches("HTTP/1.1").count(), 1, "a second response: {}", r.text);
    }
    let seen = up.requests();
    assert!(seen.iter().all(|s| !s.uri.contains("smuggled")), "smuggled request forwarded");
    assert!(seen.len() <= 2);
    for s in &seen {
        assert!(!s.headers.contains_key("content-length"), "upstream saw CL with a chunked body: {:?}", s.headers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_framing_passes_and_keep_alive_continues() {
    let (up, w) = setup().await;
    // Chunked body, then a second request on the same connection.
    let req = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
               GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = send(w.addr, req.as_bytes()).await;
    assert_eq!(r.text.matches("HTTP/1.1 200").count(), 2, "{}", r.text);
    assert!(!r.closed, "a valid keep-alive connection was closed");
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(&seen[0].body[..], b"abc");
    // Re-framed for the upstream: never both CL and TE.
    assert!(!(seen[0].headers.contains_key("content-length") && seen[0].headers.contains_key("transfer-encoding")));
    assert_eq!(seen[1].uri, "/b");
}

/// Requests with nothing to send after the head take weir's head-only
/// exchange: the upstream gets each head with `Content-Length: 0` (added for
/// a POST that had no framing) and no body bytes, in order, and the client's
/// connection stays open for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_requests_go_upstream_as_a_head_alone_and_keep_alive_continues() {
    let (up, w) = setup().await;
    let req = "POST /empty HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
               POST /unframed HTTP/1.1\r\nHost: x\r\n\r\n\
               GET /after HTTP/1.1\r\nHost: x\r\n\r\n";
    let r = send(w.addr, req.as_bytes()).await;
    assert_eq!(r.text.matches("HTTP/1.1 200").count(), 3, "{}", r.text);
    assert!(!r.closed, "a valid keep-alive connection was closed");
    let seen = up.requests();
    let got: Vec<(&str, &str)> = seen.iter().map(|s| (s.method.as_str(), s.uri.as_str())).collect();
    assert_eq!(got, [("POST", "/empty"), ("POST", "/unframed"), ("GET", "/after")]);
    for s in &seen[..2] {
        assert!(s.body.is_empty(), "{} carried a body", s.uri);
        assert_eq!(s.headers.get("content-length").map(|v| v.as_bytes()), Some(&b"0"[..]), "{}", s.uri);
        assert!(!s.headers.contains_key("transfer-encoding"), "{}", s.uri);
    }
    assert!(!seen[2].headers.contains_key("content-length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_414_and_431_without_the_upstream() {
    let (up, w) = setup().await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let r = send(w.addr, long_uri.as_bytes()).await;
    assert_eq!(r.status, Some(414), "{}", r.text);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = send(w.addr, format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert_eq!(r.status, Some(431), "{}", r.text);
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(70 * 1024));
    let r = send(w.addr, big.as_bytes()).await;
    assert_eq!(r.status, Some(431), "{}", r.text);
    assert_eq!(up.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_bypass_a_route_match() {
    let up = Upstream::start("stable").await;
    let admin_up = Upstream::start("internal").await;
    // Only /public/ is routed; anything else must 404, whatever the encoding.
    let routes = "  - name: public\n    match: {path_prefix: /public/}\n    stable: {upstream: v1}\n";
    let w = Weir::start(&config(up.addr, admin_up.addr, routes)).await;
    for path in ["/public/../internal", "/public/..%2f..%2finternal", "//public/x", "/PUBLIC/x", "/public%2fx"] {
        let r = send(w.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
        let routed = r.status == Some(200);
        // Forwarded only if the raw path really starts with /public/, and
        // then byte for byte (weir does not normalise, so the upstream sees
        // exactly what matched).
        assert_eq!(routed, path.starts_with("/public/"), "{path}: {}", r.text);
        if routed {
            assert_eq!(up.requests().last().unwrap().uri, path);
        }
    }
    assert_eq!(admin_up.count(), 0);
}
