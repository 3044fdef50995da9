//! Game sessions are evidence too (judgement over WebSockets), black-box:
//! tokio-tungstenite clients through weir to tungstenite echo upstreams.
//! An upstream that drops its sessions counts against its version; weir's
//! own pings to the upstream are timed per version, exported as a
//! histogram, and a canary whose pongs come late breaks its round-trip SLO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

mod support;

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Weir, client, config, get, journal, wait_route, ws_open as open};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// An echo upstream; it answers pings after `pong_delay` and can drop every
/// session at once without a close frame.
struct GameServer {
    addr: SocketAddr,
    sessions: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Pings received (weir's round-trip probes).
    pings: Arc<std::sync::atomic::AtomicU64>,
}

impl GameServer {
    async fn start(name: &'static str, pong_delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let pings = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s2, p2) = (sessions.clone(), pings.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let pings = p2.clone();
                let task = tokio::spawn(async move {
                    let cb = |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                              mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        resp.headers_mut().insert("x-upstream", name.parse().unwrap());
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, cb).await else { return };
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_ping() {
                            pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // tungstenite queued the pong; it leaves on the
                            // next poll, after this pause.
                            tokio::time::sleep(pong_delay).await;
                            let _ = ws.flush().await;
                        } else if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                s2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, sessions, pings }
    }

    /// Drop every session without a close frame.
    fn drop_sessions(&self) {
        for s in self.sessions.lock().unwrap().drain(..) {
            s.abort();
        }
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_the_canary_drops_are_its_errors_and_roll_it_back() {
    let (stable, canary) =
        (GameServer::start("stable", Duration::ZERO).await, GameServer::start("canary", Duration::ZERO).await);
    let route = r#"  - name: game
    stable: {upstream: v1}
    canary: {upstream: v2, revision: "2.0"}
    weight: 50
    sticky: {keys: ["header:x-player-id"]}
    analysis: {interval: 200ms, window: 2s}
"#;
    let weir = Weir::start(&config(stable.addr, canary.addr, route)).await;
    let mut sockets = Vec::new();
    let mut on_canary = 0;
    for i in 0..120 {
        let (mut ws, who) = open(weir.addr, Some(&format!("player-{i}"))).await;
        ws.send(Message::text("hello")).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo, Message::text("hello"));
        on_canary += usize::from(who == "canary");
        sockets.push((ws, who));
    }
    assert!((30..=90).contains(&on_canary), "{on_canary} of 120 players on canary");
    // Healthy sessions: nothing to hold against either version yet.
    let v = support::route_view(weir.admin, "game").await;
    assert_eq!(v["state"], "steady", "{v}");

    // The canary's game server drops every session: each is an error of canary.
    canary.drop_sessions();
    let (ok, v) = wait_route(weir.admin, "game", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "error_rate");
    let lines: Vec<serde_json::Value> =
        journal(&weir.dir.path().join("weir-state")).into_iter().filter(|e| e["event"] == "rollback").collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["inputs"]["fired"]["test"], "E", "{}", lines[0]);
    // Stable's sessions were never touched and are still open.
    for (ws, who) in sockets.iter_mut().filter(|(_, w)| w == "stable") {
        ws.send(Message::text("still here")).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(echo, Message::text("still here"), "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_trips_are_measured_per_version_and_a_slow_canary_breaks_its_rtt_slo() {
    let stable = GameServer::start("stable", Duration::ZERO).await;
    let canary = GameServer::start("canary", Duration::from_millis(150)).await;
    let route = r#"  - name: game
    stable: {upstream: v1}
    canary: {upstream: v2, revision: "2.0"}
    weight: 50
    analysis: {interval: 200ms, window: 2s, warmup: 0s, max_ws_rtt_p95: 120ms}
    websocket: {rtt_interval: 100ms}
"#;
    let weir = Weir::start(&config(stable.addr, canary.addr, route)).await;
    let mut sockets = Vec::new();
    for _ in 0..40 {
        sockets.push(open(weir.addr, None).await);
    }
    let (ok, v) = wait_route(weir.admin, "game", Duration::from_secs(30), |v| v["state"] == "rolled_back").await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "websocket_rtt", "{v}");
    let rb: Vec<serde_json::Value> =
        journal(&weir.dir.path().join("weir-state")).into_iter().filter(|e| e["event"] == "rollback").collect();
    let test = rb[0]["inputs"]["fired"]["test"].as_str().unwrap();
    assert!(["W95", "G_ws_rtt"].contains(&test), "{}", rb[0]);
    assert!(canary.pings.load(std::sync::atomic::Ordering::Relaxed) > 0, "weir pinged the upstream");

    // The exported histogram tells the two versions apart.
    let text = get(&client(), &format!("http://{}/metrics", weir.admin), &[]).await.2;
    let series = |v: &str, what: &str| {
        metric(&text, &format!("weir_websocket_rtt_seconds_{what}{{route=\"game\",version=\"{v}\"}}")).unwrap()
    };
    let (sc, cc) = (series("stable", "count"), series("canary", "count"));
    assert!(sc >= 20.0 && cc >= 5.0, "{text}");
    let (stable_mean, canary_mean) = (series("stable", "sum") / sc, series("canary", "sum") / cc);
    assert!(canary_mean >= 0.14, "canary mean round trip {canary_mean}");
    assert!(stable_mean < 0.05, "stable mean round trip {stable_mean}");
    let fast =
        metric(&text, "weir_websocket_rtt_seconds_bucket{route=\"game\",version=\"canary\",le=\"0.1\"}").unwrap();
    assert_eq!(fast, 0.0, "no canary round trip under 100 ms: {text}");
    // The canary's sessions were closed with 1012 by the rollback.
    let mut closed = 0;
    for (ws, who) in sockets.iter_mut().filter(|(_, w)| w == "canary") {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
            if let Message::Close(Some(f)) = m {
                assert_eq!(u16::from(f.code), 1012, "{who}");
                closed += 1;
                break;
            }
        }
    }
    assert!(closed > 0);
}
