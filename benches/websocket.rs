//! Question: what does an open WebSocket cost weir, and how much slower is a
//! socket relayed by weir than a direct one?
//!
//! 1. Memory: the release `weir` binary in front of an in-process upstream
//!    that completes the handshake and then holds the socket; N clients
//!    (default 10,000) open sockets and stay idle. Reported: weir's RSS
//!    before and after, and the difference per socket.
//! 2. Throughput: one socket, the client streams binary messages (64 KiB and
//!    128 B) to an echo upstream and reads the echoes concurrently; MiB/s
//!    and messages/s through weir and direct, and the ratio.
//!
//! 3. With WS_MODE=rollback instead: N sockets split 50/50 between stable
//!    and canary by a sticky player id, and 50 keep-alive HTTP clients on
//!    another route in a closed loop for 40 s. At 5 s the socket route is
//!    rolled back (its ~N/2 canary sockets closed with 1012 at `close_rate`
//!    500/s); at 10 s the config is reloaded. Printed per second: HTTP req/s,
//!    p50, p99, canary closes; then the HTTP p99 before the rollback against
//!    the worst second while sockets were closing.
//!
//! Run with `benches/websocket.sh` (raises the open-file limit, then
//! `cargo bench --bench websocket`). Env: WS_SOCKETS (default 10000), WS_MODE.
//! Loopback only; every loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[path = "websocket/rollback.rs"]
mod rollback;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
}

/// Echo upstream (holds idle sockets as well).
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let Ok(ws) = tokio_tungstenite::accept_async(s).await else { return };
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(m)) = rx.next().await {
                    if (m.is_binary() || m.is_text()) && tx.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The rollback mode's config: a sticky 50/50 socket route and an HTTP
/// route. `mark` changes a value, so writing it again is a real reload.
/// `WS_CANARY_WEIGHT` (default 50): the canary's share of the sockets in
/// the rollback mode, percent.
fn canary_weight() -> u32 {
    std::env::var("WS_CANARY_WEIGHT").ok().and_then(|v| v.parse().ok()).filter(|w| *w <= 100).unwrap_or(50)
}

fn rollback_config(ws: SocketAddr, http: SocketAddr, cap: usize, mark: bool) -> String {
    let weight = canary_weight();
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
limits: {{max_connections: {cap}, max_in_flight: {cap}}}
upstreams:
  v1: {{endpoints: ["{ws}"], connect_timeout: 10s}}
  v2: {{endpoints: ["{ws}"], connect_timeout: 10s}}
  api: {{endpoints: ["{http}"]}}
routes:
  - name: ws
    match: {{path_prefix: /ws}}
    stable: {{upstream: v1}}
    canary: {{upstream: v2, revision: r1}}
    weight: {weight}
    sticky: {{keys: ["header:x-player-id"]}}
    expose_version: true
    websocket: {{close_rate: 500/s}}
  - name: api
    stable: {{upstream: api}}
    expose_version: {mark}
"#
    )
}

struct Started {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// `http`: the rollback mode's HTTP upstream.
fn start_weir(dir: &std::path::Path, up: SocketAddr, sockets: usize, http: Option<SocketAddr>) -> Started {
    let cap = sockets + 1_000;
    let cfg = dir.join("weir.yaml");
    let text = match http {
        Some(http) => rollback_config(up, http, cap, false),
        None => format!(
            r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
limits: {{max_connections: {cap}, max_in_flight: {cap}}}
upstreams:
  echo: {{endpoints: ["{up}"], connect_timeout: 10s}}
routes:
  - name: ws
    stable: {{upstream: echo}}
"#
        ),
    };
    std::fs::write(&cfg, text).unwrap();
    // Pinned to core 0 when `taskset` is there (the bench runs on core 1).
    let pinned = std::process::Command::new("taskset").arg("-V").output().is_ok();
    let mut cmd = if pinned {
        let mut c = std::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(env!("CARGO_BIN_EXE_weir"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
    };
    let mut child = cmd
        .args(["run", "-c"])
        .arg(&cfg)
        .env("TOKIO_WORKER_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = err.lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (addr, admin) = loop {
        assert!(Instant::now() < deadline, "weir did not start");
        let line = lines.next().unwrap().unwrap();
        if line.contains("weir ready") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let listen = v["fields"]["listen"].as_str().unwrap();
            let addr = listen.trim_matches(|c| c == '[' || c == ']').split(',').next().unwrap().trim().parse().unwrap();
            break (addr, v["fields"]["admin"].as_str().unwrap().parse().unwrap());
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Started { child, addr, admin }
}

async fn connect(addr: SocketAddr) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), s).await.unwrap();
    ws
}

/// Stream `count` messages of `size` bytes and read all echoes; returns elapsed.
async fn throughput(addr: SocketAddr, size: usize, count: usize) -> Duration {
    let ws = connect(addr).await;
    let (mut tx, mut rx) = ws.split();
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..count {
            tx.feed(Message::Binary(payload.clone())).await.unwrap();
        }
        tx.flush().await.unwrap();
        tx
    });
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got < count {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(Ok(m))) if m.is_binary() => got += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("echo stream ended after {got}: {other:?}"),
        }
    }
    let took = start.elapsed();
    let _ = sender.await;
    took
}

/// The upstream runs in a child process of its own (this binary again), so
/// clients, upstream and weir each stay under the per-process open-file
/// limit (weir holds two descriptors per socket).
fn spawn_upstream() -> (std::process::Child, SocketAddr, SocketAddr) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("WS_BENCH_UPSTREAM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let mut addrs = line.split_whitespace().map(|a| a.parse().unwrap());
    (child, addrs.next().unwrap(), addrs.next().unwrap())
}

#[tokio::main]
async fn main() {
    if std::env::var_os("WS_BENCH_UPSTREAM").is_some() {
        let addr = upstream().await;
        let http = rollback::http_upstream().await;
        println!("{addr} {http}");
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin())).await;
        return;
    }
    let n: usize = std::env::var("WS_SOCKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let (mut up_child, up, http_up) = spawn_upstream();
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("WS_MODE").is_ok_and(|m| m == "rollback") {
        rollback::run(dir.path(), up, http_up, n).await;
        drop(up_child.stdin.take());
        let _ = up_child.kill();
        let _ = up_child.wait();
        return;
    }
    let Started { mut child, addr: weir, .. } = start_weir(dir.path(), up, n, None);
    let pid = child.id();

    // Warm up (allocator arenas, runtime) with a few sockets, then measure.
    let warm: Vec<_> = futures_util::future::join_all((0..10).map(|_| connect(weir))).await;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let start = Instant::now();
    let mut sockets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let batch = futures_util::future::join_all(chunk.iter().map(|_| connect(weir))).await;
        sockets.extend(batch);
        assert!(start.elapsed() < Duration::from_secs(120), "opening sockets took too long");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = rss_kib(pid);
    // jemalloc returns freed pages (the handshakes' buffers) after its
    // 10 s decay: what the open sockets hold shows once that has passed.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = rss_kib(pid);
    println!(
        "  0.5 s after opening: weir RSS {before} KiB -> {first} KiB ({:.1} KiB per socket)",
        (first.saturating_sub(before) as f64) / n as f64
    );
    let per = (after.saturating_sub(before) as f64) * 1024.0 / n as f64;
    let limit = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limit.lines().find(|l| l.starts_with("Max open files")).unwrap_or("").to_owned();
    println!("idle websockets: {n} open in {:.1?} ({nofile})", start.elapsed());
    println!("  15 s later: weir RSS {before} KiB -> {after} KiB: {:.1} KiB per socket (goal <= 8 KiB)", per / 1024.0);
    drop(sockets);

    println!("relay throughput (one socket, client streams, upstream echoes):");
    for (size, count) in [(64 * 1024, 4096), (128, 200_000)] {
        // Interleave direct and weir rounds; keep the best of three each.
        let (mut d, mut w) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            d = d.min(throughput(up, size, count).await);
            w = w.min(throughput(weir, size, count).await);
        }
        let mib = (size * count) as f64 / (1024.0 * 1024.0);
        println!(
            "  {size:>6} B x {count:>6}: direct {:>8.1} MiB/s {:>9.0} msg/s | via weir {:>8.1} MiB/s {:>9.0} msg/s | weir/direct {:.2}",
            mib / d.as_secs_f64(),
            count as f64 / d.as_secs_f64(),
            mib / w.as_secs_f64(),
            count as f64 / w.as_secs_f64(),
            d.as_secs_f64() / w.as_secs_f64(),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(up_child.stdin.take());
    let _ = up_child.kill();
    let _ = up_child.wait();
}
