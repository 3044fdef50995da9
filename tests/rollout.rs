//! Canary analysis, progression and rollback end to end (design §4): real
//! upstreams that turn bad, weir judging them from its own windows, what the
//! upstreams receive afterwards, and the journal and state on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Load, Upstream, Weir, admin_post, client, config, get, journal, route_view, wait_route};

fn route(analysis: &str, extra: &str) -> String {
    format!(
        r#"  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: 50
    sticky: {{keys: ["header:x-player-id"]}}
    override: {{header: x-weir-override}}
    analysis: {{{analysis}}}
{extra}"#
    )
}

fn state_dir(weir: &Weir) -> std::path::PathBuf {
    weir.dir.path().join("weir-state")
}

fn app_lines(dir: &std::path::Path) -> Vec<Value> {
    journal(dir).into_iter().filter(|e| e["route"] == "app").collect()
}

/// Nothing reaches the canary any more, pinned player, override or not.
async fn everyone_on_stable(weir: &Weir, s: &Upstream, c: &Upstream) {
    c.clear();
    let http = client();
    for i in 0..100 {
        let player = format!("p{i}");
        let (status, h, _) = get(&http, &weir.url("/"), &[("x-player-id", &player)]).await;
        assert_eq!((status.as_u16(), h["x-upstream"].to_str().unwrap()), (200, "stable"));
    }
    let (_, h, _) = get(&http, &weir.url("/"), &[("x-weir-override", "canary")]).await;
    assert_eq!(h["x-upstream"], "stable", "an override cannot reach a rolled-back canary");
    assert_eq!(c.count(), 0);
    assert!(s.count() >= 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_that_starts_failing_is_rolled_back_after_failures_consecutive_fails() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let analysis = "interval: 200ms, window: 2s, min_requests: 20, max_error_rate: 5, failures: 2";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, ""))).await;
    let load = Load::start(weir.url("/"), 6);
    // Healthy first: at least one `pass`.
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| {
        v["verdicts"].as_array().is_some_and(|a| a.iter().any(|x| x["verdict"] == "pass"))
    })
    .await;
    assert!(ok, "no pass verdict for a healthy canary: {v}");
    c.status.store(503, Ordering::Relaxed);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "error_rate");
    assert_eq!(v["weight"]["effective"], 0.0);
    assert_eq!(v["weight"]["config"], 50.0, "the config weight is untouched");

    // The journal: exactly `failures` consecutive fails, then the rollback with its inputs.
    let lines = app_lines(&state_dir(&weir));
    let rb = lines.iter().position(|e| e["event"] == "rollback").expect("no rollback line");
    let verdicts: Vec<&Value> = lines[..rb].iter().filter(|e| e["event"] == "verdict").collect();
    let tail: Vec<&str> = verdicts.iter().rev().take(3).map(|e| e["verdict"].as_str().unwrap()).collect();
    assert_eq!(&tail[..2], &["fail", "fail"], "{tail:?}");
    assert_ne!(tail.get(2), Some(&"fail"), "rolled back after 2 fails, not 3: {tail:?}");
    let line = &lines[rb];
    assert_eq!((line["actor"].as_str(), line["reason"].as_str()), (Some("auto"), Some("error_rate")));
    assert_eq!((line["weight"]["from"].as_f64(), line["weight"]["to"].as_f64()), (Some(50.0), Some(0.0)));
    let canary = &line["inputs"]["canary"];
    assert!(canary["requests"].as_u64().unwrap() >= 20, "{line}");
    assert!(canary["error_percent"].as_f64().unwrap() > 5.0, "{line}");
    for k in ["p50_ms", "p95_ms", "p99_ms"] {
        assert!(canary[k].is_number() && line["inputs"]["stable"][k].is_number(), "{k} missing: {line}");
    }
    assert_eq!(line["inputs"]["thresholds"]["max_error_rate"], 5.0);
    assert_eq!(line["config_sha256"].as_str().map(str::len), Some(64));

    everyone_on_stable(&weir, &s, &c).await;
    let (_, _, metrics) = get(&client(), &format!("http://{}/metrics", weir.admin), &[]).await;
    assert!(metrics.contains("weir_rollbacks_total{route=\"app\",reason=\"error_rate\"} 1"), "{metrics}");
    assert!(metrics.contains("weir_rollout_state{route=\"app\",state=\"rolled_back\"} 1"));
    assert!(metrics.contains("weir_canary_weight_ratio{route=\"app\",source=\"effective\"} 0"));
    assert!(!metrics.contains("weir_analysis_verdicts_total{route=\"app\",verdict=\"fail\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_slower_than_stable_is_rolled_back_for_latency_ratio() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.delay_ms.store(40, Ordering::Relaxed);
    let analysis = "interval: 200ms, window: 2s, min_requests: 20, max_error_rate: 5, max_p99_ratio: 2, failures: 2";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, ""))).await;
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "latency_ratio", "{v}");
    let lines = app_lines(&state_dir(&weir));
    let rb = lines.iter().find(|e| e["event"] == "rollback").unwrap();
    let (cp99, sp99) =
        (rb["inputs"]["canary"]["p99_ms"].as_f64().unwrap(), rb["inputs"]["stable"]["p99_ms"].as_f64().unwrap());
    assert!(cp99 > 2.0 * sp99, "canary p99 {cp99} vs stable {sp99}");
    assert_eq!(rb["inputs"]["canary"]["errors"], 0, "no errors: latency alone decided");
    everyone_on_stable(&weir, &s, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_traffic_canary_is_not_judged_before_min_requests() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.status.store(500, Ordering::Relaxed);
    let analysis = "interval: 100ms, window: 30s, min_requests: 50, max_error_rate: 1, failures: 1";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, ""))).await;
    let http = client();
    for _ in 0..10 {
        get(&http, &weir.url("/"), &[("x-weir-override", "canary")]).await;
    }
    for _ in 0..100 {
        get(&http, &weir.url("/"), &[("x-weir-override", "stable")]).await;
    }
    // Wait for a full row of verdicts taken after those requests.
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| {
        v["verdicts"].as_array().is_some_and(|a| a.len() >= 5)
    })
    .await;
    assert!(ok, "{v}");
    assert!(v["verdicts"].as_array().unwrap().iter().all(|x| x["verdict"] == "insufficient"), "{v}");
    assert_eq!(v["state"], "steady");
    assert_eq!(v["canary"]["window"]["errors"], 10);
    // The same canary with enough traffic is judged at once.
    for _ in 0..40 {
        get(&http, &weir.url("/"), &[("x-weir-override", "canary")]).await;
    }
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    assert!(ok, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progression_walks_every_step_then_stops_at_the_first_failing_one() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let analysis = "interval: 100ms, window: 2s, min_requests: 2, max_error_rate: 5, failures: 1";
    let progression = "    progression: {steps: [1, 5, 25, 100], hold: 300ms}\n";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, progression))).await;
    let v = route_view(weir.admin, "app").await;
    assert_eq!((v["state"].as_str(), v["step"].as_u64()), (Some("progressing"), Some(0)), "{v}");
    assert_eq!(v["weight"]["effective"], 1.0, "starts at the first step, not the config weight");
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(40), |v| v["state"] == "promoted").await;
    assert!(ok, "not promoted: {v}");
    assert_eq!(v["weight"]["effective"], 100.0);
    let steps: Vec<(f64, f64)> = app_lines(&state_dir(&weir))
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| (e["weight"]["from"].as_f64().unwrap(), e["weight"]["to"].as_f64().unwrap()))
        .collect();
    assert_eq!(steps, vec![(1.0, 5.0), (5.0, 25.0), (25.0, 100.0)]);

    // A new revision starts over; this one fails once it reaches 25 %.
    weir.install(&config(s.addr, c.addr, &route(analysis, progression).replace("\"2.0\"", "\"3.0\"")));
    let v = route_view(weir.admin, "app").await;
    assert_eq!((v["state"].as_str(), v["weight"]["effective"].as_f64()), (Some("progressing"), Some(1.0)), "{v}");
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(40), |v| v["weight"]["effective"] == 25.0).await;
    assert!(ok, "{v}");
    c.status.store(500, Ordering::Relaxed);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "{v}");
    assert_eq!(v["step"], 2, "stopped at the failing step");
    let lines = app_lines(&state_dir(&weir));
    let since = lines.iter().rposition(|e| e["event"] == "new_revision").unwrap();
    let after: Vec<&Value> = lines[since..].iter().filter(|e| e["event"] != "verdict").collect();
    let events: Vec<(&str, f64)> =
        after.iter().map(|e| (e["event"].as_str().unwrap(), e["weight"]["to"].as_f64().unwrap())).collect();
    assert_eq!(events, vec![("new_revision", 1.0), ("step", 5.0), ("step", 25.0), ("rollback", 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_steering_is_journaled_with_actor_and_peer() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    // min_requests too high for automation to act: only the admin steers here.
    let analysis = "interval: 100ms, min_requests: 1000000";
    let progression = "    progression: {steps: [10, 50, 100], hold: 1h}\n";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, progression))).await;
    let a = weir.admin;
    assert_eq!(admin_post(a, "/routes/app/promote").await.1["route"]["weight"]["effective"], 50.0);
    assert_eq!(admin_post(a, "/routes/app/pause").await.1["route"]["state"], "paused");
    assert_eq!(admin_post(a, "/routes/app/resume").await.1["route"]["state"], "progressing");
    let (status, v) = admin_post(a, "/routes/app/rollback").await;
    assert_eq!((status, v["route"]["state"].as_str()), (200, Some("rolled_back")));
    assert_eq!(v["route"]["rolled_back"]["reason"], "admin");
    let (status, v) = admin_post(a, "/routes/app/promote").await;
    assert_eq!(status, 409, "cannot promote a rolled-back route: {v}");
    everyone_on_stable(&weir, &s, &c).await;
    let v = admin_post(a, "/routes/app/resume").await.1;
    assert_eq!(
        (v["route"]["state"].as_str(), v["route"]["weight"]["effective"].as_f64()),
        (Some("progressing"), Some(10.0))
    );
    assert_eq!(admin_post(a, "/routes/app/kill").await.1["route"]["state"], "killed");
    let (_, h, _) = get(&client(), &weir.url("/"), &[("x-weir-override", "canary")]).await;
    assert_eq!(h["x-upstream"], "stable");
    assert_eq!(admin_post(a, "/routes/app/unkill").await.1["route"]["state"], "progressing");
    let (_, h, _) = get(&client(), &weir.url("/"), &[("x-weir-override", "canary")]).await;
    assert_eq!(h["x-upstream"], "canary");
    assert_eq!(admin_post(a, "/routes/nope/kill").await.0, 404);
    assert_eq!(admin_post(a, "/routes/app/explode").await.0, 404);

    let admin: Vec<Value> = app_lines(&state_dir(&weir)).into_iter().filter(|e| e["actor"] == "admin").collect();
    let events: Vec<&str> = admin.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["promote", "pause", "resume", "rollback", "resume", "kill", "unkill"]);
    assert!(admin.iter().all(|e| e["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_starts_with_the_canary_off() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("weir-state")).unwrap();
    std::fs::write(dir.path().join("weir-state/state.json"), b"{\"format\":1,\"routes\":{\"app\":{\"step\":").unwrap();
    let text = config(s.addr, c.addr, &route("interval: 100ms", ""));
    std::fs::write(dir.path().join("weir.yaml"), &text).unwrap();
    let snapshot = weir::config::load(&dir.path().join("weir.yaml")).unwrap();
    let handle = weir::app::start(dir.path().join("weir.yaml"), snapshot).await.unwrap();
    let weir = Weir { addr: handle.listen[0], admin: handle.admin, handle, dir };
    let v = route_view(weir.admin, "app").await;
    assert_eq!(
        (v["state"].as_str(), v["rolled_back"]["reason"].as_str()),
        (Some("rolled_back"), Some("state_unreadable"))
    );
    everyone_on_stable(&weir, &s, &c).await;
    assert!(state_dir(&weir).join("state.json.unreadable").exists(), "the bad file is kept for a human");
    let line = app_lines(&state_dir(&weir)).into_iter().find(|e| e["event"] == "rollback").unwrap();
    assert_eq!(line["reason"], "state_unreadable");
}

/// Config for the binary: fixed upstreams, the given canary revision.
fn binary_config(s: &Upstream, c: &Upstream, revision: &str, weight: u32) -> String {
    config(s.addr, c.addr, &route("interval: 100ms, window: 2s, min_requests: 5, max_error_rate: 5, failures: 1", ""))
        .replace("\"2.0\"", &format!("\"{revision}\""))
        .replace("weight: 50", &format!("weight: {weight}"))
}

async fn canary_share(addr: std::net::SocketAddr, c: &Upstream) -> usize {
    c.clear();
    let http = client();
    for i in 0..200 {
        let (status, _, _) = get(&http, &format!("http://{addr}/"), &[("x-player-id", &format!("p{i}"))]).await;
        assert_eq!(status, 200);
    }
    c.count()
}

fn kill9(child: &mut std::process::Child) {
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latch_survives_reload_and_kill_9_and_clears_on_a_new_revision() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    let state = dir.path().join("weir-state");
    std::fs::write(&cfg, binary_config(&s, &c, "2.0", 50)).unwrap();
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    assert!(canary_share(addr, &c).await > 50, "canary serves before the rollback");

    // The canary breaks; weir rolls it back by itself.
    c.status.store(500, Ordering::Relaxed);
    let http = client();
    for i in 0..40 {
        get(&http, &format!("http://{addr}/"), &[("x-weir-override", "canary"), ("x-n", &i.to_string())]).await;
    }
    let (ok, v) = wait_route(admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    assert!(ok, "{v}");
    c.status.store(200, Ordering::Relaxed);
    assert_eq!(canary_share(addr, &c).await, 0);

    // A weight edit reloads but does not un-latch.
    std::fs::write(&cfg, binary_config(&s, &c, "2.0", 80)).unwrap();
    let (status, r) = admin_post(admin, "/reload").await;
    assert_eq!((status, r["result"].as_str()), (200, Some("applied")), "{r}");
    let v = route_view(admin, "app").await;
    assert_eq!((v["state"].as_str(), v["weight"]["config"].as_f64()), (Some("rolled_back"), Some(80.0)));
    assert_eq!(canary_share(addr, &c).await, 0);

    // kill -9 and start again: still rolled back, with the same reason.
    kill9(&mut child);
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    let v = route_view(admin, "app").await;
    assert_eq!((v["state"].as_str(), v["rolled_back"]["reason"].as_str()), (Some("rolled_back"), Some("error_rate")));
    assert_eq!(canary_share(addr, &c).await, 0);

    // A new canary revision lifts the latch.
    std::fs::write(&cfg, binary_config(&s, &c, "2.1", 80)).unwrap();
    assert_eq!(admin_post(admin, "/reload").await.0, 200);
    let v = route_view(admin, "app").await;
    assert_eq!((v["state"].as_str(), v["canary"]["revision"].as_str()), (Some("steady"), Some("2.1")), "{v}");
    assert!(canary_share(addr, &c).await > 100);
    kill9(&mut child);

    // The journal survived both kills: every line is JSON, one rollback,
    // verdicts carry their inputs, the revision change is there.
    let lines = app_lines(&state);
    assert_eq!(lines.iter().filter(|e| e["event"] == "rollback").count(), 1);
    let verdict = lines.iter().find(|e| e["event"] == "verdict").unwrap();
    for k in ["requests", "errors", "error_percent", "p50_ms", "p95_ms", "p99_ms"] {
        assert!(verdict["inputs"]["canary"][k].is_number(), "{k}: {verdict}");
    }
    assert!(lines.iter().any(|e| e["event"] == "config_change" && e["actor"] == "config"), "weight edit journaled");
    assert!(lines.iter().any(|e| e["event"] == "new_revision" && e["revision"]["canary"] == "2.1"));
    let saved: Value = serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["routes"]["app"]["revision"], "2.1");
    assert!(!state.join("state.json.tmp").exists());
}
