//! WebSocket upgrades through weir (design §9), black-box: tokio-tungstenite
//! and Python `websockets` clients, echo upstreams that record what they got.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

mod support;

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{
    Upstream, Weir, Ws, WsUpstream, admin_post, client, config, eventually, get, metric, metrics, spawn_weir_admin,
    wait_metric, ws_open as open,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Read until a close frame arrives; its code, or None if the stream ended
/// without one (or `limit` passed).
async fn close_code(ws: &mut Ws, limit: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return Some(f.map_or(1005, |f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Send one message and expect it back unchanged.
async fn echo(ws: &mut Ws, msg: Message) {
    ws.send(msg.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("no echo").unwrap().unwrap();
    assert_eq!(got, msg);
}

const STICKY_ROUTE: &str = r#"  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2, revision: r1}
    weight: 50
    sticky: {keys: ["header:x-player-id"]}
"#;

#[tokio::test]
async fn messages_are_relayed_byte_for_byte_and_the_upstream_sees_a_clean_handshake() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let routes = "  - name: app\n    stable: {upstream: v1}\n    canary: {upstream: v2}\n    weight: 0\n";
    let w = Weir::start(&config(stable.addr, canary.addr, routes)).await;

    let (mut ws, who) = open(w.addr, Some("p1")).await;
    assert_eq!(who, "stable");
    echo(&mut ws, Message::text("héllo wörld ".repeat(1000))).await;
    let blob: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    echo(&mut ws, Message::binary(blob)).await;
    echo(&mut ws, Message::binary(Vec::new())).await;
    // One text message in three frames: weir passes the frames through and
    // the upstream reassembles them.
    ws.send(Message::Frame(Frame::message(Bytes::from_static(b"one|"), OpCode::Data(Data::Text), false)))
        .await
        .unwrap();
    ws.send(Message::Frame(Frame::message(Bytes::from_static(b"two|"), OpCode::Data(Data::Continue), false)))
        .await
        .unwrap();
    ws.send(Message::Frame(Frame::message(Bytes::from_static(b"three"), OpCode::Data(Data::Continue), true)))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::text("one|two|three"));
    // Ping from the client reaches the upstream, whose pong comes back.
    ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(got, Message::Pong(Bytes::from_static(b"are you there")));

    // A normal close handshake passes through untouched.
    ws.close(None).await.unwrap();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1005));
    assert!(eventually(Duration::from_secs(5), || *stable.closes.lock().unwrap() == vec![1005]).await);

    let hs = stable.handshakes.lock().unwrap()[0].clone();
    assert_eq!(hs["upgrade"], "websocket");
    assert_eq!(hs["connection"], "upgrade");
    assert!(hs.contains_key("sec-websocket-key"));
    assert_eq!(hs["sec-websocket-version"], "13");
    assert_eq!(hs["x-weir-version"], "stable");
    assert_eq!(hs["x-weir-route"], "app");
    assert_eq!(hs["x-forwarded-for"], "127.0.0.1");
    assert!(canary.handshakes.lock().unwrap().is_empty());

    // Accounting: one socket closed by the client, none active, and the
    // handshake (not the socket's lifetime) in the request metrics.
    let text =
        wait_metric(w.admin, r#"weir_websocket_connections_total{route="app",version="stable",close="client"}"#, 1.0)
            .await;
    assert_eq!(
        metric(&text, r#"weir_websocket_connections_total{route="app",version="stable",close="client"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="stable"}"#), Some(0.0));
    assert_eq!(metric(&text, r#"weir_requests_total{route="app",version="stable",code="101"}"#), Some(1.0));
    assert_eq!(metric(&text, r#"weir_request_duration_seconds_count{route="app",version="stable"}"#), Some(1.0));
}

#[tokio::test]
async fn a_failed_upgrade_stays_http_and_an_unsolicited_101_is_a_502() {
    // An upstream that is not a WebSocket server answers the handshake 200:
    // the client gets that 200 as plain HTTP, never a tunnel.
    let plain = Upstream::start("plain").await;
    // An upstream that answers 101 to everything.
    let rogue = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_addr = rogue.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = rogue.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
                    .await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let routes = "  - name: ws\n    match: {path_prefix: /ws}\n    stable: {upstream: v1}\n  - name: rogue\n    stable: {upstream: v2}\n";
    let w = Weir::start(&config(plain.addr, rogue_addr, routes)).await;

    let handshake = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut s = TcpStream::connect(w.addr).await.unwrap();
    s.write_all(handshake.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&got[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.ends_with("plain"), "{head}");
    // Still HTTP on the same connection: a second request is answered.
    s.write_all(b"GET /ws/again HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(plain.count(), 2);
    // The upstream was asked for the upgrade properly.
    assert_eq!(plain.requests()[0].headers["upgrade"], "websocket");

    // A 101 to a request that asked for no upgrade.
    let (status, headers, _) = get(&client(), &w.url("/x"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-weir-error"], "upstream_protocol");

    // A 101 to a WebSocket handshake, but not to this one: its
    // Sec-WebSocket-Accept is missing (the rogue sends none) or answers
    // another key. weir checks it and never starts the tunnel.
    let mut s = TcpStream::connect(w.addr).await.unwrap();
    s.write_all(handshake.replace("/ws", "/rogue").as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&got[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("x-weir-error: upstream_protocol"), "{head}");
}

#[tokio::test]
async fn a_player_reconnecting_lands_on_the_same_version_every_time() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let w = Weir::start(&config(stable.addr, canary.addr, STICKY_ROUTE)).await;
    let mut seen = std::collections::HashSet::new();
    for p in 0..8 {
        let player = format!("player-{p}");
        let (mut ws, first) = open(w.addr, Some(&player)).await;
        ws.close(None).await.unwrap();
        for _ in 1..100 {
            let (mut ws, who) = open(w.addr, Some(&player)).await;
            assert_eq!(who, first, "{player} moved from {first} to {who}");
            ws.close(None).await.unwrap();
        }
        seen.insert(first);
    }
    // Both versions are in use, so "the same" means something.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// Open sockets for players until `canary_n` canary and `stable_n` stable are open.
async fn open_split(addr: SocketAddr, canary_n: usize, stable_n: usize) -> (Vec<Ws>, Vec<Ws>) {
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for p in 0..1000 {
        if c.len() >= canary_n && s.len() >= stable_n {
            break;
        }
        let (mut ws, who) = open(addr, Some(&format!("pl-{p}"))).await;
        match who.as_str() {
            "canary" if c.len() < canary_n => c.push(ws),
            "stable" if s.len() < stable_n => s.push(ws),
            _ => {
                // Not needed: a complete close handshake (the upstream
                // records 1005 before it answers), so later counts are exact.
                ws.close(None).await.unwrap();
                assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1005));
            }
        }
    }
    assert_eq!((c.len(), s.len()), (canary_n, stable_n));
    (c, s)
}

#[tokio::test]
async fn rollback_closes_canary_sockets_with_1012_at_the_close_rate_and_stable_stays_open() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let routes = format!("{STICKY_ROUTE}    websocket: {{close_rate: 20/s}}\n");
    let w = Weir::start(&config(stable.addr, canary.addr, &routes)).await;
    let (canaries, mut stables) = open_split(w.addr, 20, 5).await;

    let t0 = Instant::now();
    let waiters: Vec<_> = canaries
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let code = close_code(&mut ws, Duration::from_secs(10)).await;
                (code, Instant::now())
            })
        })
        .collect();
    let (status, _) = admin_post(w.admin, "/routes/app/rollback").await;
    assert_eq!(status, 200);
    let mut times = Vec::new();
    for t in waiters {
        let (code, at) = t.await.unwrap();
        assert_eq!(code, Some(1012));
        times.push(at.duration_since(t0));
    }
    times.sort();
    // 20 sockets at 20/s: the last close comes about 0.95 s after the first.
    // Only a lower bound is asserted (a slow machine stretches it further).
    let spread = times[19] - times[0];
    assert!(spread >= Duration::from_millis(700), "closes not paced: spread {spread:?}");
    // The canary upstream got a proper close from weir for each socket.
    assert!(eventually(Duration::from_secs(5), || canary.closes().len() == 20).await);
    assert!(canary.closes().iter().all(|&c| c == 1012), "{:?}", canary.closes());

    // Stable sockets were not touched and still echo.
    for ws in &mut stables {
        echo(ws, Message::text("still here")).await;
    }
    assert!(stable.closes().is_empty());
    // A canary player reconnecting now lands on stable.
    let (_ws, who) = open(w.addr, Some("pl-canary-again")).await;
    assert_eq!(who, "stable");

    let text = metrics(w.admin).await;
    assert_eq!(
        metric(&text, r#"weir_websocket_connections_total{route="app",version="canary",close="rollback"}"#),
        Some(20.0),
        "{text}"
    );
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="canary"}"#), Some(0.0));
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="stable"}"#), Some(6.0));
}

#[tokio::test]
async fn on_rollback_keep_leaves_canary_sockets_open_through_a_kill_switch_reload() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let routes = format!("{STICKY_ROUTE}    websocket: {{on_rollback: keep}}\n");
    let w = Weir::start(&config(stable.addr, canary.addr, &routes)).await;
    let (mut canaries, _stables) = open_split(w.addr, 3, 1).await;

    let killed = format!("{STICKY_ROUTE}    kill_switch: true\n    websocket: {{on_rollback: keep}}\n");
    w.install(&config(stable.addr, canary.addr, &killed));
    // New sockets go to stable; the open canary ones keep working.
    let (_ws, who) = open(w.addr, Some("pl-0")).await;
    assert_eq!(who, "stable");
    for ws in &mut canaries {
        echo(ws, Message::text("kept")).await;
    }
    assert!(canary.closes().is_empty());

    // The same kill with `close` (the default) closes them with 1012.
    w.install(&config(stable.addr, canary.addr, STICKY_ROUTE));
    w.install(&config(stable.addr, canary.addr, &format!("{STICKY_ROUTE}    kill_switch: true\n")));
    for ws in &mut canaries {
        assert_eq!(close_code(ws, Duration::from_secs(10)).await, Some(1012));
    }
}

#[tokio::test]
async fn a_dead_canary_upstream_gives_clients_1011_and_the_gauge_returns_to_zero() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let routes = "  - name: app\n    stable: {upstream: v1}\n    canary: {upstream: v2}\n    weight: 100\n";
    let w = Weir::start(&config(stable.addr, canary.addr, routes)).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (mut ws, who) = open(w.addr, None).await;
        assert_eq!(who, "canary");
        echo(&mut ws, Message::text("hi")).await;
        sockets.push(ws);
    }
    let text = metrics(w.admin).await;
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="canary"}"#), Some(5.0));

    canary.kill();
    let t0 = Instant::now();
    for ws in &mut sockets {
        assert_eq!(close_code(ws, Duration::from_secs(5)).await, Some(1011));
    }
    let took = t0.elapsed();
    let text = wait_metric(w.admin, r#"weir_websocket_connections_active{route="app",version="canary"}"#, 0.0).await;
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="canary"}"#), Some(0.0));
    assert_eq!(
        metric(&text, r#"weir_websocket_connections_total{route="app",version="canary",close="error"}"#),
        Some(5.0),
        "{text}"
    );
    println!("1011 reached all 5 clients {took:?} after the upstream died");
}

fn binary_config(dir: &std::path::Path, stable: SocketAddr, canary: SocketAddr, routes: &str) -> std::path::PathBuf {
    let text = config(stable, canary, routes).replace("access_log: false", "access_log: false\nshutdown: {grace: 10s}");
    let path = dir.join("weir.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn sigterm_closes_every_socket_with_1001_and_weir_exits() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = binary_config(dir.path(), stable.addr, canary.addr, STICKY_ROUTE);
    let (mut child, addr, _admin, _out, _err) = spawn_weir_admin(&cfg);
    let (mut c, mut s) = open_split(addr, 3, 3).await;
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for ws in c.iter_mut().chain(s.iter_mut()) {
        assert_eq!(close_code(ws, Duration::from_secs(10)).await, Some(1001));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "weir did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    // Both upstreams were told too.
    assert!(eventually(Duration::from_secs(5), || stable.closes().len() == 3 && canary.closes().len() == 3).await);
    assert!(stable.closes().iter().chain(canary.closes().iter()).all(|&c| c == 1001));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
}

#[tokio::test]
async fn a_slow_reader_against_a_flooding_upstream_does_not_grow_weir() {
    let flood = WsUpstream::start("flood", true).await;
    let dir = tempfile::tempdir().unwrap();
    let routes = "  - name: app\n    stable: {upstream: v1}\n";
    let cfg = binary_config(dir.path(), flood.addr, flood.addr, routes);
    let (mut child, addr, _admin, _out, _err) = spawn_weir_admin(&cfg);
    let before = rss_kib(child.id());

    // Four clients that complete the handshake and then never read.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(open(addr, None).await.0);
    }
    // Wait (bounded) until the upstream's writes stall: every buffer on the
    // way is full.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Instant::now());
    loop {
        let now = flood.flooded.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "upstream never stalled: {now} bytes sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rss_kib(child.id());
    let sent = flood.flooded.load(Ordering::Relaxed);
    println!("flood stalled after {} MiB; weir RSS {before} KiB -> {after} KiB", sent >> 20);
    // What the upstream could push is bounded by kernel socket buffers (a
    // few MiB per socket on loopback), not by weir.
    assert!(sent < (4 * 24) << 20, "upstream pushed {sent} bytes");
    // weir's own memory: two 4 KiB relay buffers per socket, nothing queued.
    assert!(after < before + 4096, "weir grew from {before} KiB to {after} KiB");
    let _ = child.kill();
    let _ = child.wait();
    drop(idle);
}

/// Python `websockets` (installed by .ci/run) with permessage-deflate
/// negotiated end to end: weir relays the compressed frames untouched.
#[tokio::test]
async fn python_websockets_with_permessage_deflate_round_trips_through_weir() {
    let mut server = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py"))
        .arg("serve")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 must be installed (.ci/run installs it with `websockets`)");
    let mut out = server.stdout.take().unwrap();
    let mut port = String::new();
    let mut byte = [0u8; 1];
    while tokio::time::timeout(Duration::from_secs(10), out.read_exact(&mut byte))
        .await
        .expect("python echo server did not start (is `websockets` installed?)")
        .is_ok()
        && byte[0] != b'\n'
    {
        port.push(byte[0] as char);
    }
    let upstream: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().expect("python server port");
    let routes = "  - name: app\n    stable: {upstream: v1}\n";
    let w = Weir::start(&config(upstream, upstream, routes)).await;

    let run = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_peer.py"))
        .arg("client")
        .arg(format!("ws://{}/game", w.addr))
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(v["extensions"].as_str().unwrap().contains("permessage-deflate"), "{v}");
    assert_eq!(v["upstream"], "python");
    assert_eq!(v["close_code"], 1000);
    drop(server.stdin.take());
    let _ = server.kill().await;
}
