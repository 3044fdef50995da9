//! Canary judgement, progression and rollback end to end (judgement.md):
//! real upstreams that turn bad (or stay healthy with a heavy tail, or fail
//! together), weir judging them with its evidence tests, what the upstreams
//! receive afterwards, and the journal and state on disk.

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

/// Metrics text of the admin listener.
async fn metrics(weir: &Weir) -> String {
    get(&client(), &format!("http://{}/metrics", weir.admin), &[]).await.2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_with_five_percent_errors_is_rolled_back_by_test_e() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.errors_per_100.store(5, Ordering::Relaxed);
    let weir = Weir::start(&config(s.addr, c.addr, &route("interval: 200ms, window: 2s", ""))).await;
    let load = Load::start(weir.url("/"), 6);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "error_rate");
    assert_eq!(v["weight"]["effective"], 0.0);
    assert_eq!(v["weight"]["config"], 50.0, "the config weight is untouched");
    let last = v["verdicts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["verdict"].as_str(), last["test"].as_str()), (Some("fail"), Some("E")), "{v}");

    // The journal: the rollback names test E, its e-value against its
    // threshold, the counts, and a sentence; no fail before it.
    let lines = app_lines(&state_dir(&weir));
    let rb = lines.iter().position(|e| e["event"] == "rollback").expect("no rollback line");
    let fails = lines[..rb].iter().filter(|e| e["verdict"] == "fail").count();
    assert_eq!(fails, 1, "one fail, rolled back at once");
    let line = &lines[rb];
    assert_eq!((line["actor"].as_str(), line["reason"].as_str()), (Some("auto"), Some("error_rate")));
    assert_eq!((line["weight"]["from"].as_f64(), line["weight"]["to"].as_f64()), (Some(50.0), Some(0.0)));
    let fired = &line["inputs"]["fired"];
    assert_eq!(fired["test"], "E", "{line}");
    assert!(fired["e_value"].as_f64().unwrap() >= fired["threshold"].as_f64().unwrap(), "{line}");
    assert_eq!(
        fired["threshold"].as_f64().unwrap().round(),
        200.0,
        "alpha 1 % over 2 tests (E, R), the mixture over start times fires at K/α: {line}"
    );
    let why = line["why"].as_str().unwrap();
    assert!(why.starts_with("test E fired") && why.contains("canary errors"), "{why}");
    let canary = &line["inputs"]["since_revision"]["canary"];
    assert!(canary["errors"].as_u64().unwrap() >= 1 && canary["error_percent"].as_f64().unwrap() > 2.0, "{line}");
    assert_eq!(line["inputs"]["since_revision"]["stable"]["errors"], 0, "{line}");
    assert_eq!(line["config_sha256"].as_str().map(str::len), Some(64));

    everyone_on_stable(&weir, &s, &c).await;
    let m = metrics(&weir).await;
    assert!(m.contains("weir_rollbacks_total{route=\"app\",reason=\"error_rate\"} 1"), "{m}");
    assert!(m.contains("weir_rollout_state{route=\"app\",state=\"rolled_back\"} 1"));
    assert!(m.contains("weir_analysis_verdicts_total{route=\"app\",verdict=\"fail\"} 1"), "{m}");
    assert!(m.contains("weir_analysis_evidence{route=\"app\",test=\"E\",scope=\"revision\"}"), "{m}");
    assert!(m.contains("weir_analysis_evidence_threshold{route=\"app\",test=\"E\",scope=\"weighted\"} 200"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slower_canary_is_rolled_back_by_a_latency_test() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    s.delay_ms.store(2, Ordering::Relaxed);
    c.delay_ms.store(30, Ordering::Relaxed);
    let analysis = "interval: 200ms, window: 2s, warmup: 0s";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, ""))).await;
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "not rolled back: {v}");
    assert_eq!(v["rolled_back"]["reason"], "latency_ratio", "{v}");
    let lines = app_lines(&state_dir(&weir));
    let rb = lines.iter().find(|e| e["event"] == "rollback").unwrap();
    let test = rb["inputs"]["fired"]["test"].as_str().unwrap();
    assert_eq!(test, "R", "{rb}");
    // The sentence says where canary sits in stable's distribution.
    let why = rb["why"].as_str().unwrap();
    assert!(why.contains("percentile on average, 50th expected"), "{why}");
    assert!(rb["inputs"]["thresholds"]["stable_p50_ms"].as_f64().unwrap() > 0.0, "frozen lines journaled: {rb}");
    assert_eq!(rb["inputs"]["since_revision"]["canary"]["errors"], 0, "no errors: latency alone decided");
    everyone_on_stable(&weir, &s, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_canary_with_heavy_tailed_latency_is_promoted_not_rolled_back() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    for u in [&s, &c] {
        u.heavy_tail_ms.store(4, Ordering::Relaxed);
        u.errors_per_100.store(1, Ordering::Relaxed);
    }
    let analysis = "interval: 200ms, window: 2s, warmup: 0s, max_error_rate: 5";
    let progression = "    progression: {steps: [10, 25, 50], hold: 2s}\n";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, progression))).await;
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(45), |v| v["state"] == "promoted").await;
    load.stop().await;
    assert!(ok, "not promoted: {v}");
    let lines = app_lines(&state_dir(&weir));
    let verdicts: Vec<&str> =
        lines.iter().filter(|e| e["event"] == "verdict").map(|e| e["verdict"].as_str().unwrap()).collect();
    assert!(verdicts.len() >= 20, "{verdicts:?}");
    assert!(!verdicts.contains(&"fail"), "{verdicts:?}");
    assert!(!lines.iter().any(|e| e["event"] == "rollback"));
    // The evidence is there to see, per test, against its threshold.
    let tests: Vec<&str> =
        v["evidence"]["tests"].as_array().unwrap().iter().map(|t| t["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["E", "R", "G_error"], "{v}");
    assert!(v["evidence"]["since_revision"]["canary"]["requests"].as_u64().unwrap() > 100, "{v}");
}

/// Stable (and the canary, if `both`) answering 10 % errors under a 1 %
/// error SLO, with load on, until the route is held.
async fn held_by_an_outage(both: bool) -> (Upstream, Upstream, Weir, Load, serde_json::Value) {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    s.errors_per_100.store(10, Ordering::Relaxed);
    if both {
        c.errors_per_100.store(10, Ordering::Relaxed);
    }
    let analysis = "interval: 200ms, window: 2s, max_error_rate: 1";
    let progression = "    progression: {steps: [20, 50], hold: 1s}\n";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, progression))).await;
    let load = Load::start(weir.url("/"), 6);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| v["state"] == "held").await;
    assert!(ok, "never held: {v}");
    (s, c, weir, load, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_outage_holds_and_rolls_nothing_back() {
    let (s, c, weir, load, v) = held_by_an_outage(true).await;
    assert_eq!(v["weight"]["effective"], 20.0, "no step while held");
    let last = v["verdicts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["held_by"], serde_json::json!(["G_error"]), "{v}");
    assert!(last["reason"].as_str().unwrap().starts_with("hold: stable breaks the SLO too"), "{v}");
    assert!(metrics(&weir).await.contains("weir_rollout_state{route=\"app\",state=\"held\"} 1"));
    // Hold it for a while: still no rollback, still no step.
    let (rolled, v) = wait_route(weir.admin, "app", Duration::from_secs(4), |v| v["state"] == "rolled_back").await;
    assert!(!rolled, "an innocent canary was rolled back: {v}");
    assert_eq!(v["weight"]["effective"], 20.0);
    // The outage ends: the hold lifts and progression goes on.
    for u in [&s, &c] {
        u.errors_per_100.store(0, Ordering::Relaxed);
    }
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| v["weight"]["effective"] == 50.0).await;
    load.stop().await;
    assert!(ok, "did not step after the outage: {v}");
    let lines = app_lines(&state_dir(&weir));
    assert!(lines.iter().any(|e| e["verdict"] == "hold" && e["inputs"]["held_by"][0] == "G_error"));
    assert!(!lines.iter().any(|e| e["event"] == "rollback"));
}

/// E's e-value since the revision started, as `/routes` shows it.
fn e_revision(v: &serde_json::Value) -> Option<f64> {
    v["evidence"]["tests"].as_array()?.iter().find(|t| t["test"] == "E")?["e_revision"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_stable_breaks_its_slo_a_worse_canary_is_not_judged_until_stable_recovers() {
    let (s, c, weir, load, v) = held_by_an_outage(false).await;
    // In the middle of stable's outage the canary does worse still: 40 %
    // errors against 10 %. Counted, that rolls it back within a second.
    c.errors_per_100.store(40, Ordering::Relaxed);
    let before = e_revision(&v);
    let (rolled, v) = wait_route(weir.admin, "app", Duration::from_secs(3), |v| v["state"] == "rolled_back").await;
    assert!(!rolled, "rolled back while stable was out of its SLO: {v}");
    assert_eq!(e_revision(&v), before, "E took evidence while stable was out: {v}");
    let last = v["verdicts"].as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("the tests take no evidence")), "{v}");
    // Stable recovers; the canary's own errors are judged, and roll it back.
    s.errors_per_100.store(0, Ordering::Relaxed);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "not rolled back once stable recovered: {v}");
    let lines = app_lines(&state_dir(&weir));
    let rb = lines.iter().find(|e| e["event"] == "rollback").cloned().unwrap_or_default();
    assert!(rb["why"].as_str().is_some_and(|w| w.contains("test E fired")), "{rb}");
    // The journal says which intervals the tests sat out.
    assert!(lines.iter().any(|e| e["event"] == "verdict" && e["inputs"]["sat_out"] == true), "no sat_out line");
    assert_eq!(rb["inputs"]["sat_out"], false, "the rollback stood on an interval the tests took: {rb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observe_mode_journals_a_fail_and_changes_nothing() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.status.store(500, Ordering::Relaxed);
    let weir = Weir::start(&config(s.addr, c.addr, &route("interval: 200ms, window: 2s, mode: observe", ""))).await;
    let load = Load::start(weir.url("/"), 6);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| {
        v["verdicts"].as_array().is_some_and(|a| a.iter().filter(|x| x["verdict"] == "fail").count() >= 3)
    })
    .await;
    load.stop().await;
    assert!(ok, "{v}");
    assert_eq!((v["state"].as_str(), v["weight"]["effective"].as_f64()), (Some("steady"), Some(50.0)), "{v}");
    let lines = app_lines(&state_dir(&weir));
    let would: Vec<&Value> = lines.iter().filter(|e| e["event"] == "would_rollback").collect();
    assert_eq!(would.len(), 1, "said once");
    assert_eq!(would[0]["inputs"]["fired"]["test"], "E");
    assert!(!lines.iter().any(|e| e["event"] == "rollback"));
    c.clear();
    let (_, h, _) = get(&client(), &weir.url("/"), &[("x-weir-override", "canary")]).await;
    assert_eq!(h["x-upstream"], "canary", "the canary still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_traffic_is_not_evidence() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    c.status.store(500, Ordering::Relaxed);
    let weir = Weir::start(&config(s.addr, c.addr, &route("interval: 100ms, window: 2s", ""))).await;
    let http = client();
    for _ in 0..200 {
        get(&http, &weir.url("/"), &[("x-weir-override", "canary")]).await;
    }
    for _ in 0..200 {
        get(&http, &weir.url("/"), &[("x-weir-override", "stable")]).await;
    }
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| {
        v["verdicts"].as_array().is_some_and(|a| a.len() >= 5)
    })
    .await;
    assert!(ok, "{v}");
    assert!(v["verdicts"].as_array().unwrap().iter().all(|x| x["verdict"] == "insufficient"), "{v}");
    assert_eq!(v["state"], "steady");
    assert_eq!(v["canary"]["window"]["errors"], 200, "seen and shown, just not judged");
    assert_eq!(v["evidence"]["since_revision"]["canary"]["requests"], 0, "{v}");
    // The same canary on randomised traffic is judged.
    let load = Load::start(weir.url("/"), 4);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(20), |v| v["state"] == "rolled_back").await;
    load.stop().await;
    assert!(ok, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progression_walks_every_step_then_stops_at_the_first_failing_one() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let analysis = "interval: 100ms, window: 2s";
    let progression = "    progression: {steps: [5, 20, 50, 100], hold: 300ms}\n";
    let weir = Weir::start(&config(s.addr, c.addr, &route(analysis, progression))).await;
    let v = route_view(weir.admin, "app").await;
    assert_eq!((v["state"].as_str(), v["step"].as_u64()), (Some("progressing"), Some(0)), "{v}");
    assert_eq!(v["weight"]["effective"], 5.0, "starts at the first step, not the config weight");
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(40), |v| v["state"] == "promoted").await;
    assert!(ok, "not promoted: {v}");
    assert_eq!(v["weight"]["effective"], 100.0);
    let lines = app_lines(&state_dir(&weir));
    let steps: Vec<(&str, f64, f64)> = lines
        .iter()
        .filter(|e| e["event"] == "step" || e["event"] == "promoted")
        .map(|e| {
            (e["event"].as_str().unwrap(), e["weight"]["from"].as_f64().unwrap(), e["weight"]["to"].as_f64().unwrap())
        })
        .collect();
    // Reaching a last step of 100 % is the promotion: no stable traffic is left to compare with.
    assert_eq!(steps, vec![("step", 5.0, 20.0), ("step", 20.0, 50.0), ("promoted", 50.0, 100.0)]);
    load.stop().await;

    // A new revision starts over; this one fails once it reaches 50 %.
    // (A longer hold, so the canary breaks while it is at 50 %, not after.)
    let slower = progression.replace("hold: 300ms", "hold: 3s");
    weir.install(&config(s.addr, c.addr, &route(analysis, &slower).replace("\"2.0\"", "\"3.0\"")));
    let v = route_view(weir.admin, "app").await;
    assert_eq!((v["state"].as_str(), v["weight"]["effective"].as_f64()), (Some("progressing"), Some(5.0)), "{v}");
    let load = Load::start(weir.url("/"), 8);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(40), |v| v["weight"]["effective"] == 50.0).await;
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
    assert_eq!(events, vec![("new_revision", 5.0), ("step", 20.0), ("step", 50.0), ("rollback", 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_steering_is_journaled_with_actor_and_peer() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    // No traffic and an hour of hold: only the admin steers here.
    let analysis = "interval: 100ms";
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
    config(s.addr, c.addr, &route("interval: 100ms, window: 2s", ""))
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

    // The judge has counted that traffic; its state is on disk. kill -9
    // mid-rollout, start again: the evidence carries on from there.
    let (ok, v) = wait_route(admin, "app", Duration::from_secs(20), |v| {
        v["evidence"]["since_revision"]["canary"]["requests"].as_u64().is_some_and(|n| n >= 50)
    })
    .await;
    assert!(ok, "{v}");
    let saved = |state: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap()
    };
    let counted = |doc: &Value| doc["routes"]["app"]["judge"]["scopes"][0]["totals"]["n"][0][1].as_u64().unwrap_or(0);
    let before = counted(&saved(&state));
    assert!(before >= 1, "judge state persisted: {}", saved(&state));
    // Players have sticky keys: the counted-user filters are saved beside it.
    assert_eq!(saved(&state)["routes"]["app"]["filters"], true);
    assert!(saved(&state)["routes"]["app"]["judge"]["frozen"]["tolerance"].is_number(), "the lines are kept too");
    // Count saved filters only: a save in progress has a `.bin.tmp` beside
    // them for an instant (write, fsync, rename).
    let filter_files = std::fs::read_dir(state.join("filters"))
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "bin")))
        .count();
    assert_eq!(filter_files, 1);
    kill9(&mut child);
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    let doc = saved(&state);
    assert!(counted(&doc) >= before, "restart kept the evidence: {before} then {doc}");
    assert!(canary_share(addr, &c).await > 50, "canary serves after the restart");
    let (ok, v) = wait_route(admin, "app", Duration::from_secs(20), |v| {
        v["evidence"]["since_revision"]["canary"]["requests"].as_u64().is_some_and(|n| n > before)
    })
    .await;
    assert!(ok, "evidence resumed from the saved state: {v}");

    // The canary breaks; weir rolls it back by itself.
    c.status.store(500, Ordering::Relaxed);
    let http = client();
    for i in 0..300 {
        get(&http, &format!("http://{addr}/"), &[("x-player-id", &format!("q{i}"))]).await;
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
    // Routine verdicts are short: each test's e-values and the interval's counts.
    let routine = lines.iter().find(|e| e["event"] == "verdict" && e["verdict"] != "fail").unwrap();
    let tests = routine["inputs"]["tests"].as_object().unwrap();
    assert_eq!(tests.len(), 2, "E and R: {routine}");
    assert!(tests["E"].as_array().is_some_and(|v| v.len() == 3 && v[0].is_number()), "{routine}");
    println!("routine verdict line: {} bytes", routine.to_string().len());
    assert!(routine.to_string().len() < 1200, "{} bytes: {routine}", routine.to_string().len());
    // A fail carries everything needed to redo it by hand.
    let fail = lines.iter().find(|e| e["event"] == "verdict" && e["verdict"] == "fail").unwrap();
    for k in ["requests", "errors", "error_percent"] {
        assert!(fail["inputs"]["since_revision"]["canary"][k].is_number(), "{k}: {fail}");
    }
    assert!(fail["inputs"]["tests"].as_array().is_some_and(|t| t.len() == 2), "{fail}");
    assert!(fail["inputs"]["thresholds"]["alpha"].is_number(), "{fail}");
    assert!(lines.iter().any(|e| e["event"] == "config_change" && e["actor"] == "config"), "weight edit journaled");
    assert!(lines.iter().any(|e| e["event"] == "new_revision" && e["revision"]["canary"] == "2.1"));
    let saved: Value = serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap();
    assert_eq!(saved["routes"]["app"]["revision"], "2.1");
}

/// A FIFO or a huge `state.json` (issue 32): read like every other file,
/// non-blocking and capped, so `weir run` neither hangs in `open()` nor
/// reads a gigabyte; it starts with the canary off and SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_or_huge_state_file_starts_safe_and_sigterm_still_works() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    for kind in ["fifo", "huge"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("weir-state");
        std::fs::create_dir(&state).unwrap();
        let file = state.join("state.json");
        if kind == "fifo" {
            assert!(std::process::Command::new("mkfifo").arg(&file).status().unwrap().success());
        } else {
            // Sparse: 1.2 GB on paper, nothing on disk.
            std::fs::File::create(&file).unwrap().set_len(1_200_000_000).unwrap();
        }
        let text = config(s.addr, c.addr, &route("interval: 100ms", ""))
            .replace("access_log: false", &format!("access_log: false\nstate_dir: {}", state.display()));
        std::fs::write(dir.path().join("weir.yaml"), &text).unwrap();
        // spawn_weir_admin waits (bounded) for "weir ready".
        let (mut child, _addr, admin, _out, err) = support::spawn_weir_admin(&dir.path().join("weir.yaml"));
        let v = route_view(admin, "app").await;
        assert_eq!(
            (v["state"].as_str(), v["rolled_back"]["reason"].as_str()),
            (Some("rolled_back"), Some("state_unreadable")),
            "{kind}: {v}"
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap();
        assert!(rss_kib < 200 * 1024, "{kind}: {rss_kib} KiB resident: the file was read");
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let code = loop {
            if let Some(code) = child.try_wait().unwrap() {
                break code;
            }
            assert!(std::time::Instant::now() < deadline, "{kind}: SIGTERM did not stop weir");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(code.success(), "{kind}: exit {code:?}");
        drop(err);
    }
}

/// A bucket-cookie holder is one unit of evidence, like a keyed player:
/// all its requests share one version. One heavy anonymous client on the
/// canary whose every request fails (its own fault: the same on either
/// version) is one bad unit, not hundreds, and cannot roll back a healthy
/// canary. (Counted per request, it rolled the canary back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heavy_cookie_holder_counts_once_and_cannot_roll_back_a_healthy_canary() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let yaml = config(s.addr, c.addr, &route("interval: 200ms, window: 2s", "")).replace(
        "sticky: {keys: [\"header:x-player-id\"]}",
        "sticky: {keys: [\"header:x-player-id\"], cookie: {name: wb}}",
    );
    let weir = Weir::start(&yaml).await;
    let http = client();
    // A bucket the canary serves.
    let mut cookie = None;
    for b in [1, 9999, 2500, 7500] {
        let (_, h, _) = get(&http, &weir.url("/"), &[("cookie", &format!("wb={b}"))]).await;
        if h["x-upstream"] == "canary" {
            cookie = Some(format!("wb={b}"));
            break;
        }
    }
    let cookie = cookie.expect("no canary bucket found");
    let load = Load::start(weir.url("/"), 2);
    // Anonymous visitors: each holds a bucket cookie of its own (as every
    // visitor does after its first answer), healthy on both versions.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let visitors: Vec<_> = (0..2u64)
        .map(|t| {
            let (stop, url) = (stop.clone(), weir.url("/"));
            tokio::spawn(async move {
                let http = client();
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                let mut x = 0x2545_F491_4F6C_DD1Du64 ^ t;
                for _ in 0..50_000 {
                    if stop.load(Ordering::Relaxed) || std::time::Instant::now() > deadline {
                        break;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    get(&http, &url, &[("cookie", &format!("wb={}", x % 10_000))]).await;
                }
            })
        })
        .collect();
    let before = c.count();
    for _ in 0..400 {
        let (status, _, _) = get(&http, &weir.url("/"), &[("cookie", &cookie), ("x-answer-status", "500")]).await;
        assert_eq!(status.as_u16(), 500);
    }
    assert!(c.count() >= before + 400 || route_view(weir.admin, "app").await["state"] == "rolled_back");
    // Judged past the heavy client's requests (its errors are in the
    // judge's totals), and past more players' traffic after them.
    let canary = |v: &Value, what: &str| v["evidence"]["since_revision"]["canary"][what].as_u64().unwrap_or(0);
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| {
        v["state"] == "rolled_back" || canary(v, "errors") >= 400
    })
    .await;
    assert!(ok, "{v}");
    let judged = canary(&v, "requests");
    let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(30), |v| {
        v["state"] == "rolled_back" || canary(v, "requests") >= judged + 1000
    })
    .await;
    load.stop().await;
    stop.store(true, Ordering::Relaxed);
    for v in visitors {
        v.await.unwrap();
    }
    assert!(ok, "{v}");
    assert_ne!(v["state"], "rolled_back", "one heavy cookie holder rolled back a healthy canary: {v}");
    let lines = app_lines(&state_dir(&weir));
    assert!(!lines.iter().any(|e| e["verdict"] == "fail"), "no fail at all");
}

/// The counted-user filters are lost across a restart (deleted here): the
/// judge must not get a fresh α for the same rollout. Its processes so far
/// are closed where they stood (no more evidence goes in, so they cannot
/// cross later), the evidence goes on in a new epoch, and the journal says
/// so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_its_filters_deleted_closes_the_old_processes_instead_of_starting_afresh() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    let state = dir.path().join("weir-state");
    std::fs::write(&cfg, binary_config(&s, &c, "2.0", 50)).unwrap();
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    canary_share(addr, &c).await;
    let (ok, v) = wait_route(admin, "app", Duration::from_secs(20), |v| {
        v["evidence"]["since_revision"]["canary"]["requests"].as_u64().is_some_and(|n| n >= 50)
    })
    .await;
    assert!(ok, "{v}");
    let saved = |state: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(state.join("state.json")).unwrap()).unwrap()
    };
    let ok = support::eventually(Duration::from_secs(10), || {
        saved(&state)["routes"]["app"]["filters"] == true && std::fs::read_dir(state.join("filters")).is_ok()
    })
    .await;
    assert!(ok, "filters never saved: {}", saved(&state));
    kill9(&mut child);
    let before = saved(&state)["routes"]["app"]["judge"].clone();
    let epoch = before["epoch"].as_u64().unwrap();
    assert!(before["scopes"][0]["tests"]["E"].is_object(), "{before}");
    std::fs::remove_dir_all(state.join("filters")).unwrap();

    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    let after = saved(&state)["routes"]["app"]["judge"].clone();
    assert_eq!(after["epoch"].as_u64(), Some(epoch + 1), "a new epoch: {after}");
    assert_eq!(after["closed_below"].as_u64(), Some(epoch + 1), "the old processes are closed: {after}");
    assert_eq!(after["scopes"][0]["tests"], before["scopes"][0]["tests"], "never reset to a fresh state");
    let lines = journal(&state);
    let lost = lines.iter().find(|e| e["event"] == "filters_lost").expect("no filters_lost line");
    assert_eq!((lost["route"].as_str(), lost["epoch"].as_u64()), (Some("app"), Some(epoch + 1)), "{lost}");

    // More players: evidence goes into the new epoch only.
    let counted = after["scopes"][0]["totals"]["n"][0][1].as_u64().unwrap_or(0);
    canary_share(addr, &c).await;
    let (ok, v) = wait_route(admin, "app", Duration::from_secs(20), |v| {
        v["evidence"]["since_revision"]["canary"]["requests"].as_u64().is_some_and(|n| n > counted)
    })
    .await;
    assert!(ok, "{v}");
    let ok = support::eventually(Duration::from_secs(10), || {
        let j = &saved(&state)["routes"]["app"]["judge"];
        j["scopes"]
            .as_array()
            .and_then(|s| s.last())
            .is_some_and(|s| s["epoch"] == epoch + 1 && s["tests"]["E"].is_object())
    })
    .await;
    assert!(ok, "the new epoch took no evidence: {}", saved(&state));
    let now = saved(&state)["routes"]["app"]["judge"].clone();
    assert_eq!(now["scopes"][0]["tests"], before["scopes"][0]["tests"], "a closed process takes no evidence");
    kill9(&mut child);
}
