//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT), black-box: a real h2
//! client (Python `h2`, tests/ws_h2_client.py) speaks h2c to weir; the
//! upstream is an ordinary HTTP/1.1 WebSocket server (tokio-tungstenite)
//! that records the handshake it got.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::{Weir, WsUpstream, admin_post, config, eventually, metric, wait_metric};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_h2_client.py");

async fn h2_client(args: &[&str]) -> serde_json::Value {
    h2_client_with(args, &[]).await
}

/// The client with environment (`WS_H2_CA`, `WS_H2_SNI`: TLS with ALPN h2).
async fn h2_client_with(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let run = tokio::process::Command::new("python3").arg(SCRIPT).args(args).envs(env.iter().copied()).output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("h2 client timed out")
        .expect("python3 must be installed (.ci/run installs it with `h2`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

/// The client in `hold` mode: opens a WebSocket over h2c and keeps it until
/// weir closes it. Returns the process, its remaining output and the first
/// report (`phase: open`, after the echoes).
async fn hold(addr: SocketAddr, player: &str) -> (tokio::process::Child, Lines, serde_json::Value) {
    let mut child = tokio::process::Command::new("python3")
        .args([SCRIPT, "hold", &addr.to_string(), "/game", player])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    (child, lines, serde_json::from_str(&first).unwrap())
}

const CANARY_ROUTE: &str = r#"  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2, revision: r1}
    weight: 100
"#;

#[tokio::test]
async fn websocket_over_h2_is_routed_relayed_and_closed_like_an_http1_upgrade() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let w = Weir::start(&config(stable.addr, canary.addr, CANARY_ROUTE)).await;
    let addr = w.addr.to_string();

    let v = h2_client(&["echo", &addr, "/game/lobby?table=7", "p1"]).await;
    assert_eq!(v["enable_connect_protocol"], 1, "weir must advertise SETTINGS_ENABLE_CONNECT_PROTOCOL: {v}");
    assert_eq!(v["status"], "200", "{v}");
    // The upstream's answer reaches the client, minus the HTTP/1.1 upgrade
    // headers that have no place on an HTTP/2 stream.
    assert_eq!(v["headers"]["x-upstream"], "canary", "{v}");
    assert_eq!(v["headers"]["x-weir-version"], serde_json::Value::Null);
    for hop in ["upgrade", "connection", "sec-websocket-accept"] {
        assert!(v["headers"].get(hop).is_none(), "{hop} leaked to the h2 client: {v}");
    }
    assert_eq!(v["echo_text"], true, "{v}");
    assert_eq!(v["echo_binary"], true, "{v}");
    assert_eq!(v["echo_fragmented"], true, "{v}");
    // The client's close went through and the upstream's answer came back.
    assert_eq!(v["close_code"], 1000, "{v}");
    assert_eq!(v["stream_ended"], true, "{v}");
    assert!(eventually(Duration::from_secs(5), || *canary.closes.lock().unwrap() == vec![1000]).await);

    // What the upstream got: an ordinary HTTP/1.1 handshake, routed.
    let hs = canary.handshakes.lock().unwrap()[0].clone();
    assert_eq!(hs["upgrade"], "websocket");
    assert_eq!(hs["connection"], "upgrade");
    assert_eq!(hs["sec-websocket-version"], "13");
    assert_eq!(hs["sec-websocket-protocol"], "game.v1");
    assert_eq!(hs["x-player-id"], "p1");
    assert_eq!(hs["x-weir-route"], "app");
    assert_eq!(hs["x-weir-version"], "canary");
    assert_eq!(hs["x-forwarded-for"], "127.0.0.1");
    assert_eq!(hs["host"], addr.as_str());
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.decode(hs["sec-websocket-key"].as_bytes()).unwrap();
    assert_eq!(key.len(), 16, "a fresh 16-byte key per handshake");
    assert!(stable.handshakes.lock().unwrap().is_empty());

    let client_close = r#"weir_websocket_connections_total{route="app",version="canary",close="client"}"#;
    let text = wait_metric(w.admin, client_close, 1.0).await;
    assert_eq!(metric(&text, client_close), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"weir_websocket_connections_active{route="app",version="canary"}"#), Some(0.0));
    assert_eq!(metric(&text, r#"weir_requests_total{route="app",version="canary",code="200"}"#), Some(1.0));
}

#[tokio::test]
async fn a_rollback_closes_an_h2_websocket_with_1012() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let w = Weir::start(&config(stable.addr, canary.addr, CANARY_ROUTE)).await;
    let (_child, mut lines, open) = hold(w.addr, "p2").await;
    assert_eq!(open["phase"], "open", "{open}");
    assert_eq!(open["echo_binary"], true, "{open}");

    let (status, _) = admin_post(w.admin, "/routes/app/rollback").await;
    assert_eq!(status, 200);
    let last = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["close_code"], 1012, "{v}");
    assert_eq!(v["stream_ended"], true, "{v}");
    assert!(eventually(Duration::from_secs(5), || canary.closes() == vec![1012]).await, "{:?}", canary.closes());
    let rolled = r#"weir_websocket_connections_total{route="app",version="canary",close="rollback"}"#;
    assert_eq!(metric(&wait_metric(w.admin, rolled, 1.0).await, rolled), Some(1.0));
}

/// An upstream that answers 101 with the wrong `Sec-WebSocket-Accept`.
async fn lying_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await;
                let _ = s.read(&mut b).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_wrong_accept_is_a_502_and_plain_connect_is_refused() {
    let liar = lying_upstream().await;
    let w = Weir::start(&config(liar, liar, "  - name: app\n    stable: {upstream: v1}\n")).await;
    let addr = w.addr.to_string();
    // weir checks the upstream's answer to the key it made itself.
    let v = h2_client(&["echo", &addr, "/game", "p3"]).await;
    assert_eq!(v["status"], "502", "{v}");
    assert_eq!(v["headers"]["x-weir-error"], "upstream_protocol", "{v}");
    // weir is not a forward proxy: CONNECT without :protocol gets 405.
    let v = h2_client(&["connect", &addr]).await;
    assert_eq!(v["status"], "405", "{v}");
    assert_eq!(v["headers"]["x-weir-error"], "connect_refused", "{v}");
}

/// A CA and a leaf for game.example in `dir` (ca.crt; game.crt, game.key),
/// made with the openssl CLI.
fn make_certs(dir: &std::path::Path) {
    std::fs::write(dir.join("game.ext"), "subjectAltName=DNS:game.example\n").unwrap();
    let cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
         -days 2 -subj /CN=weir-test-ca && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout game.key -out game.csr \
         -subj /CN=game.example && \
         openssl x509 -req -in game.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
         -extfile game.ext -out game.crt";
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().expect("sh");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn websocket_over_h2_works_the_same_over_tls_with_alpn() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let d = certs.path().display();
    let yaml = config(stable.addr, canary.addr, CANARY_ROUTE).replacen(
        r#"listen: [{address: "127.0.0.1:0"}]"#,
        &format!(
            r#"listen: [{{address: "127.0.0.1:0", tls: {{certs: [{{cert: "{d}/game.crt", key: "{d}/game.key"}}]}}}}]"#
        ),
        1,
    );
    let w = Weir::start(&yaml).await;
    let ca = certs.path().join("ca.crt");
    let env = [("WS_H2_CA", ca.to_str().unwrap()), ("WS_H2_SNI", "game.example")];

    let v = h2_client_with(&["echo", &w.addr.to_string(), "/game/lobby", "p9"], &env).await;
    assert_eq!(v["enable_connect_protocol"], 1, "{v}");
    assert_eq!(v["status"], "200", "{v}");
    assert_eq!(v["headers"]["x-upstream"], "canary", "{v}");
    assert_eq!(
        (v["echo_text"].clone(), v["echo_binary"].clone(), v["echo_fragmented"].clone()),
        (true.into(), true.into(), true.into()),
        "{v}"
    );
    assert_eq!(v["close_code"], 1000, "{v}");
    assert!(eventually(Duration::from_secs(5), || *canary.closes.lock().unwrap() == vec![1000]).await);
    // The upstream got a plain HTTP/1.1 handshake: TLS ends at weir.
    let hs = canary.handshakes.lock().unwrap()[0].clone();
    assert_eq!(hs["upgrade"], "websocket");
    assert_eq!(hs["x-player-id"], "p9");
    assert_eq!(hs["x-forwarded-proto"], "https", "{hs:?}");
    assert!(stable.handshakes.lock().unwrap().is_empty());
}

/// An HTTP/2 connection whose only stream is a quiet WebSocket tunnel is
/// not idle: `limits.idle_timeout` never closes it under the socket.
#[tokio::test]
async fn a_quiet_h2_websocket_keeps_its_connection_past_the_idle_timeout() {
    let stable = WsUpstream::start("stable", false).await;
    let canary = WsUpstream::start("canary", false).await;
    let yaml = config(stable.addr, canary.addr, CANARY_ROUTE)
        .replace("access_log: false", "access_log: false\nlimits: {idle_timeout: 1s}");
    let w = Weir::start(&yaml).await;
    let (_child, mut lines, open) = hold(w.addr, "p3").await;
    assert_eq!(open["echo_binary"], true, "{open}");
    // Three idle periods with no byte on the tunnel: the client sees nothing
    // (a closed connection would end its `hold` and print).
    let quiet = tokio::time::timeout(Duration::from_secs(3), lines.next_line()).await;
    assert!(quiet.is_err(), "the tunnel ended while quiet: {quiet:?}");
    // Still a working socket: a rollback's 1012 reaches the client over it.
    let (status, _) = admin_post(w.admin, "/routes/app/rollback").await;
    assert_eq!(status, 200);
    let last = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["close_code"], 1012, "{v}");
}
