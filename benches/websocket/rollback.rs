//! WS_MODE=rollback: a rollback closing the canary's share of N sockets
//! (`WS_CANARY_WEIGHT`, default 50 %) at `close_rate`, and a reload, under
//! HTTP load on another route. See benches/websocket.rs.

use super::{Started, rollback_config, start_weir};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LOAD: Duration = Duration::from_secs(40);
const ROLLBACK_AT: Duration = Duration::from_secs(5);
const RELOAD_AT: Duration = Duration::from_secs(10);
const CLIENTS: usize = 50;

/// A keep-alive HTTP/1.1 upstream answering every request `200 ok`.
pub async fn http_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

async fn open(addr: SocketAddr, player: usize) -> (tokio_tungstenite::WebSocketStream<TcpStream>, bool) {
    let s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("x-player-id", format!("player-{player}").parse().unwrap());
    let (ws, resp) = tokio_tungstenite::client_async(req, s).await.unwrap();
    let canary = resp.headers().get("x-weir-version").is_some_and(|v| v == "canary");
    (ws, canary)
}

/// One HTTP client: a closed loop on one keep-alive connection until
/// `until`; returns (ms since `t0` at completion, latency µs) per request.
async fn http_client(addr: SocketAddr, t0: Instant, until: Instant) -> Vec<(u32, u32)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let mut out = Vec::with_capacity(100_000);
    let mut buf = [0u8; 4096];
    let req = format!("GET /api HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    while Instant::now() < until {
        let start = Instant::now();
        s.write_all(req.as_bytes()).await.unwrap();
        // The answer is one small head and a 3-byte body ("ok\n").
        let mut got = Vec::new();
        while !got.ends_with(b"ok\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "weir closed an HTTP client connection");
            got.extend_from_slice(&buf[..n]);
        }
        let done = Instant::now();
        out.push((done.duration_since(t0).as_millis() as u32, done.duration_since(start).as_micros() as u32));
    }
    out
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0
}

pub async fn run(dir: &std::path::Path, ws_up: SocketAddr, http_up: SocketAddr, n: usize) {
    let Started { mut child, addr, admin } = start_weir(dir, ws_up, n, Some(http_up));
    let start = Instant::now();
    let closes: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let mut canaries = 0;
    let mut readers = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let batch = futures_util::future::join_all(chunk.iter().map(|&i| open(addr, i))).await;
        for (ws, canary) in batch {
            canaries += usize::from(canary);
            let closes = Arc::clone(&closes);
            // Each socket waits for its close frame (bounded by the run).
            readers.push(tokio::spawn(async move {
                let (_tx, mut rx) = ws.split();
                let limit = tokio::time::sleep(LOAD + Duration::from_secs(20));
                tokio::pin!(limit);
                loop {
                    tokio::select! {
                        _ = &mut limit => return,
                        m = rx.next() => match m {
                            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                                let code = f.map_or(1005, |f| u16::from(f.code));
                                closes.lock().unwrap().push((Instant::now(), code));
                                return;
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                    }
                }
            }));
        }
        assert!(start.elapsed() < Duration::from_secs(180), "opening sockets took too long");
    }
    println!("rollback under load: {n} sockets open ({canaries} canary) in {:.1?}", start.elapsed());

    let t0 = Instant::now();
    let until = t0 + LOAD;
    let clients: Vec<_> = (0..CLIENTS).map(|_| tokio::spawn(http_client(addr, t0, until))).collect();
    tokio::time::sleep_until((t0 + ROLLBACK_AT).into()).await;
    let rb = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://{admin}/routes/ws/rollback"))
        .output()
        .await
        .unwrap();
    println!("  rollback at {:?}: HTTP {}", ROLLBACK_AT, String::from_utf8_lossy(&rb.stdout));
    tokio::time::sleep_until((t0 + RELOAD_AT).into()).await;
    std::fs::write(dir.join("weir.yaml"), rollback_config(ws_up, http_up, n + 1_000, true)).unwrap();
    let _ = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status();
    println!("  reload (SIGHUP, api route changed) at {RELOAD_AT:?}");

    let mut samples = Vec::new();
    for c in clients {
        samples.extend(c.await.unwrap());
    }
    let closes = closes.lock().unwrap().clone();
    let secs = LOAD.as_secs() as usize;
    println!("  second  req/s    p50 ms  p99 ms  canary closes (1012)");
    let mut per_sec_p99 = Vec::new();
    for sec in 0..secs {
        let mut lat: Vec<u32> = samples.iter().filter(|(t, _)| *t as usize / 1000 == sec).map(|(_, l)| *l).collect();
        let shut = closes
            .iter()
            .filter(|(at, code)| *code == 1012 && at.saturating_duration_since(t0).as_secs() as usize == sec)
            .count();
        let reqs = lat.len();
        let (p50, p99) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99));
        per_sec_p99.push(p99);
        println!("  {sec:>6}  {reqs:>6}  {p50:>6.3}  {p99:>6.3}  {shut}");
    }
    let mut before: Vec<u32> =
        samples.iter().filter(|(t, _)| u64::from(*t) < ROLLBACK_AT.as_millis() as u64).map(|(_, l)| *l).collect();
    let last_close = closes.iter().map(|(at, _)| *at).max().unwrap_or(t0);
    let close_end = last_close.saturating_duration_since(t0).as_millis() as u32;
    let mut during: Vec<u32> = samples
        .iter()
        .filter(|(t, _)| u64::from(*t) >= ROLLBACK_AT.as_millis() as u64 && *t <= close_end)
        .map(|(_, l)| *l)
        .collect();
    let worst = per_sec_p99.iter().skip(ROLLBACK_AT.as_secs() as usize).copied().fold(0.0, f64::max);
    let rolled = closes.iter().filter(|(_, c)| *c == 1012).count();
    println!(
        "  closed {rolled} of {canaries} canary sockets with 1012 (others closed: {}); HTTP p99 before {:.3} ms, \
         while closing {:.3} ms, worst second {:.3} ms",
        closes.len() - rolled,
        pct(&mut before, 0.99),
        pct(&mut during, 0.99),
        worst
    );
    let _ = child.kill();
    let _ = child.wait();
    for r in readers {
        r.abort();
    }
}
