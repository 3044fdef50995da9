//! The operators' toolbox, black-box: `weir status` (plain, `--json`,
//! `--wait` and its exit codes), the stable verdict endpoint
//! `GET /routes/{name}/verdict` (with `?gate=1`), and `control: external`
//! (judged and exported, never steered by weir).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{Upstream, Weir, admin_post, client, config, get, wait_route};

fn route(extra: &str) -> String {
    format!(
        r#"  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: 10
    sticky: {{keys: ["header:x-player-id"]}}
    analysis: {{interval: 100ms, window: 2s}}
{extra}"#
    )
}

const STEPS: &str = "    progression: {steps: [10, 50], hold: 1h}\n";

/// Run `weir status ARGS` against `admin`; exit code and stdout.
async fn status(admin: std::net::SocketAddr, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.arg("status").arg("--admin").arg(format!("http://{admin}")).args(args);
    let out = tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .expect("weir status did not end")
        .unwrap()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn verdict(admin: std::net::SocketAddr, query: &str) -> (u16, Value) {
    let (status, _, body) = get(&client(), &format!("http://{admin}/routes/app/verdict{query}"), &[]).await;
    (status.as_u16(), serde_json::from_str(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_rollout_and_wait_exits_by_outcome() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &route(STEPS))).await;

    // Plain: one block per route, state, step, weight.
    let (code, out) = status(weir.admin, &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("app: progressing, step 1/2, canary 2.0 at 10% (config 10%)"), "{out}");
    // JSON for scripts: the admin API's view of the route.
    let (code, out) = status(weir.admin, &["app", "--json"]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["name"].as_str(), v["state"].as_str()), (Some("app"), Some("progressing")));
    let (code, out) = status(weir.admin, &["nope"]).await;
    assert_eq!(code, 1, "an unknown route is an error: {out}");

    // The verdict endpoint: stable shape, running and healthy.
    let (st, v) = verdict(weir.admin, "").await;
    assert_eq!(st, 200);
    assert_eq!(v["api_version"], 1);
    assert_eq!(
        (v["outcome"].as_str(), v["done"].as_bool(), v["healthy"].as_bool()),
        (Some("running"), Some(false), Some(true))
    );
    assert_eq!(
        (v["revision"].as_str(), v["control"].as_str(), v["weight"].as_f64()),
        (Some("2.0"), Some("weir"), Some(10.0))
    );
    assert_eq!(verdict(weir.admin, "?gate=1").await.0, 200);

    // Still running at the timeout: exit 2, within the bound.
    let started = std::time::Instant::now();
    let (code, out) = status(weir.admin, &["app", "--wait", "--timeout", "1s", "--interval", "200ms"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("app: progressing"), "progress lines: {out}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // Promoted by hand through both steps: exit 0.
    for _ in 0..2 {
        assert_eq!(admin_post(weir.admin, "/routes/app/promote").await.0, 200);
    }
    let (code, out) = status(weir.admin, &["app", "--wait", "--timeout", "30s", "--interval", "100ms"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with("app: promoted"), "{out}");
    let (_, v) = verdict(weir.admin, "").await;
    assert_eq!((v["outcome"].as_str(), v["done"].as_bool()), (Some("promoted"), Some(true)));

    // Rolled back: exit 1, and the gate answers 503.
    assert_eq!(admin_post(weir.admin, "/routes/app/rollback").await.0, 200);
    let (code, out) = status(weir.admin, &["app", "--wait", "--timeout", "30s"]).await;
    assert_eq!(code, 1, "{out}");
    let (st, v) = verdict(weir.admin, "?gate=1").await;
    assert_eq!(st, 503);
    assert_eq!((v["healthy"].as_bool(), v["rollback_reason"].as_str()), (Some(false), Some("admin")));
    let (code, out) = status(weir.admin, &["app"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("rolled back: admin"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_external_judges_but_never_steers() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let yaml = config(s.addr, c.addr, &route(&format!("{STEPS}    control: external\n")));
    let weir = Weir::start(&yaml).await;
    // A broken canary: weir's own control would roll it back at once.
    c.status.store(500, std::sync::atomic::Ordering::Relaxed);
    let http = client();
    let (ok, v) = {
        let mut seen = (false, Value::Null);
        for round in 0..20 {
            for i in 0..100 {
                get(&http, &weir.url("/"), &[("x-player-id", &format!("r{round}p{i}"))]).await;
            }
            seen = wait_route(weir.admin, "app", Duration::from_millis(300), |v| {
                v["verdicts"].as_array().is_some_and(|vs| vs.iter().any(|x| x["verdict"] == "fail"))
            })
            .await;
            if seen.0 {
                break;
            }
        }
        seen
    };
    assert!(ok, "the judge said fail: {v}");
    // Judged, not acted on: still progressing at the first step, canary served.
    assert_eq!((v["state"].as_str(), v["control"].as_str()), (Some("progressing"), Some("external")), "{v}");
    assert!(v["rolled_back"].is_null());
    let (st, verdict_now) = verdict(weir.admin, "?gate=1").await;
    assert_eq!(st, 503, "the outside controller is told: {verdict_now}");
    assert_eq!(verdict_now["healthy"], false);
    c.clear();
    for i in 0..100 {
        get(&http, &weir.url("/"), &[("x-player-id", &format!("after{i}"))]).await;
    }
    assert!(c.count() > 0, "the canary still gets its share until the outside controller acts");
    // The outside controller steers through the admin API.
    assert_eq!(admin_post(weir.admin, "/routes/app/rollback").await.0, 200);
    let (_, v) = verdict(weir.admin, "").await;
    assert_eq!(v["outcome"], "rolled_back");
}

/// Run `weir journal verify PATH`: exit code and stdout.
fn verify(path: &std::path::Path) -> (i32, String) {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["journal", "verify"]).arg(path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_is_a_hash_chain_and_verify_finds_the_first_tampered_line() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    let state = dir.path().join("weir-state");
    // Rotate at the smallest size allowed, so the chain crosses files.
    let yaml = config(s.addr, c.addr, &route(STEPS)).replace("routes:", "journal: {rotate_size: 64KiB}\nroutes:");
    std::fs::write(&cfg, yaml).unwrap();
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    let http = client();
    // Verdicts every 100 ms while traffic flows: about 1 KB of journal each.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let current_lines = || std::fs::read_to_string(state.join("journal.jsonl")).map_or(0, |t| t.lines().count());
    while weir::journal::rotated_journals(&state).is_empty() || current_lines() < 6 {
        assert!(std::time::Instant::now() < deadline, "no rotation within 60 s");
        for i in 0..20 {
            get(&http, &format!("http://{addr}/"), &[("x-player-id", &format!("p{i}"))]).await;
        }
        let _ = support::route_view(admin, "app").await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (code, out) = verify(&state);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("journal intact") && !out.contains(" 1 file(s)") && out.contains("matches state.json"),
        "{out}"
    );
    let journal = state.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("journal_rotated"), "the new file starts by naming the old one");
    assert!(lines.len() >= 4, "{}", lines.len());
    let write =
        |ls: &[&str]| std::fs::write(&journal, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    // The current file alone continues the chain from the rotated one.
    let (code, out) = verify(&journal);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("continues from seq"), "{out}");

    // An edited line: the next one no longer links.
    let edited = lines[1].replacen("\"event\":\"", "\"event\":\"x", 1);
    assert_ne!(edited, lines[1]);
    write(&[&[lines[0], edited.as_str()][..], &lines[2..]].concat());
    let (code, out) = verify(&state);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("journal.jsonl line 3") && out.contains("edited"), "{out}");

    // A removed line.
    write(&[&lines[..1], &lines[2..]].concat());
    let (code, out) = verify(&state);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("journal.jsonl line 2") && out.contains("removed"), "{out}");

    // Reordered lines.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    write(&swapped);
    assert_eq!(verify(&state).0, 1);

    // Lines cut from the end: state.json still names the newest.
    write(&lines[..lines.len() - 1]);
    let (code, out) = verify(&state);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at its end"), "{out}");

    // Put back whole, it verifies again.
    write(&lines);
    assert_eq!(verify(&state).0, 0);
}
