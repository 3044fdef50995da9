//! The admin API over real sockets: per-version windows and metrics reflect
//! known traffic, /metrics passes promtool, /ready flips while draining,
//! /config redacts secrets, /explain answers like the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Upstream, Weir, client, config, get};

const ROUTE: &str = r#"  - name: app
    stable: {upstream: v1, revision: "1.0"}
    canary: {upstream: v2, revision: "2.0"}
    weight: 10
    sticky: {keys: ["header:x-player-id"], cookie: {name: wb, secret_file: "secret"}}
    override: {header: x-weir-override}
"#;

async fn admin_get(weir: &Weir, path: &str) -> (u16, String) {
    let (status, _, body) = get(&client(), &format!("http://{}{}", weir.admin, path), &[]).await;
    (status.as_u16(), body)
}

async fn start(s: &Upstream, c: &Upstream) -> Weir {
    let dir = tempfile::tempdir().unwrap();
    let text = config(s.addr, c.addr, ROUTE);
    // The secret lives next to the config file.
    let weir_dir = dir.path().to_path_buf();
    std::fs::write(weir_dir.join("secret"), "k3y").unwrap();
    std::fs::write(weir_dir.join("weir.yaml"), &text).unwrap();
    let snapshot = weir::config::load(&weir_dir.join("weir.yaml")).unwrap();
    let handle = weir::app::start(weir_dir.join("weir.yaml"), snapshot).await.unwrap();
    Weir { addr: handle.listen[0], admin: handle.admin, handle, dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_metrics_report_a_slow_failing_canary() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.errors_per_100.store(3, Ordering::Relaxed);
    c.delay_ms.store(50, Ordering::Relaxed);
    let weir = start(&s, &c).await;
    let http = client();
    let mut tasks = Vec::new();
    for t in 0..10 {
        let (http, url) = (http.clone(), weir.url("/"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                get(&http, &url, &[("x-weir-override", "canary")]).await;
                get(&http, &url, &[("x-weir-override", "stable"), ("x-n", &t.to_string())]).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (status, body) = admin_get(&weir, "/routes/app").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let canary = &v["canary"]["window"];
    let stable = &v["stable"]["window"];
    assert_eq!(canary["requests"], 400);
    assert_eq!(canary["errors"], 12, "3 % of 400: {canary}");
    assert!((canary["error_percent"].as_f64().unwrap() - 3.0).abs() < 1e-9);
    let p50 = canary["p50_ms"].as_f64().unwrap();
    let p99 = canary["p99_ms"].as_f64().unwrap();
    // 50 ms upstream delay; 2 significant figures (≤1 %) plus proxy overhead.
    assert!((49.5..80.0).contains(&p50), "canary p50 {p50}");
    assert!((49.5..150.0).contains(&p99), "canary p99 {p99}");
    assert_eq!(stable["requests"], 400);
    assert_eq!(stable["errors"], 0);
    assert!(stable["p99_ms"].as_f64().unwrap() < 49.0, "{stable}");
    assert_eq!(v["weight"]["config"], 10.0);
    assert_eq!(v["canary"]["revision"], "2.0");
    assert_eq!(v["state"], "steady");

    let (_, text) = admin_get(&weir, "/metrics").await;
    assert!(text.contains("weir_requests_total{route=\"app\",version=\"canary\",code=\"200\"} 388"), "{text}");
    assert!(text.contains("weir_requests_total{route=\"app\",version=\"canary\",code=\"500\"} 12"));
    assert!(text.contains("weir_requests_total{route=\"app\",version=\"stable\",code=\"200\"} 400"));
    assert!(text.contains("weir_request_duration_seconds_count{route=\"app\",version=\"canary\"} 400"));
    assert!(text.contains("weir_routing_decisions_total{route=\"app\",version=\"canary\",reason=\"override\"} 400"));
    assert!(text.contains("weir_config_generation 1"));
    assert!(text.contains("weir_build_info{version=\""));
    // Canary latencies (≥ 50 ms) are all above the 0.05 s bucket's lower neighbour.
    assert!(text.contains("weir_request_duration_seconds_bucket{route=\"app\",version=\"canary\",le=\"0.025\"} 0"));

    // promtool (Debian package `prometheus`, installed by .ci/run) validates the exposition.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool must be installed (.ci/run installs the prometheus package)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_fallback_counts_against_the_canary() {
    let s = Upstream::start("stable").await;
    let dead_guard = support::refused_addr().await;
    let dead = dead_guard.addr;
    let weir = Weir::start(&config(
        s.addr,
        dead,
        "  - {name: app, stable: {upstream: v1}, canary: {upstream: v2}, weight: 100}\n",
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(get(&client(), &weir.url("/"), &[]).await.2, "stable");
    }
    let v: serde_json::Value = serde_json::from_str(&admin_get(&weir, "/routes/app").await.1).unwrap();
    assert_eq!(v["canary"]["window"]["errors"], 20);
    assert_eq!(v["stable"]["window"]["requests"], 20);
    assert_eq!(v["stable"]["window"]["errors"], 0);
    let (_, text) = admin_get(&weir, "/metrics").await;
    assert!(
        text.contains("weir_upstream_errors_total{route=\"app\",version=\"canary\",kind=\"connect\"} 20"),
        "{text}"
    );
    assert!(text.contains("weir_routing_decisions_total{route=\"app\",version=\"stable\",reason=\"fallback\"} 20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_redacts_secrets_and_explain_answers() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = start(&s, &c).await;
    let (status, body) = admin_get(&weir, "/config").await;
    assert_eq!(status, 200);
    assert!(!body.contains("k3y"), "secret leaked: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["routes"][0]["sticky"]["cookie"]["secret"], "<redacted>");
    let (status, body) = admin_get(&weir, "/explain?host=a&path=/x&header=x-player-id%3A42").await;
    assert_eq!(status, 200, "{body}");
    let x: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seen = get(&client(), &weir.url("/x"), &[("x-player-id", "42")]).await.2;
    assert_eq!(x["version"], seen.as_str());
    assert_eq!(x["bucket_source"], "key:header:x-player-id");
    assert_eq!(admin_get(&weir, "/explain?bogus=1").await.0, 400);
    assert_eq!(admin_get(&weir, "/routes/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_503_while_draining() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&format!(
        "{}shutdown: {{delay: 2s, grace: 1s}}\n",
        config(s.addr, c.addr, ROUTE.replace(", secret_file: \"secret\"", "").as_str())
    ))
    .await;
    assert_eq!(admin_get(&weir, "/ready").await.0, 200);
    weir.handle.shutdown();
    // During shutdown.delay the listeners still accept, /ready says 503.
    assert_eq!(admin_get(&weir, "/ready").await.0, 503);
    assert_eq!(admin_get(&weir, "/live").await.0, 200);
    assert_eq!(get(&client(), &weir.url("/"), &[]).await.0, 200, "still serving during the delay");
    tokio::time::timeout(Duration::from_secs(10), weir.handle.wait()).await.expect("drain finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_without_a_token_file_are_refused_off_loopback() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let open = config(s.addr, c.addr, "  - {name: app, stable: {upstream: v1}}\n")
        .replace("admin: {address: \"127.0.0.1:0\"}", "admin: {address: \"0.0.0.0:0\"}");
    let weir = Weir::start(&open).await;
    let url = format!("http://127.0.0.1:{}/reload", weir.admin.port());
    let req = http::Request::post(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    assert_eq!(client().request(req).await.unwrap().status(), 403, "wildcard bind without token_file");
    let (status, _, _) = get(&client(), &format!("http://127.0.0.1:{}/ready", weir.admin.port()), &[]).await;
    assert_eq!(status, 200, "reads stay open");
    // Loopback bind without a token file: accepted.
    let local = Weir::start(&config(s.addr, c.addr, "  - {name: app, stable: {upstream: v1}}\n")).await;
    let req = http::Request::post(format!("http://{}/reload", local.admin))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client().request(req).await.unwrap().status(), 200);
}
