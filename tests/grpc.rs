//! gRPC through weir (issue 34, first part): a real gRPC server and client
//! (Python `grpcio`, tests/grpc_peer.py) with weir between them, speaking
//! HTTP/2 without TLS to the upstream (`protocol: h2c`). Asserted on what
//! the client got (status code, message, replies, trailing metadata) and
//! on weir's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::grpc::{PEER, Server, call};
use support::{Weir, metric};

fn yaml(upstream: std::net::SocketAddr, extra_route: &str) -> String {
    format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  game: {{endpoints: [\"{upstream}\"], protocol: h2c, request_timeout: 2s}}\n\
         routes:\n  - name: grpc\n    stable: {{upstream: game}}\n{extra_route}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_and_their_status_codes_pass_through() {
    let server = Server::start();
    let weir = Weir::start(&yaml(server.addr, "")).await;

    let ok = call(weir.addr, "Bet", "hello", 10.0).await;
    assert_eq!((ok["code"].as_str(), ok["replies"][0].as_str()), (Some("OK"), Some("hello")), "{ok}");

    // Every code the server sends reaches the client with its message.
    for code in ["UNAVAILABLE", "NOT_FOUND", "INVALID_ARGUMENT", "INTERNAL", "PERMISSION_DENIED"] {
        let r = call(weir.addr, "Bet", &format!("fail:{code}:because {code}"), 10.0).await;
        assert_eq!(r["code"], code, "{r}");
        assert_eq!(r["details"], format!("because {code}"), "{r}");
    }

    // Server streaming: every message, then the final status.
    let s = call(weir.addr, "Stream", "5", 10.0).await;
    assert_eq!(s["code"], "OK", "{s}");
    assert_eq!(s["replies"].as_array().unwrap().len(), 5, "{s}");
    // Bidirectional: the client sends each message only after the answer
    // to the last came back through weir.
    let c = call(weir.addr, "Chat", "a,b,c", 10.0).await;
    assert_eq!(c["code"], "OK", "{c}");
    assert_eq!(c["replies"], serde_json::json!(["echo:a", "echo:b", "echo:c"]), "{c}");
    let s = call(weir.addr, "Stream", "3:DATA_LOSS", 10.0).await;
    assert_eq!((s["code"].as_str(), s["replies"].as_array().unwrap().len()), (Some("DATA_LOSS"), 3), "{s}");

    // The metrics count codes per version; the server-side ones are errors.
    // (A call is recorded when weir's side of the stream ends, which may be
    // a moment after the client has its answer.)
    let m =
        support::wait_metric(weir.admin, "weir_requests_total{route=\"grpc\",version=\"stable\",code=\"200\"}", 9.0)
            .await;
    let n = |code: &str| {
        metric(&m, &format!("weir_grpc_responses_total{{route=\"grpc\",version=\"stable\",grpc_status=\"{code}\"}}"))
    };
    assert_eq!(n("OK"), Some(3.0), "{m}");
    assert_eq!(n("UNAVAILABLE"), Some(1.0), "{m}");
    assert_eq!(n("NOT_FOUND"), Some(1.0), "{m}");
    assert_eq!(n("DATA_LOSS"), Some(1.0), "{m}");
    let (_, _, body) = support::get(&support::client(), &format!("http://{}/routes/grpc", weir.admin), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    // UNAVAILABLE, INTERNAL and DATA_LOSS are the version's errors; NOT_FOUND,
    // INVALID_ARGUMENT and PERMISSION_DENIED are the caller's. The streams
    // (more than one message) are judged like WebSocket sessions: the one
    // that ended with DATA_LOSS is an error of the window, the two that
    // ended OK add nothing to it, and none enters the latency histogram.
    assert_eq!(v["stable"]["window"]["errors"], 3, "{v}");
    assert_eq!(v["stable"]["window"]["requests"], 7, "{v}");
    let latencies = metric(&m, "weir_request_duration_seconds_count{route=\"grpc\",version=\"stable\"}");
    assert_eq!(latencies, Some(6.0), "only the 6 unary calls have a latency: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weirs_own_errors_are_valid_grpc_statuses() {
    // The upstream is down: UNAVAILABLE from weir, not an HTTP 502.
    let dead = support::refused_addr().await;
    let weir = Weir::start(&yaml(dead.addr, "")).await;
    let r = call(weir.addr, "Bet", "hello", 10.0).await;
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    assert!(r["details"].as_str().unwrap().starts_with("weir: upstream"), "{r}");

    // The upstream is too slow for the upstream's request_timeout (2 s):
    // DEADLINE_EXCEEDED from weir.
    let server = Server::start();
    let weir = Weir::start(&yaml(server.addr, "")).await;
    let r = call(weir.addr, "Bet", "sleep:3000", 10.0).await;
    assert_eq!(r["code"], "DEADLINE_EXCEEDED", "{r}");
    assert!(r["details"].as_str().unwrap().contains("weir"), "{r}");
    support::wait_metric(
        weir.admin,
        "weir_grpc_responses_total{route=\"grpc\",version=\"stable\",grpc_status=\"DEADLINE_EXCEEDED\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_chooses_which_codes_are_errors() {
    let server = Server::start();
    let weir = Weir::start(&yaml(server.addr, "    grpc: {error_codes: [NOT_FOUND]}\n")).await;
    for body in ["fail:NOT_FOUND", "fail:UNAVAILABLE", "ok"] {
        call(weir.addr, "Bet", body, 10.0).await;
    }
    support::wait_metric(weir.admin, "weir_requests_total{route=\"grpc\",version=\"stable\",code=\"200\"}", 3.0).await;
    let (_, _, body) = support::get(&support::client(), &format!("http://{}/routes/grpc", weir.admin), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["stable"]["window"]["requests"].as_u64(), v["stable"]["window"]["errors"].as_u64()),
        (Some(3), Some(1))
    );
}

/// The real client's load: Bet calls with random players for `secs`.
fn load(addr: std::net::SocketAddr, secs: u32) -> tokio::process::Child {
    tokio::process::Command::new("python3")
        .args([PEER, "load", &addr.to_string(), &secs.to_string(), "6"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Issue 34: a canary answering UNAVAILABLE on 5 % of calls is rolled
/// back by test E, with a journal sentence that names the code; one
/// answering NOT_FOUND on 5 % (the caller's fault) is not, over at least as
/// many calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_with_unavailable_is_rolled_back_and_one_with_not_found_is_not() {
    let analysed = |stable: std::net::SocketAddr, canary: std::net::SocketAddr| {
        format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
             upstreams:\n  v1: {{endpoints: [\"{stable}\"], protocol: h2c}}\n  v2: {{endpoints: [\"{canary}\"], protocol: h2c}}\n\
             routes:\n  - name: grpc\n    stable: {{upstream: v1, revision: \"1\"}}\n    canary: {{upstream: v2, revision: \"2\"}}\n\
             \x20   weight: 50\n    sticky: {{keys: [\"header:x-player-id\"]}}\n    analysis: {{interval: 200ms, window: 2s}}\n"
        )
    };
    let (stable, canary) = (Server::start(), Server::failing("20:UNAVAILABLE"));
    let weir = Weir::start(&analysed(stable.addr, canary.addr)).await;
    let mut driver = load(weir.addr, 40);
    let (ok, v) =
        support::wait_route(weir.admin, "grpc", Duration::from_secs(40), |v| v["state"] == "rolled_back").await;
    let _ = driver.kill().await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "error_rate", "{v}");
    let m = support::metrics(weir.admin).await;
    let canary_calls: f64 = ["OK", "UNAVAILABLE"]
        .iter()
        .filter_map(|c| {
            metric(&m, &format!("weir_grpc_responses_total{{route=\"grpc\",version=\"canary\",grpc_status=\"{c}\"}}"))
        })
        .sum();
    let line = support::journal(&weir.dir.path().join("weir-state"))
        .into_iter()
        .find(|e| e["route"] == "grpc" && e["event"] == "rollback")
        .unwrap();
    let why = line["why"].as_str().unwrap();
    println!("rolled back after {canary_calls} canary calls: {why}");
    assert!(why.contains("gRPC codes counted as errors: canary UNAVAILABLE"), "{why}");

    // NOT_FOUND is the caller's: the same share of it never rolls back.
    let (stable, canary) = (Server::start(), Server::failing("20:NOT_FOUND"));
    let weir = Weir::start(&analysed(stable.addr, canary.addr)).await;
    let mut driver = load(weir.addr, 8);
    let out = tokio::time::timeout(Duration::from_secs(30), async {
        let mut text = String::new();
        use tokio::io::AsyncReadExt;
        driver.stdout.take().unwrap().read_to_string(&mut text).await.unwrap();
        text
    })
    .await
    .unwrap();
    let done: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let m = support::wait_metric(weir.admin, "weir_rollout_state{route=\"grpc\",state=\"rolled_back\"}", 1.0).await;
    let not_found =
        metric(&m, "weir_grpc_responses_total{route=\"grpc\",version=\"canary\",grpc_status=\"NOT_FOUND\"}").unwrap();
    let calls = metric(&m, "weir_grpc_responses_total{route=\"grpc\",version=\"canary\",grpc_status=\"OK\"}").unwrap()
        + not_found;
    println!("NOT_FOUND canary: {calls} calls ({not_found} NOT_FOUND), client saw {done}");
    assert!(calls >= canary_calls, "as many canary calls as the first run took: {calls} < {canary_calls}");
    let v = support::route_view(weir.admin, "grpc").await;
    assert_ne!(v["state"], "rolled_back", "{v}");
}

/// `grpc-timeout` is the call's deadline: a call that takes 1 s, sent
/// with `grpc-timeout: 300m` through an upstream whose `request_timeout`
/// is 2 s, is answered DEADLINE_EXCEEDED by weir (without the header the
/// same call succeeds). Sent by hyper's HTTP/2 client so that the header is
/// exactly what the test says and the client itself never gives up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_is_the_calls_deadline() {
    use http_body_util::BodyExt;
    let server = Server::start();
    let weir = Weir::start(&yaml(server.addr, "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let frame = |msg: &[u8]| {
        let mut b = vec![0u8];
        b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        b.extend_from_slice(msg);
        bytes::Bytes::from(b)
    };
    let send = |timeout: Option<&'static str>| {
        let mut req = http::Request::post(format!("http://{}/weir.test.Game/Bet", weir.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        h2.request(req.body(http_body_util::Full::new(frame(b"sleep:1000"))).unwrap())
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), send(Some("300m"))).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED: {:?}", resp.headers());
    assert_eq!(resp.headers()["x-weir-error"], "upstream_timeout");

    let resp = tokio::time::timeout(Duration::from_secs(10), send(None)).await.unwrap().unwrap();
    let parts = resp.into_body().collect().await.unwrap();
    let trailers = parts.trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").map(|v| v.to_str().unwrap()), Some("0"), "{trailers:?}");
}

/// A throwaway CA `ca` in `dir` (made once) and a leaf `leaf` for localhost and
/// 127.0.0.1 signed by it, made with the openssl CLI.
fn make_certs(dir: &std::path::Path, ca: &str, leaf: &str) {
    let sh = |cmd: String| {
        let out = Command::new("sh").arg("-c").arg(&cmd).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    if !dir.join(format!("{ca}.crt")).exists() {
        sh(format!(
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {ca}.key -out {ca}.crt \
         -days 1 -subj /CN={ca} 2>/dev/null"
        ));
    }
    sh(format!(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {leaf}.key -out {leaf}.csr \
         -subj /CN=localhost 2>/dev/null && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > {leaf}.ext && \
         openssl x509 -req -in {leaf}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 1 \
         -extfile {leaf}.ext -out {leaf}.crt 2>/dev/null"
    ));
}

/// issue 34 item 4: HTTP/2 over TLS to a real gRPC server (grpcio's TLS,
/// ALPN h2): verified against the configured CA; a server whose
/// certificate another CA signed is refused (UNAVAILABLE to the client,
/// counted as a connect error); a server that requires a client
/// certificate refuses weir without one and takes it with one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_verified_refused_on_a_wrong_ca_and_mutual_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), "ca", "server");
    make_certs(dir.path(), "other", "stranger");
    make_certs(dir.path(), "ca", "client");
    let p = |f: &str| dir.path().join(f).display().to_string();
    let tls_yaml = |addr: std::net::SocketAddr, tls: String| {
        format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
             upstreams:\n  game: {{endpoints: [\"{addr}\"], protocol: h2, tls: {{{tls}}}}}\n\
             routes:\n  - name: grpc\n    stable: {{upstream: game}}\n"
        )
    };
    let server = Server::tls(&p("server.crt"), &p("server.key"), None);
    std::fs::copy(p("ca.crt"), p("trust.crt")).unwrap();
    let weir =
        Weir::start(&tls_yaml(server.addr, format!("ca_file: \"{}\", server_name: localhost", p("trust.crt")))).await;
    let r = call(weir.addr, "Bet", "over tls", 10.0).await;
    assert_eq!((r["code"].as_str(), r["replies"][0].as_str()), (Some("OK"), Some("over tls")), "{r}");

    // The CA file is replaced (another CA) with weir.yaml unchanged: the
    // reload reads it again, and the server is no longer trusted; put back,
    // it is again.
    std::fs::copy(p("other.crt"), p("trust.crt")).unwrap();
    weir.handle.reloader.reload("test", false).unwrap();
    assert_eq!(call(weir.addr, "Bet", "x", 10.0).await["code"], "UNAVAILABLE", "the rotated CA is in force");
    std::fs::copy(p("ca.crt"), p("trust.crt")).unwrap();
    weir.handle.reloader.reload("test", false).unwrap();
    assert_eq!(call(weir.addr, "Bet", "x", 10.0).await["code"], "OK", "and rotated back");

    // Signed by another CA: refused, a connect failure of the version.
    let stranger = Server::tls(&p("stranger.crt"), &p("stranger.key"), None);
    let weir = Weir::start(&tls_yaml(stranger.addr, format!("ca_file: \"{}\"", p("ca.crt")))).await;
    let r = call(weir.addr, "Bet", "x", 10.0).await;
    assert_eq!(r["code"], "UNAVAILABLE", "{r}");
    let m = support::wait_metric(
        weir.admin,
        "weir_grpc_responses_total{route=\"grpc\",version=\"stable\",grpc_status=\"UNAVAILABLE\"}",
        1.0,
    )
    .await;
    assert!(
        metric(&m, "weir_upstream_errors_total{route=\"grpc\",version=\"stable\",kind=\"connect\"}").unwrap() >= 1.0,
        "{m}"
    );

    // Mutual TLS: no client certificate, refused; with one, served.
    let mutual = Server::tls(&p("server.crt"), &p("server.key"), Some(&p("ca.crt")));
    let weir = Weir::start(&tls_yaml(mutual.addr, format!("ca_file: \"{}\"", p("ca.crt")))).await;
    assert_eq!(call(weir.addr, "Bet", "x", 10.0).await["code"], "UNAVAILABLE");
    let weir = Weir::start(&tls_yaml(
        mutual.addr,
        format!(
            "ca_file: \"{}\", client_cert_file: \"{}\", client_key_file: \"{}\"",
            p("ca.crt"),
            p("client.crt"),
            p("client.key")
        ),
    ))
    .await;
    let r = call(weir.addr, "Bet", "mutual", 10.0).await;
    assert_eq!((r["code"].as_str(), r["replies"][0].as_str()), (Some("OK"), Some("mutual")), "{r}");
}

/// Stickiness by metadata and segments work for gRPC calls as for HTTP
/// (the metadata are headers), and the shadow mirrors unary calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_stick_by_metadata_follow_segments_and_are_mirrored() {
    let stable = Server::start();
    // Every Bet call on canary fails with a code of its own: who answered shows.
    let canary = Server::failing("1:FAILED_PRECONDITION");
    let shadow = Server::start();
    let config = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\"], protocol: h2c}}\n  v2: {{endpoints: [\"{}\"], protocol: h2c}}\n\
         \x20 mirror: {{endpoints: [\"{}\"], protocol: h2c}}\n\
         routes:\n  - name: grpc\n    stable: {{upstream: v1}}\n    canary: {{upstream: v2}}\n    weight: 50\n\
         \x20   sticky: {{keys: [\"header:x-player-id\"]}}\n\
         \x20   segments: [{{name: sweden, match: {{header: {{x-market: SE}}}}, weight: 100}}]\n\
         \x20   shadow: {{upstream: mirror, percent: 100, methods: [POST]}}\n",
        stable.addr, canary.addr, shadow.addr
    );
    let weir = Weir::start(&config).await;
    let version = |r: &serde_json::Value| match r["code"].as_str() {
        Some("OK") => "stable",
        Some("FAILED_PRECONDITION") => "canary",
        _ => panic!("unexpected outcome {r}"),
    };
    let mut seen = std::collections::BTreeSet::new();
    for p in 0..20 {
        let player = format!("player-{p}");
        let mut versions = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let r = support::grpc::call_with(weir.addr, "Bet", "x", 10.0, &[("x-player-id", &player)]).await;
            versions.insert(version(&r));
        }
        assert_eq!(versions.len(), 1, "{player} moved between versions: {versions:?}");
        seen.extend(versions);
    }
    assert_eq!(seen.len(), 2, "20 players at 50 % all on one version: {seen:?}");
    // The segment by metadata sends Swedish players to canary, whatever their bucket.
    for p in 0..5 {
        let player = format!("swede-{p}");
        let r = support::grpc::call_with(weir.addr, "Bet", "x", 10.0, &[("x-player-id", &player), ("x-market", "SE")])
            .await;
        assert_eq!(version(&r), "canary", "{r}");
    }
    // Every one of the 65 unary calls was mirrored, and the shadow answered.
    let m = support::wait_metric(weir.admin, "weir_shadow_requests_total{route=\"grpc\",outcome=\"ok\"}", 65.0).await;
    assert_eq!(metric(&m, "weir_shadow_requests_total{route=\"grpc\",outcome=\"error\"}"), Some(0.0), "{m}");
}

/// Active health over HTTP/2: gRPC's own health service (grpcio's
/// `grpc_health.v1` servicer) asked for `weir.test.Game` in h2c and in h2
/// over verified TLS. An endpoint whose service turns NOT_SERVING is taken
/// out of service (no call reaches it) and comes back once SERVING again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_take_a_not_serving_endpoint_out_over_h2c_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), "ca", "server");
    let p = |f: &str| dir.path().join(f).display().to_string();
    for tls in [false, true] {
        let start = || if tls { Server::tls(&p("server.crt"), &p("server.key"), None) } else { Server::start() };
        let (mut well, mut sick) = (start(), start());
        let protocol = if tls {
            format!("protocol: h2, tls: {{ca_file: \"{}\", server_name: localhost}}", p("ca.crt"))
        } else {
            "protocol: h2c".to_owned()
        };
        let weir = Weir::start(&format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
             upstreams:\n  game: {{endpoints: [\"{}\", \"{}\"], {protocol}, retry: {{attempts: 0}},\n\
             \x20   health: {{passive: {{consecutive_failures: 0}},\n\
             \x20     active: {{grpc_service: weir.test.Game, interval: 300ms, timeout: 300ms, healthy: 2, unhealthy: 2}}}}}}\n\
             routes:\n  - name: grpc\n    stable: {{upstream: game}}\n",
            well.addr, sick.addr
        ))
        .await;
        let limit = Duration::from_secs(15);
        let (w, s) = (well.addr.to_string(), sick.addr.to_string());
        for a in [&w, &s] {
            let r = support::wait_endpoint(weir.admin, a, ("healthy", "passing"), limit).await;
            assert!(r.is_ok(), "tls {tls}: the check never passed on {a}: {r:?}");
        }
        assert_eq!(sick.tell("NOT_SERVING"), "set NOT_SERVING");
        let r = support::wait_endpoint(weir.admin, &s, ("ejected", "failing"), limit).await;
        assert!(r.is_ok(), "tls {tls}: NOT_SERVING never took the endpoint out: {r:?}");

        let (before_well, before_sick) = (well.calls(), sick.calls());
        for i in 0..6 {
            let r = call(weir.addr, "Bet", &format!("c{i}"), 10.0).await;
            assert_eq!(r["code"], "OK", "tls {tls}: {r}");
        }
        assert_eq!(sick.calls(), before_sick, "tls {tls}: a call reached the endpoint out of service");
        assert_eq!(well.calls(), before_well + 6, "tls {tls}");

        assert_eq!(sick.tell("SERVING"), "set SERVING");
        let r = support::wait_endpoint(weir.admin, &s, ("healthy", "passing"), limit).await;
        assert!(r.is_ok(), "tls {tls}: SERVING never brought it back: {r:?}");
    }
}
