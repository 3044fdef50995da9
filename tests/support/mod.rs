//! Shared helpers for black-box tests: recording upstreams, a weir started
//! in-process on `127.0.0.1:0`, and small HTTP clients. Every wait is bounded.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What an upstream saw for one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP/1.1 upstream that records every request and answers
/// `200 <name>` with `x-upstream: <name>`.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Status to answer with (default 200).
    pub status: Arc<AtomicU16>,
    /// Extra delay before answering, ms.
    pub delay_ms: Arc<AtomicU64>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicU64>,
    /// Answer 500 for this many of every 100 requests (by arrival order).
    pub errors_per_100: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let errors_per_100 = Arc::new(AtomicU64::new(0));
        let (s2, st2, d2, c2) = (seen.clone(), status.clone(), delay_ms.clone(), connections.clone());
        let e2 = errors_per_100.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                c2.fetch_add(1, Ordering::Relaxed);
                let (seen, status, delay, errs) = (s2.clone(), st2.clone(), d2.clone(), e2.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, status, delay, errs) = (seen.clone(), status.clone(), delay.clone(), errs.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let nth = seen.lock().unwrap().len() as u64;
                            seen.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let d = delay.load(Ordering::Relaxed);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from(name)));
                            let code = if nth % 100 < errs.load(Ordering::Relaxed) {
                                500
                            } else {
                                status.load(Ordering::Relaxed)
                            };
                            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                            resp.headers_mut().insert("x-upstream", name.parse().unwrap());
                            // Hop-by-hop headers weir must strip on the way back.
                            resp.headers_mut().insert("keep-alive", "timeout=60".parse().unwrap());
                            resp.headers_mut().insert("proxy-connection", "keep-alive".parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { name, addr, seen, status, delay_ms, connections, errors_per_100, task }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Stop listening: further connects are refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A loopback port where connects are refused. The socket stays bound but
/// never listens, so the kernel answers connects with RST and no other test
/// running in parallel can take the port while this value lives.
pub struct Dead {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub async fn refused_addr() -> Dead {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    Dead { addr, _socket: socket }
}

/// weir running in this test process.
pub struct Weir {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub handle: weir::app::Handle,
    pub dir: tempfile::TempDir,
}

/// Config text with `listen`/`admin` on port 0 and the given upstreams/routes.
pub fn config(stable: SocketAddr, canary: SocketAddr, routes: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  v1: {{endpoints: ["{stable}"], connect_timeout: 500ms, request_timeout: 5s}}
  v2: {{endpoints: ["{canary}"], connect_timeout: 500ms, request_timeout: 5s}}
routes:
{routes}"#
    )
}

impl Weir {
    pub async fn start(yaml: &str) -> Self {
        // weir's logs go to the test's captured output (shown on failure).
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("weir=debug").try_init();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.yaml");
        std::fs::write(&path, yaml).unwrap();
        let snapshot = match weir::config::load(&path) {
            Ok(s) => s,
            Err(e) => panic!("test config invalid: {:?}", e.problems()),
        };
        let handle = weir::app::start(path, snapshot).await.unwrap();
        Self { addr: handle.listen[0], admin: handle.admin, handle, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("weir.yaml")
    }

    /// Write a new config and apply it through the reload path at once.
    pub fn install(&self, yaml: &str) {
        std::fs::write(self.config_path(), yaml).unwrap();
        if let Err(e) = self.handle.reloader.reload("test", false) {
            panic!("reload refused: {:?}", e.problems());
        }
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET with headers; returns status, response headers and body text.
pub async fn get(c: &HttpClient, url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(b.body(Full::new(Bytes::new())).unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

/// Send raw bytes on a fresh connection and read until the server closes or
/// `wait` passes. Returns what was read.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Poll `f` until it is true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
