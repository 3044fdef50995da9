//! Lifecycle and overload, black-box (design §8): SIGTERM drains in-flight
//! requests after readiness fails, a second SIGINT exits at once, and the
//! connection and in-flight caps refuse fast while existing clients work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, eventually, get, spawn_weir_admin, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn write_config(dir: &std::path::Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("weir.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn ready_status(admin: std::net::SocketAddr) -> Option<u16> {
    let req = Request::get(format!("http://{admin}/ready")).body(Full::new(Bytes::new())).unwrap();
    match tokio::time::timeout(Duration::from_secs(2), client().request(req)).await {
        Ok(Ok(r)) => Some(r.status().as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_first_then_drains_every_in_flight_request_and_refuses_new_ones() {
    let up = Upstream::start("stable").await;
    up.delay_ms.store(1500, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        // 200 connects at once to an upstream in this busy test process.
        .replace("connect_timeout: 500ms", "connect_timeout: 5s")
        .replace("access_log: false", "access_log: false\nshutdown: {delay: 2s, grace: 20s}");
    let (mut child, addr, admin, _out, err) = spawn_weir_admin(&write_config(dir.path(), &yaml));
    assert_eq!(ready_status(admin).await, Some(200));

    // 200 slow requests in flight, each on its own connection.
    let http = client();
    let inflight: Vec<_> = (0..200)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("http://{addr}/slow/{i}")).body(Full::new(Bytes::new())).unwrap();
                let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req)).await.unwrap().unwrap();
                let status = resp.status().as_u16();
                let connection = resp.headers().get("connection").map(|v| v.to_str().unwrap().to_owned());
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                (status, connection, body)
            })
        })
        .collect();
    if !eventually(Duration::from_secs(15), || up.count() == 200).await {
        let mut statuses = std::collections::BTreeMap::new();
        for t in inflight {
            let r = t
                .await
                .map(|(s, _, b)| format!("{s} {}", String::from_utf8_lossy(&b).trim()))
                .unwrap_or_else(|e| format!("{e}"));
            *statuses.entry(r).or_insert(0) += 1;
        }
        panic!("only {} arrived: {statuses:?}", up.count());
    }

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    // Readiness fails first, while new connections are still accepted (the
    // 2 s `shutdown.delay` is for load balancers to notice).
    let deadline = Instant::now() + Duration::from_secs(5);
    while ready_status(admin).await != Some(503) {
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let late = TcpStream::connect(addr).await;
    assert!(late.is_ok(), "refused during shutdown.delay");
    // Then the listener closes: new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown.delay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(wait_for(&err, "shutdown: draining", Duration::from_secs(5)).is_some());
    // Every in-flight request completes, whole.
    let mut closes = 0;
    for t in inflight {
        let (status, connection, body) = t.await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"stable"[..]));
        closes += usize::from(connection.as_deref() == Some("close"));
    }
    // They were all answered after shutdown began: each tells its client
    // to close the connection (hyper then closes it after the response).
    assert_eq!(closes, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "weir did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once_without_waiting_for_the_drain() {
    let up = Upstream::start("stable").await;
    up.delay_ms.store(20_000, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("request_timeout: 5s", "request_timeout: 60s")
        .replace("access_log: false", "access_log: false\nshutdown: {grace: 60s}");
    let (mut child, addr, _admin, _out, err) = spawn_weir_admin(&write_config(dir.path(), &yaml));
    let pending = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/slow")).body(Full::new(Bytes::new())).unwrap();
        client().request(req).await.map(|r| r.status().as_u16())
    });
    assert!(eventually(Duration::from_secs(10), || up.count() == 1).await);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    assert!(wait_for(&err, "shutdown: draining", Duration::from_secs(10)).is_some());
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    // Exits long before the in-flight request (20 s upstream) could finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "second SIGINT did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130));
    // The in-flight request was cut, not answered.
    let cut = tokio::time::timeout(Duration::from_secs(10), pending).await.unwrap().unwrap();
    assert!(cut.is_err(), "{cut:?}");
}

/// One request on a raw keep-alive connection; returns the status line.
async fn request_on(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // The answer is small; read until the body ("stable") has arrived.
    while !buf.ends_with(b"stable") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).lines().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_beyond_the_cap_is_refused_fast_while_existing_clients_keep_working() {
    let up = Upstream::start("stable").await;
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("access_log: false", "access_log: false\nlimits: {max_connections: 10}");
    let w = Weir::start(&yaml).await;
    let mut existing = TcpStream::connect(w.addr).await.unwrap();
    assert_eq!(request_on(&mut existing).await, "HTTP/1.1 200 OK");
    let mut idle = Vec::new();
    for _ in 0..9 {
        idle.push(TcpStream::connect(w.addr).await.unwrap());
    }
    // The cap is full. Each further connection is closed at once.
    let started = Instant::now();
    for _ in 0..50 {
        let mut c = TcpStream::connect(w.addr).await.unwrap();
        let _ = c.write_all(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "an over-cap connection was left hanging");
        assert!(buf.is_empty(), "an over-cap connection was served: {}", String::from_utf8_lossy(&buf));
    }
    println!("50 over-cap connections refused in {:?}", started.elapsed());
    // The existing client is unaffected.
    for _ in 0..5 {
        assert_eq!(request_on(&mut existing).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(up.count(), 6, "no flood request may reach the upstream");
    // Freed slots are usable again.
    drop(idle);
    let addr = w.addr;
    let mut served = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served && Instant::now() < deadline {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
        served = buf.starts_with(b"HTTP/1.1 200");
    }
    assert!(served, "slots were not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_in_flight_cap_requests_get_503_at_once() {
    let up = Upstream::start("stable").await;
    // The admitted requests are held for far longer than the test runs.
    up.delay_ms.store(60_000, Ordering::Relaxed);
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("request_timeout: 5s", "request_timeout: 120s")
        .replace("access_log: false", "access_log: false\nlimits: {max_in_flight: 5}");
    let w = Weir::start(&yaml).await;
    let http = client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (http, url) = (http.clone(), w.url(&format!("/x/{i}")));
        tasks.push(tokio::spawn(async move {
            let (status, headers, _) = get(&http, &url, &[]).await;
            (status.as_u16(), headers.get("x-weir-error").map(|v| v.to_str().unwrap().to_owned()))
        }));
        if i == 4 {
            // Let the first five take their slots.
            assert!(eventually(Duration::from_secs(10), || up.count() == 5).await);
        }
    }
    // Fifteen answers come back while the five admitted requests are still
    // held upstream: shedding never waits for a slot.
    assert!(eventually(Duration::from_secs(10), || tasks.iter().filter(|t| t.is_finished()).count() == 15).await);
    let mut held = Vec::new();
    for t in tasks {
        if t.is_finished() {
            let (status, tag) = t.await.unwrap();
            assert_eq!((status, tag.as_deref()), (503, Some("overloaded")));
        } else {
            held.push(t);
        }
    }
    assert_eq!(held.len(), 5);
    assert_eq!(up.count(), 5, "a shed request reached the upstream");
    for t in held {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_h2_goaway_and_lets_the_stream_in_flight_finish() {
    let up = Upstream::start("stable").await;
    up.delay_ms.store(500, Ordering::Relaxed);
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("access_log: false", "access_log: false\nshutdown: {delay: 0s, grace: 10s}");
    let w = Weir::start(&yaml).await;
    let (mut tx, driver) = h2_client(w.addr).await;
    let in_flight = tx.send_request(req("/slow"));
    let in_flight = tokio::spawn(in_flight);
    assert!(eventually(Duration::from_secs(10), || up.count() == 1).await);

    w.handle.shutdown();
    // The stream already in flight completes.
    let resp = tokio::time::timeout(Duration::from_secs(10), in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"stable");
    // GOAWAY: the connection ends cleanly and takes no new stream.
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await.expect("connection not closed");
    assert!(ended.unwrap().is_ok(), "connection ended with an error instead of GOAWAY");
    assert!(tx.send_request(req("/after")).await.is_err());
    assert_eq!(up.count(), 1);
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 client with prior knowledge on weir's plain listener, and the
/// task driving its connection (it ends when weir closes the connection).
async fn h2_client(addr: std::net::SocketAddr) -> (H2Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    (tx, tokio::spawn(conn))
}

fn req(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://x{path}")).body(Full::new(Bytes::new())).unwrap()
}

fn idle_config(up: std::net::SocketAddr) -> String {
    config(up, up, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("access_log: false", "access_log: false\nlimits: {idle_timeout: 1s}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway_but_never_while_a_stream_is_open() {
    let up = Upstream::start("stable").await;
    // One answer takes 2.5 idle periods: its stream is open all that time.
    up.delay_ms.store(2500, Ordering::Relaxed);
    let w = Weir::start(&idle_config(up.addr)).await;
    let (mut tx, driver) = h2_client(w.addr).await;

    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req("/slow"))).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"stable");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // Had weir sent GOAWAY during that stream, the connection would end
    // with it and take no new stream.
    assert!(!driver.is_finished(), "the connection closed although a stream was open");
    up.delay_ms.store(0, Ordering::Relaxed);
    let resp = tx.send_request(req("/again")).await.expect("the busy connection was told to go away");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();

    // Now idle: GOAWAY after the idle timeout, and a clean end.
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), driver).await.expect("an idle connection stayed open");
    assert!(ended.unwrap().is_ok(), "the idle connection ended with an error instead of GOAWAY");
    assert!(idle_from.elapsed() >= Duration::from_millis(900), "closed before its idle timeout");
    assert!(tx.send_request(req("/after")).await.is_err());
    let paths: Vec<String> = up.requests().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/slow", "/again"]);
}

/// A peer that sends the preface and then ignores everything (never
/// acknowledges the settings or the GOAWAY's ping) is still closed: it
/// gets GOAWAY after one idle period and the socket after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_peer_that_goes_silent_after_the_preface_is_closed() {
    let up = Upstream::start("stable").await;
    let w = Weir::start(&idle_config(up.addr)).await;
    let mut s = TcpStream::connect(w.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the silent connection was never closed");
    // Walk the frames weir sent: 9-byte headers, type 7 is GOAWAY.
    let (mut at, mut types) = (0, Vec::new());
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        types.push(got[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&7), "no GOAWAY before the close: frame types {types:?}");
    assert_eq!(up.count(), 0);
}
