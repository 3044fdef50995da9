//! HTTP/2 abuse (hardening.md C), driven by Python `h2`/raw frames
//! (tests/h2_abuse.py) against the weir binary: each attack ends in GOAWAY
//! or resets, never reaches the upstream beyond one request per stream,
//! and leaves weir serving with its memory back near where it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use support::{Upstream, config, spawn_weir_admin};

fn abuse(addr: SocketAddr, mode: &str) -> Value {
    let out = std::process::Command::new("timeout")
        .args(["60", "python3", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2_abuse.py")])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(mode)
        .output()
        .expect("python3 with `h2` is needed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{mode}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{mode}: {e}: {stdout}"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_floods_and_malformed_requests_end_in_goaway_or_resets_and_weir_keeps_serving() {
    let up = Upstream::start("stable").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(&cfg, config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")).unwrap();
    let (mut child, addr, _admin, _out, _err) = spawn_weir_admin(&cfg);
    let pid = child.id();
    let run = |mode: &'static str| tokio::task::spawn_blocking(move || abuse(addr, mode));

    let ok = run("ok").await.unwrap();
    assert_eq!(ok["responses"]["200"], 1, "{ok}");
    let baseline = rss_kib(pid);
    let mut report = Vec::new();

    // Rapid reset (CVE-2023-44487): GOAWAY, and at most one upstream
    // request per stream opened.
    let before = up.count();
    let r = run("rapid_reset").await.unwrap();
    assert_eq!(r["goaway"], true, "rapid reset: {r}");
    assert!(up.count() - before <= r["sent"].as_u64().unwrap() as usize / 2);
    report.push(("rapid_reset", r, up.count() - before));

    // CONTINUATION flood: refused before the header block is complete.
    let before = up.count();
    let r = run("continuation_flood").await.unwrap();
    assert!(r["goaway"] == true || r["closed"] == true, "continuation flood: {r}");
    assert_eq!(up.count(), before, "a flooded header block reached the upstream");
    report.push(("continuation_flood", r, 0));

    // Over the 100 concurrent streams: the rest are refused.
    let before = up.count();
    let r = run("too_many_streams").await.unwrap();
    assert!(r["resets"].as_u64().unwrap() >= 200 || r["goaway"] == true, "too many streams: {r}");
    assert!(up.count() - before <= 100, "{} streams reached the upstream", up.count() - before);
    report.push(("too_many_streams", r, up.count() - before));

    // Floods of frames that carry no request: memory must not grow with them.
    for mode in ["empty_data_flood", "ping_flood", "settings_flood"] {
        let r = run(mode).await.unwrap();
        report.push((mode, r, 0));
    }

    // Malformed requests: reset or 400, never forwarded.
    for mode in ["uppercase", "connection_header", "authority_conflict"] {
        let before = up.count();
        let r = run(mode).await.unwrap();
        let refused = r["resets"].as_u64().unwrap() >= 1 || r["responses"]["400"] == 1 || r["goaway"] == true;
        assert!(refused, "{mode}: {r}");
        assert_eq!(up.count(), before, "{mode} was forwarded");
        report.push((mode, r, 0));
    }

    // Still serving, memory back near the baseline (the floods' buffers
    // released with their connections).
    let ok = run("ok").await.unwrap();
    assert_eq!(ok["responses"]["200"], 1, "{ok}");
    let after = rss_kib(pid);
    for (mode, r, upstream) in &report {
        println!("{mode:<20} {r} upstream requests: {upstream}");
    }
    println!("weir RSS {baseline} KiB before the abuse, {after} KiB after");
    assert!(after < baseline + 16 * 1024, "weir grew from {baseline} KiB to {after} KiB");
    let _ = child.kill();
    let _ = child.wait();
}
