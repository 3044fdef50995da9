//! A hostile HTTP/2 upstream (tests/h2_hostile_upstream.py: Python `h2`,
//! raw frames where it refuses to misbehave): resets before and during an
//! answer, GOAWAY before and in the middle of a stream, malformed and
//! oversized response heads, a PING flood. Each gets a precise answer from
//! weir (502 before a head; after one, never a response that looks whole),
//! weir keeps serving on a new connection, and a well-behaved request after
//! each still succeeds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Weir, client};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2_hostile_upstream.py");

struct Hostile {
    addr: std::net::SocketAddr,
    child: Child,
}

impl Hostile {
    fn start() -> Self {
        let mut child =
            Command::new("python3").arg(SERVER).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("no port: {line:?}"));
        Self { addr: ([127, 0, 0, 1], port).into(), child }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and the body as read (Err: the body was cut).
async fn get(w: &Weir, path: &str) -> (u16, Result<Bytes, String>) {
    try_get(w, path).await.unwrap_or_else(|e| panic!("{path}: no answer from weir: {e}"))
}

/// Err: the connection ended before a response head.
async fn try_get(w: &Weir, path: &str) -> Result<(u16, Result<Bytes, String>), String> {
    let req = Request::get(w.url(path)).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .unwrap()
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect()).await.unwrap();
    Ok((status, body.map(|b| b.to_bytes()).map_err(|e| e.to_string())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_http2_upstream_gets_precise_answers_and_weir_keeps_serving() {
    let up = Hostile::start();
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\"], protocol: h2c, request_timeout: 5s}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        up.addr
    );
    let w = Weir::start(&yaml).await;
    let (s, b) = get(&w, "/ok").await;
    assert_eq!((s, b.as_deref().ok()), (200, Some(&b"ok"[..])));
    for (path, want) in [
        ("/reset-head", 502),
        ("/refused", 502),
        ("/goaway", 502),
        ("/bad-head", 502),
        ("/no-status", 502),
        ("/huge-head", 502),
    ] {
        let (s, _) = get(&w, path).await;
        assert_eq!(s, want, "{path}");
        let (s, b) = get(&w, "/ok").await;
        assert_eq!((s, b.as_deref().ok()), (200, Some(&b"ok"[..])), "a good request after {path}");
    }
    // A head came, then the stream or the connection broke: the client
    // never gets a response that looks whole. (Whether it sees the 200 head
    // and then a cut body, or the connection closed before the head, depends
    // on whether the break came before hyper flushed the head.)
    for path in ["/reset-body", "/goaway-mid"] {
        match try_get(&w, path).await {
            Ok((s, b)) => {
                assert_eq!(s, 200, "{path}");
                assert!(b.is_err(), "{path}: a cut body must not look whole: {b:?}");
            }
            Err(e) => assert!(e.contains("IncompleteMessage"), "{path}: {e}"),
        }
        let (s, b) = get(&w, "/ok").await;
        assert_eq!((s, b.as_deref().ok()), (200, Some(&b"ok"[..])), "a good request after {path}");
    }
    // 10,000 PINGs before an answer: hyper's client answers them and the
    // answer behind them arrives whole.
    let (s, b) = get(&w, "/ping-flood").await;
    assert_eq!((s, b.as_deref().ok()), (200, Some(&b"ok"[..])), "/ping-flood");
    let (s, b) = get(&w, "/ok").await;
    assert_eq!((s, b.as_deref().ok()), (200, Some(&b"ok"[..])), "a good request after the ping flood");
}

/// Active health over HTTP/2 with a plain `path` check (h2c): the check is
/// an HTTP/2 GET; a pod whose `/healthz` answers 503 is taken out (every
/// request answered by the other, as its `/port` says) and comes back
/// once it answers 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_path_check_takes_a_failing_pod_out_and_back() {
    use std::io::Write;
    let (well, mut sick) = (Hostile::start(), Hostile::start());
    let w = Weir::start(&format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\", \"{}\"], protocol: h2c, retry: {{attempts: 0}},\n\
         \x20   health: {{passive: {{consecutive_failures: 0}},\n\
         \x20     active: {{path: /healthz, interval: 300ms, timeout: 300ms, healthy: 2, unhealthy: 2}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        well.addr, sick.addr
    ))
    .await;
    let limit = Duration::from_secs(15);
    let (a, b) = (well.addr.to_string(), sick.addr.to_string());
    for e in [&a, &b] {
        let r = support::wait_endpoint(w.admin, e, ("healthy", "passing"), limit).await;
        assert!(r.is_ok(), "the HTTP/2 check never passed on {e}: {r:?}");
    }
    writeln!(sick.child.stdin.as_mut().unwrap(), "sick").unwrap();
    let r = support::wait_endpoint(w.admin, &b, ("ejected", "failing"), limit).await;
    assert!(r.is_ok(), "a 503 check never took the pod out: {r:?}");
    for _ in 0..10 {
        let (status, body) = get(&w, "/port").await;
        assert_eq!((status, body.unwrap()), (200, Bytes::from(well.addr.port().to_string())));
    }
    writeln!(sick.child.stdin.as_mut().unwrap(), "well").unwrap();
    let r = support::wait_endpoint(w.admin, &b, ("healthy", "passing"), limit).await;
    assert!(r.is_ok(), "a passing check never brought it back: {r:?}");
}

/// A request body of unknown length (no Content-Length), as a gRPC client
/// sends it over HTTP/2.
struct Undeclared(Option<Bytes>);

impl http_body::Body for Undeclared {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
    // The message and END_STREAM in one DATA frame, as a unary call ends.
    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// A stream the HTTP/2 upstream refused (REFUSED_STREAM) was never
/// processed: even a POST with a body is sent again, to another pod of the
/// same version, with the same bytes (kept as it streamed, declared or not),
/// and the client never sees the refusal. With every pod refusing, the 502
/// stands. The pods here refuse once the request has ended (its body whole
/// in weir's copy); a refusal that overtakes a body still on its way is not
/// retried (hyper drops the rest of it with the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_to_another_pod_even_a_post_with_its_body() {
    use std::io::Write;
    let (mut refusing, mut serving) = (Hostile::start(), Hostile::start());
    writeln!(refusing.child.stdin.as_mut().unwrap(), "refuse").unwrap();
    let w = Weir::start(&format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\", \"{}\"], protocol: h2c, balance: round_robin,\n\
         \x20   retry: {{attempts: 1, on: [connect_failure], budget: 100%}}, health: {{passive: {{consecutive_failures: 0}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        refusing.addr, serving.addr
    ))
    .await;
    // HTTP/2 to weir, as gRPC clients speak: bodies without Content-Length.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Undeclared>();
    let h1 = client();
    for i in 0..8u8 {
        let body: Vec<u8> = (0..3_000u32).map(|n| (n as u8).wrapping_add(i)).collect();
        let call = async {
            if i % 2 == 0 {
                // HTTP/1.1 with Content-Length.
                let req = Request::post(w.url("/echo")).body(Full::new(Bytes::from(body.clone()))).unwrap();
                h1.request(req).await.map(|r| r.map(|b| b.boxed()))
            } else {
                let req = Request::post(w.url("/echo")).body(Undeclared(Some(Bytes::from(body.clone())))).unwrap();
                h2.request(req).await.map(|r| r.map(|b| b.boxed()))
            }
        };
        let resp = tokio::time::timeout(Duration::from_secs(20), call).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200, "POST {i}: the refusal was retried");
        assert_eq!(resp.headers()["x-port"], serving.addr.port().to_string().as_str(), "POST {i}");
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &body[..], "POST {i}: the other pod got the same bytes");
    }
    // Both pods refusing: nothing processed the POST, and nothing else can.
    writeln!(serving.child.stdin.as_mut().unwrap(), "refuse").unwrap();
    let mut saw_502 = false;
    for _ in 0..20 {
        let req = Request::post(w.url("/echo")).body(Full::new(Bytes::from_static(b"bet"))).unwrap();
        if h1.request(req).await.unwrap().status() == 502 {
            saw_502 = true;
            break;
        }
    }
    assert!(saw_502, "with every pod refusing, the refusal reaches the client as 502");
}
