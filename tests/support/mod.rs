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
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub mod dns;
pub mod grpc;
mod ws_upstream;
#[allow(unused_imports)]
pub use ws_upstream::WsUpstream;

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
    /// When above 0: answer 500 to every Nth request (evenly spread).
    pub error_every: Arc<AtomicU64>,
    /// When above 0: each answer waits a lognormal time with this median
    /// (ms) and σ `heavy_tail_sigma_pct` / 100 (0.8 unless set), capped at
    /// 1 s — a realistic heavy tail.
    pub heavy_tail_ms: Arc<AtomicU64>,
    pub heavy_tail_sigma_pct: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Listening on `at` (a pod on 127.0.0.2:P, 127.0.0.3:P, …).
    pub async fn start_at(name: &'static str, at: SocketAddr) -> Self {
        let listener = TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let errors_per_100 = Arc::new(AtomicU64::new(0));
        let heavy_tail_ms = Arc::new(AtomicU64::new(0));
        let heavy_tail_sigma_pct = Arc::new(AtomicU64::new(80));
        let sigma2 = heavy_tail_sigma_pct.clone();
        let error_every = Arc::new(AtomicU64::new(0));
        let ev2 = error_every.clone();
        let (s2, st2, d2, c2) = (seen.clone(), status.clone(), delay_ms.clone(), connections.clone());
        let (e2, h2) = (errors_per_100.clone(), heavy_tail_ms.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                c2.fetch_add(1, Ordering::Relaxed);
                let (seen, status, delay, errs) = (s2.clone(), st2.clone(), d2.clone(), e2.clone());
                let heavy = h2.clone();
                let every = ev2.clone();
                let sigma = sigma2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (seen, status, delay, errs) = (seen.clone(), status.clone(), delay.clone(), errs.clone());
                        let heavy = heavy.clone();
                        let every = every.load(Ordering::Relaxed);
                        let sigma = sigma.load(Ordering::Relaxed) as f64 / 100.0;
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            // A request can ask for its own status (a fault of
                            // that client's, the same on every version).
                            let asked: Option<u16> = parts
                                .headers
                                .get("x-answer-status")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok());
                            // Numbered and recorded under one lock: two requests
                            // at once must not both be the nth.
                            let nth = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Seen {
                                    method: parts.method.to_string(),
                                    uri: parts.uri.to_string(),
                                    headers: parts.headers,
                                    body,
                                });
                                seen.len() as u64 - 1
                            };
                            let d = delay.load(Ordering::Relaxed);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            let median = heavy.load(Ordering::Relaxed);
                            if median > 0 {
                                let (u1, u2): (f64, f64) = (rand::random::<f64>().max(1e-12), rand::random());
                                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                                let ms = (median as f64 * (sigma * z).exp()).min(1000.0);
                                tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::from(name)));
                            let code = if let Some(c) = asked {
                                c
                            } else if nth % 100 < errs.load(Ordering::Relaxed)
                                || (every > 0 && nth % every == every - 1)
                            {
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
        Self {
            name,
            addr,
            seen,
            status,
            delay_ms,
            connections,
            errors_per_100,
            error_every,
            heavy_tail_ms,
            heavy_tail_sigma_pct,
            task,
        }
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

/// POST to the admin listener; returns status and body (JSON when it is JSON).
pub async fn admin_post(admin: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let req = Request::post(format!("http://{admin}{path}")).body(Full::new(Bytes::new())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("admin call timed out")
        .expect("admin call failed");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    (status, v)
}

/// `GET /routes/{name}` as JSON.
pub async fn route_view(admin: SocketAddr, name: &str) -> serde_json::Value {
    let (status, _, body) = get(&client(), &format!("http://{admin}/routes/{name}"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll `/routes/{name}` until `f` holds or `limit` passes; returns the last view.
pub async fn wait_route(
    admin: SocketAddr,
    name: &str,
    limit: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> (bool, serde_json::Value) {
    let deadline = Instant::now() + limit;
    loop {
        let v = route_view(admin, name).await;
        if f(&v) {
            return (true, v);
        }
        if Instant::now() >= deadline {
            return (false, v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `GET /upstreams` until the endpoint at `address` has `state` and
/// active `check` (e.g. "ejected", "failing"), or `limit` passes; the last
/// view if it never did.
pub async fn wait_endpoint(
    admin: SocketAddr,
    address: &str,
    (state, check): (&str, &str),
    limit: Duration,
) -> Result<(), serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let (status, _, body) = get(&client(), &format!("http://{admin}/upstreams"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found = v["upstreams"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|u| u["endpoints"].as_array().into_iter().flatten())
            .any(|e| e["address"] == address && e["state"] == state && e["check"] == check);
        if found {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Background players: `tasks` loops sending GET with a random
/// `x-player-id`, until stopped, 60 s, or 50,000 requests each.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    pub fn start(url: String, tasks: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let http = client();
        let tasks = (0..tasks)
            .map(|t| {
                let (stop, http, url) = (stop.clone(), http.clone(), url.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut sent = 0u64;
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 50_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let player = format!("p{}", x % 100_000);
                        let req =
                            Request::get(&url).header("x-player-id", player).body(Full::new(Bytes::new())).unwrap();
                        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), http.request(req)).await {
                            let _ = resp.into_body().collect().await;
                        }
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stop and return how many requests were sent.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        for t in self.tasks {
            n += t.await.unwrap_or(0);
        }
        n
    }
}

/// The journal in `dir`, one JSON value per line (every line must parse).
pub fn journal(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal line not JSON ({e}): {l}")))
        .collect()
}

/// The `weir` binary, run on `config`; waits for its "weir ready" line.
pub type Lines = std::sync::mpsc::Receiver<String>;

/// The lines a child writes to `pipe`, as they come (a reader thread).
#[allow(dead_code)]
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> Lines {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Returns the child, its proxy address, stdout lines and stderr lines.
pub fn spawn_weir(config: &std::path::Path) -> (std::process::Child, std::net::SocketAddr, Lines, Lines) {
    let (child, addr, _, out, err) = spawn_weir_admin(config);
    (child, addr, out, err)
}

/// Like `spawn_weir`, also returning the admin address.
pub fn spawn_weir_admin(
    config: &std::path::Path,
) -> (std::process::Child, std::net::SocketAddr, std::net::SocketAddr, Lines, Lines) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-c"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("weir did not get ready");
        if line.contains("weir ready") {
            break line;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let listen = v["fields"]["listen"].as_str().unwrap();
    let addr = listen.trim_matches(|c| c == '[' || c == ']').split(',').next().unwrap().trim().parse().unwrap();
    let lrx = lines_of(child.stdout.take().unwrap());
    let admin = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
    (child, addr, admin, lrx, rx)
}

pub fn wait_for(lines: &Lines, what: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(l) = lines.recv_timeout(Duration::from_millis(100))
            && l.contains(what)
        {
            return Some(l);
        }
    }
    None
}

/// A WebSocket client stream as tokio-tungstenite opens it.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket through weir at `addr` as `player` (if any); returns the
/// stream and the upstream that answered (its `x-upstream` header).
pub async fn ws_open(addr: SocketAddr, player: Option<&str>) -> (Ws, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/game").into_client_request().unwrap();
    if let Some(p) = player {
        req.headers_mut().insert("x-player-id", p.parse().unwrap());
    }
    let (ws, resp) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    let who = resp.headers().get("x-upstream").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (ws, who)
}

/// The admin API's /metrics text.
pub async fn metrics(admin: SocketAddr) -> String {
    get(&client(), &format!("http://{admin}/metrics"), &[]).await.2
}

/// Poll /metrics (bounded) until `series` reads `want`; returns the last text.
pub async fn wait_metric(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = metrics(admin).await;
        if metric(&t, series) == Some(want) || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Read one request head from a raw upstream's socket: the head's text
/// (through its blank line), removed from `buf`, which keeps whatever was
/// read past it; None when the peer closed first.
pub async fn read_request_head(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    Some(head)
}
