//! The `weir` binary: `check` on every shipped config and on broken ones,
//! `version`, and `explain` compared with what the running proxy does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Upstream, client, get, spawn_weir, wait_for};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn check(path: &Path) -> (bool, String) {
    let out = weir().args(["check", "-c"]).arg(path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_shipped_config_passes_check() {
    let mut n = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, out) = check(&path);
            assert!(ok, "{}: {out}", path.display());
            n += 1;
        }
    }
    assert!(n >= 3, "expected the example configs, found {n}");
}

#[test]
fn version_prints_the_crate_version() {
    let out = weir().arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("weir {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_reports_every_semantic_problem_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.yaml",
        r#"listen: [{address: 127.0.0.1:8080}, {address: 127.0.0.1:8080}]
limits: {idle_timeout: 500ms}
upstreams:
  v1: {endpoints: []}
  v2: {endpoints: ["nohost"]}
routes:
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v9}
    weight: 101
    segments:
      - {name: s, match: {header: {x-a: "1"}}, weight: 1.234}
    shadow: {upstream: v2}
  - name: app
    stable: {upstream: v2}
  - name: rollout
    stable: {upstream: v2}
    canary: {upstream: v2}
    analysis: {interval: 0s, failures: 0, max_error_rate: 200, max_p99_ratio: -1}
    progression: {steps: [5, 5, 101]}
  - name: steps-alone
    stable: {upstream: v2}
    canary: {upstream: v2}
    progression: {steps: [1, 100], hold: 1m}
    websocket: {on_rollback: maybe, close_rate: fast, idle_timeout: 10s, ping_interval: 30s}
    shadow: {upstream: nope, percent: 150, methods: [GET, "bad method"], max_in_flight: 0, timeout: 0s}
"#,
    );
    let (ok, out) = check(&p);
    assert!(!ok);
    for expected in [
        "23 problem(s)",
        "limits.idle_timeout: must be at least 1s",
        "routes[3].shadow.upstream: unknown upstream `nope`",
        "routes[3].shadow.percent: weight 150 is outside 0–100",
        "routes[3].shadow.methods[1]: `bad method` is not a method that can be mirrored",
        "routes[3].shadow.max_in_flight: must be at least 1",
        "routes[3].shadow.timeout: must be more than 0s",
        "routes[3].websocket.on_rollback: `maybe` is not `close` or `keep`",
        "routes[3].websocket.close_rate: `fast` is not a rate",
        "routes[3].websocket.ping_interval: must be shorter than idle_timeout",
        "routes[2].analysis.interval: must be more than 0s",
        "routes[2].analysis.failures: must be at least 1",
        "routes[2].analysis.max_error_rate: a percent from 0 up to 100",
        "routes[2].analysis.max_p99_ratio: must be a number above 0",
        "routes[2].progression.steps[2]: weight 101 is outside 0–100",
        "routes[2].progression.steps[1]: steps must increase strictly",
        "routes[3].progression: progression needs `analysis`",
        "listen[1].address: 127.0.0.1:8080 is listed twice",
        "upstreams.v1.endpoints: at least one endpoint (or a `dns` source) is required",
        "upstreams.v2.endpoints[0]: `nohost` needs a port",
        "routes[0].canary.upstream: unknown upstream `v9`",
        "routes[0].weight: weight 101 is outside 0–100",
        "routes[0].segments[0].weight: weight 1.234 has more than two decimals",
        "routes[1].name: duplicate route name `app`",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn check_loads_the_window_rule_keys_with_a_deprecation_warning_each() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "old.yaml",
        r#"listen: [{address: "127.0.0.1:0"}]
upstreams:
  v1: {endpoints: ["127.0.0.1:1"]}
  v2: {endpoints: ["127.0.0.1:2"]}
routes:
  - name: old
    stable: {upstream: v1}
    canary: {upstream: v2}
    analysis: {interval: 10s, window: 60s, min_requests: 100, max_error_rate: 1, max_p99_ratio: 1.5, failures: 3}
  - name: new
    stable: {upstream: v1}
    canary: {upstream: v2}
    analysis: {alpha: 1%, mode: observe, max_p95: 300ms, error_tolerance: 1.5, latency_tolerance: 0.1}
  - name: dry-run-steps
    stable: {upstream: v1}
    canary: {upstream: v2}
    analysis: {mode: observe}
    progression: {steps: [5, 50]}
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(["check", "-c"]).arg(&p).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for key in ["min_requests", "failures", "max_p99_ratio"] {
        let line = format!("warning: routes[0].analysis.{key}: deprecated and ignored");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("warning: routes[2].analysis.mode: observe never acts: progression stays on its first step"),
        "{text}"
    );
    assert_eq!(text.matches("warning:").count(), 4, "the new keys warn about nothing else:\n{text}");
    // A bad value for a new key is an error with its path.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "listen: [{address: \"127.0.0.1:0\"}]\nupstreams:\n  v1: {endpoints: [\"127.0.0.1:1\"]}\nroutes:\n  - name: r\n    stable: {upstream: v1}\n    canary: {upstream: v1}\n    analysis: {alpha: \"lots\", mode: dry, latency_tolerance: -1}\n",
    );
    let (ok, out) = check(&bad);
    assert!(!ok);
    for expected in [
        "routes[0].analysis.alpha: `lots` is not a percent",
        "routes[0].analysis.mode: `dry` is not `enforce` or `observe`",
        "routes[0].analysis.latency_tolerance: a fraction, 0 or more",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn check_reports_syntax_and_unknown_keys_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let typo = write(
        dir.path(),
        "typo.yaml",
        "listen: [{address: 127.0.0.1:8080}]\nroutes:\n  - name: a\n    stabel: {upstream: v1}\n",
    );
    let (ok, out) = check(&typo);
    assert!(!ok);
    assert!(out.contains("line 4, column 5: unknown field `stabel`"), "{out}");
    let broken = write(dir.path(), "broken.yaml", "listen: [{address: 127.0.0.1:8080}\nroutes: [\n");
    let (ok, out) = check(&broken);
    assert!(!ok);
    assert!(out.contains("line 2, column"), "{out}");
    let half =
        write(dir.path(), "half.yaml", "listen:\n  - address: 127.0.0.1:8080\nupstreams:\n  v1: {endpoints: [127.0.0");
    assert!(!check(&half).0, "a half-written file is invalid");
    let missing = dir.path().join("nope.yaml");
    let (ok, out) = check(&missing);
    assert!(!ok && out.contains("cannot read"), "{out}");
}

#[test]
fn market_codes_like_no_stay_strings() {
    // YAML 1.1 would read NO as false (the "Norway problem").
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "norway.yaml",
        r#"listen: [{address: 127.0.0.1:8080}]
upstreams: {v1: {endpoints: [127.0.0.1:1]}, v2: {endpoints: [127.0.0.1:2]}}
routes:
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2}
    segments: [{name: n, match: {header: {x-market: [SE, NO]}}, weight: 100}]
"#,
    );
    assert!(check(&p).0);
    let out = weir()
        .args(["explain", "-c"])
        .arg(&p)
        .args(["--host", "h", "--path", "/", "--header", "x-market: NO"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"version\": \"canary\"") && text.contains("segment:n"), "{text}");
}

/// Start the real binary on port 0 and read its bound address from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_exits_cleanly() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let text = |w: u32| split_config(&s, &c, w);
    let cfg = write(dir.path(), "weir.yaml", &text(0));
    let (mut child, addr, _out, err) = spawn_weir(&cfg);
    let pid = child.id().to_string();
    let hup = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(hup.success());
    let line = wait_for(&err, "sighup", Duration::from_secs(5)).expect("no log line for the SIGHUP reload");
    assert!(line.contains("config unchanged"), "{line}");
    std::fs::write(&cfg, text(100)).unwrap();
    assert!(wait_for(&err, "config reloaded", Duration::from_secs(5)).is_some());
    assert_eq!(get(&client(), &format!("http://{addr}/"), &[]).await.2, "canary");
    let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(term.success());
    assert_exits_cleanly(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_proxy_and_access_log_hides_sticky_keys() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "weir.yaml",
        &format!(
            r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
upstreams:
  v1: {{endpoints: ["{}"]}}
  v2: {{endpoints: ["{}"]}}
routes:
  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: 30
    sticky: {{keys: ["header:x-player-id"]}}
    segments: [{{name: staff, match: {{cookie: {{staff: "yes"}}}}, weight: 100}}]
"#,
            s.addr, c.addr
        ),
    );
    let (mut child, addr, log, _err) = spawn_weir(&cfg);
    let http = client();
    let mut canary = 0;
    for i in 0..60 {
        let id = format!("secret-player-{i}");
        let mut cmd = weir();
        cmd.args(["explain", "-c"])
            .arg(&cfg)
            .args(["--host", "anything", "--path", "/x", "--header"])
            .arg(format!("x-player-id:{id}"));
        if i % 10 == 0 {
            cmd.args(["--cookie", "staff=yes"]);
        }
        let out = cmd.output().unwrap();
        let x: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cookie = if i % 10 == 0 { "staff=yes" } else { "x=1" };
        let (_, _, body) = get(&http, &format!("http://{addr}/x"), &[("x-player-id", &id), ("cookie", cookie)]).await;
        assert_eq!(x["version"], body.as_str(), "explain and proxy disagree for {id}: {x}");
        canary += usize::from(body == "canary");
    }
    assert_eq!(s.count() + c.count(), 60);
    assert!(canary > 6, "segment members always canary, plus some by weight");
    // One access-log line per request, with the contract's fields and no raw key.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines.len() < 60 && Instant::now() < deadline {
        if let Ok(l) = log.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(lines.len(), 60);
    for l in &lines {
        assert!(!l.contains("secret-player"), "raw sticky key in access log: {l}");
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        for field in [
            "ts",
            "request_id",
            "trace_id",
            "client_ip",
            "client_subject",
            "method",
            "authority",
            "path",
            "route",
            "version",
            "revision",
            "reason",
            "bucket",
            "upstream",
            "status",
            "duration_ms",
            "upstream_duration_ms",
            "bytes_in",
            "bytes_out",
            "flags",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {l}");
        }
        assert_eq!(v["path"], "/x");
        assert_eq!(v["status"], 200);
    }
}

#[test]
fn check_validates_the_fleet_analysis_source_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let route = |name: &str, analysis: &str| {
        format!(
            "  - name: {name}\n    stable: {{upstream: v1}}\n    canary: {{upstream: v2}}\n    analysis: {analysis}\n"
        )
    };
    let head = "listen: [{address: \"127.0.0.1:0\"}]\nupstreams:\n  v1: {endpoints: [\"127.0.0.1:1\"]}\n  v2: {endpoints: [\"127.0.0.1:2\"]}\nroutes:\n";
    let good = write(
        dir.path(),
        "fleet.yaml",
        &format!(
            "{head}{}",
            route(
                "a",
                "{interval: 30s, source: {prometheus: \"http://prometheus.monitoring:9090/prom\", scrape_interval: 15s}}"
            )
        ),
    );
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    let bad = write(
        dir.path(),
        "bad-fleet.yaml",
        &format!(
            "{head}{}{}{}{}",
            route("a", "{source: {scrape_interval: 15s}}"),
            route("b", "{source: {prometheus: \"https://prom:9090\"}}"),
            route("c", "{interval: 5s, source: {prometheus: \"http://prom:9090\", scrape_interval: 15s, lag: 0s}}"),
            route("d", "{source: {prometheus: \"http://prom:x\"}}"),
        ),
    );
    let (ok, out) = check(&bad);
    assert!(!ok);
    for expected in [
        "routes[0].analysis.source.prometheus: required",
        "routes[1].analysis.source.prometheus: https is not supported",
        "routes[2].analysis.source.scrape_interval: the analysis interval (5000ms) is shorter than the scrape interval",
        "routes[2].analysis.source.lag: must be more than 0s",
        "routes[3].analysis.source.prometheus: `http://prom:x`: port `x` is not a number",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // An unknown key is named with its line and column.
    let typo = write(
        dir.path(),
        "typo.yaml",
        &format!("{head}{}", route("a", "{source: {prometheus: \"http://prom:9090\", scrape: 1s}}")),
    );
    let (ok, out) = check(&typo);
    assert!(!ok);
    assert!(out.contains("unknown field `scrape`, expected one of prometheus, scrape_interval, lag, timeout"), "{out}");
}

/// Hostile files are refused at once with a clear error: never read whole,
/// never waited on.
#[test]
fn check_refuses_devices_fifos_and_huge_files_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big).unwrap().set_len(3 << 29).unwrap();
    for (path, expected) in [
        (std::path::PathBuf::from("/dev/zero"), "not a regular file"),
        (fifo, "not a regular file"),
        (big, "is 1.5 GiB; the limit is 4.0 MiB"),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["check", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("weir check hung on {}", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(1), "{}: {text}", path.display());
        assert!(text.contains(expected), "{}: {text}", path.display());
    }
    // A secret file that is a device is a field error, not a hang or an OOM.
    let cfg = write(
        dir.path(),
        "secret.yaml",
        r#"listen: [{address: "127.0.0.1:0"}]
upstreams:
  v1: {endpoints: ["127.0.0.1:1"]}
routes:
  - name: r
    stable: {upstream: v1}
    canary: {upstream: v1}
    sticky: {keys: ["header:x-p"], cookie: {name: b, secret_file: /dev/zero}}
"#,
    );
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("routes[0].sticky.cookie.secret_file: cannot read /dev/zero: is not a regular file"), "{out}");
}

/// Every command's help line says what that command does.
#[test]
fn help_describes_each_command_once() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |cmd: &str| text.lines().find(|l| l.trim_start().starts_with(cmd)).unwrap_or_default().to_owned();
    assert!(line("healthcheck").contains("answers 200"), "{text}");
    assert!(line("version").contains("Print the version"), "{text}");
    assert!(line("fleet").contains("every replica"), "{text}");
    assert_eq!(text.matches("Print the version").count(), 1, "{text}");
}

/// The soft open-file limit a process has, from /proc.
fn soft_nofile(pid: &str) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap_or(u64::MAX)
}

#[test]
fn run_raises_the_soft_open_file_limit_to_the_hard_one() {
    let hard = {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
        line.split_whitespace().nth(4).unwrap().parse::<u64>().unwrap_or(u64::MAX)
    };
    if hard <= 512 {
        eprintln!("hard open-file limit {hard}: nothing to raise here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "weir.yaml",
        "listen: [{address: \"127.0.0.1:0\"}]\nadmin: {address: \"127.0.0.1:0\"}\nupstreams: {v1: {endpoints: [\"127.0.0.1:9\"]}}\nroutes: [{name: r, stable: {upstream: v1}}]\n",
    );
    // Started the way systemd or a container often starts it: a low soft limit.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -S -n 512 && exec \"$0\" run -c \"$1\""])
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = support::lines_of(child.stderr.take().unwrap());
    let said = wait_for(&rx, "open-file limit", Duration::from_secs(10)).expect("the limit is logged");
    assert!(said.contains("\"before\":512"), "{said}");
    assert!(wait_for(&rx, "weir ready", Duration::from_secs(10)).is_some());
    assert_eq!(soft_nofile(&child.id().to_string()), hard, "soft raised to hard");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Start the binary with extra environment (and the soft open-file limit
/// it was given); its stderr lines.
fn spawn_with_env(cfg: &Path, env: &[(&str, &str)]) -> (std::process::Child, support::Lines) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-c"])
        .arg(cfg)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = support::lines_of(child.stderr.take().unwrap());
    (child, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_core_runtime_serves_on_every_thread_and_drains_on_sigterm() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "weir.yaml", &split_config(&s, &c, 50));
    let (mut child, rx) = spawn_with_env(&cfg, &[("WEIR_RUNTIME", "per-core"), ("TOKIO_WORKER_THREADS", "3")]);
    let ready = wait_for(&rx, "weir ready", Duration::from_secs(10)).expect("weir ready");
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let listen = v["fields"]["listen"].as_str().unwrap().trim_matches(|c| c == '[' || c == ']').to_owned();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    // Three threads named for their core slot, each with its own sockets.
    // A new thread names itself once it runs, so its name can lag behind
    // "weir ready" for a moment: looked at until both show, for at most 10 s.
    let pid = child.id();
    let thread_names = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .collect()
    };
    let named = |names: &[String]| ["weir-core-1", "weir-core-2"].iter().all(|w| names.iter().any(|n| n == w));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut names = thread_names();
    while !named(&names) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
        names = thread_names();
    }
    assert!(named(&names), "{names:?}");

    // 90 fresh connections: the kernel spreads them over the three
    // threads' sockets; every one is answered.
    let conns: Vec<_> = (0..90)
        .map(|_| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut t = tokio::net::TcpStream::connect(addr).await.unwrap();
                t.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
                let mut out = String::new();
                tokio::time::timeout(Duration::from_secs(10), t.read_to_string(&mut out)).await.unwrap().unwrap();
                out
            })
        })
        .collect();
    for c in conns {
        let out = c.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("stable") || out.ends_with("canary"), "{out}");
    }
    assert_eq!(s.count() + c.count(), 90, "every request reached an upstream once");
    assert!(s.count() > 0 && c.count() > 0, "the split still applies");

    let term = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(term.success());
    assert_exits_cleanly(&mut child);
}

#[test]
fn an_unknown_runtime_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "weir.yaml",
        "listen: [{address: \"127.0.0.1:0\"}]\nadmin: {address: \"127.0.0.1:0\"}\nupstreams: {v1: {endpoints: [\"127.0.0.1:9\"]}}\nroutes: [{name: r, stable: {upstream: v1}}]\n",
    );
    let out = weir().args(["run", "-c"]).arg(&cfg).env("WEIR_RUNTIME", "fibers").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WEIR_RUNTIME=fibers") && err.contains("per-core"), "{err}");
}

/// The child exits 0 within 10 s (after a SIGTERM).
fn assert_exits_cleanly(child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "weir did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

/// One route splitting `weight` % to `c`, listeners on port 0.
fn split_config(s: &Upstream, c: &Upstream, weight: u32) -> String {
    format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\nupstreams:\n  v1: {{endpoints: [\"{}\"]}}\n  v2: {{endpoints: [\"{}\"]}}\nroutes:\n  - {{name: app, stable: {{upstream: v1}}, canary: {{upstream: v2}}, weight: {weight}}}\n",
        s.addr, c.addr
    )
}

#[test]
fn check_reads_the_admin_token_file_as_the_admin_api_would() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |token: &str| {
        format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\", token_file: {token}}}\n\
             upstreams:\n  v1: {{endpoints: [\"127.0.0.1:1\"]}}\nroutes:\n  - name: r\n    stable: {{upstream: v1}}\n"
        )
    };
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    write(dir.path(), "empty", "\n");
    write(dir.path(), "spaced", "two words\n");
    write(dir.path(), "good", "s3cret\n");
    for (token, expected) in [
        ("missing", "cannot read"),
        ("empty", "is empty"),
        ("spaced", "visible ASCII"),
        (fifo.to_str().unwrap(), "not a regular file"),
    ] {
        let (ok, out) = check(&write(dir.path(), "weir.yaml", &cfg(token)));
        assert!(!ok, "{token}: {out}");
        assert!(out.contains("admin.token_file:") && out.contains(expected), "{token}: {out}");
    }
    let (ok, out) = check(&write(dir.path(), "weir.yaml", &cfg("good")));
    assert!(ok, "{out}");
}

#[test]
fn check_names_a_bad_balance_or_health_by_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |balance: &str| {
        format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nupstreams:\n  v1: {{endpoints: [\"127.0.0.1:1\"], balance: {balance}}}\n\
             routes:\n  - name: r\n    stable: {{upstream: v1}}\n"
        )
    };
    let (ok, out) = check(&write(dir.path(), "weir.yaml", &cfg("least_conn")));
    assert!(!ok);
    assert!(out.contains("upstreams.v1.balance: `least_conn` is not a balance; use p2c or round_robin"), "{out}");
    let bad_health = cfg("p2c, health: {passive: {eject: 0s, max_ejected: 150%}}");
    let (ok, out) = check(&write(dir.path(), "weir.yaml", &bad_health));
    assert!(!ok);
    assert!(out.contains("upstreams.v1.health.passive.eject: must be greater than zero"), "{out}");
    assert!(out.contains("upstreams.v1.health.passive.max_ejected: must be between 0 and 100 percent"), "{out}");
    for good in ["p2c", "round_robin"] {
        let (ok, out) = check(&write(dir.path(), "weir.yaml", &cfg(good)));
        assert!(ok, "{good}: {out}");
    }
}

#[test]
fn check_names_a_bad_dns_source_retry_or_resolver_by_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "listen: [{address: \"127.0.0.1:0\"}]\n\
               resolver: {nameservers: [\"dns.local\"], timeout: 0s}\n\
               upstreams:\n\
               \x20 v1: {dns: {name: \"bad name!\", port: 70000, refresh: 10ms, min_ttl: 5s, max_ttl: 1s},\n\
               \x20      retry: {attempts: 11, on: [connect_failure, 404, sometimes], budget: 120%},\n\
               \x20      health: {passive: {statuses: [404]}, active: {path: healthz, interval: 1s, timeout: 2s, healthy: 0}}}\n\
               \x20 v2: {endpoints: [\"127.0.0.1:1\"], dns: {name: v2.local, port: 80}, protocol: h2}\n\
               \x20 v3: {endpoints: [\"127.0.0.1:1\"], protocol: spdy}\n\
               \x20 v4: {endpoints: [\"127.0.0.1:1\"], protocol: h2, tls: {ca_file: /nonexistent/ca.pem}}\n\
               \x20 v6: {endpoints: [\"127.0.0.1:1\"], protocol: h2, tls: {client_cert_file: c.pem}}\n\
               \x20 v5: {endpoints: [\"127.0.0.1:1\"], protocol: h2c, tls: {insecure_skip_verify: true}}\n\
               \x20 v7: {endpoints: [\"127.0.0.1:1\"], protocol: auto}\n\
               \x20 v8: {endpoints: [\"127.0.0.1:1\"], health: {active: {grpc_service: weir.Game}}}\n\
               \x20 v9: {endpoints: [\"127.0.0.1:1\"], protocol: h2c, health: {active: {path: /h, grpc_service: \"a b\"}}}\n\
               routes:\n  - name: r\n    stable: {upstream: v1}\n    canary: {upstream: v2}\n\
               \x20   grpc: {error_codes: [UNAVAILABLE, OK, NOPE]}\n";
    let (ok, out) = check(&write(dir.path(), "weir.yaml", bad));
    assert!(!ok);
    for expected in [
        "resolver.nameservers[0]: `dns.local` is not an IP address or ip:port",
        "resolver.timeout: must be greater than zero",
        "upstreams.v1.dns.name: `bad name!` is not a DNS name",
        "upstreams.v1.dns.port: must be between 1 and 65535",
        "upstreams.v1.dns.refresh: must be at least 100ms",
        "upstreams.v1.dns.max_ttl: must not be less than min_ttl",
        "upstreams.v1.retry.attempts: at most 10 retries",
        "upstreams.v1.retry.on[1]: retry on connect_failure, reset, timeout or a 5xx status such as 503",
        "upstreams.v1.retry.on[2]: retry on",
        "upstreams.v1.retry.budget: must be between 0 and 100 percent",
        "upstreams.v1.health.passive.statuses[0]: only 5xx statuses count as failed attempts",
        "upstreams.v2: give either `endpoints` or `dns`, not both",
        "upstreams.v2.tls: protocol h2 is HTTP/2 over TLS: give `tls` (or use h2c)",
        "upstreams.v3.protocol: `spdy` is not a protocol; use http1, h2c, h2 or auto",
        "upstreams.v7.tls: protocol auto lets TLS's ALPN choose between h2 and http/1.1: give `tls`",
        "upstreams.v8.health.active.grpc_service: a gRPC health check needs HTTP/2: set protocol h2c, h2 or auto",
        "upstreams.v9.health.active.grpc_service: give `path` (an HTTP check) or `grpc_service` (a gRPC check), not both",
        "upstreams.v9.health.active.grpc_service: must be a service name",
        "upstreams.v4.tls.ca_file: cannot read",
        "upstreams.v6.tls: client_cert_file and client_key_file go together",
        "upstreams.v5.tls: h2c is HTTP/2 without TLS: use protocol h2 with `tls`",
        "routes[0].grpc.error_codes[1]: OK is never an error",
        "routes[0].grpc.error_codes[2]: `NOPE` is not a gRPC status code",
        "upstreams.v1.health.active.path: must be an absolute path",
        "upstreams.v1.health.active.timeout: must be greater than zero and at most the interval",
        "upstreams.v1.health.active.healthy: must be between 1 and 100",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let good = "listen: [{address: \"127.0.0.1:0\"}]\nresolver: {nameservers: [\"127.0.0.1:5353\", \"::1\"]}\n\
                upstreams:\n  v1: {dns: {name: game.svc.cluster.local., port: 8080}, retry: {on: [reset, 503]}}\n\
                \x20 v2: {endpoints: [\"127.0.0.1:1\"], protocol: h2c, health: {active: {grpc_service: \"\"}}}\n\
                \x20 v3: {endpoints: [\"127.0.0.1:1\"], protocol: h2, tls: {}, health: {active: {path: /healthz}}}\n\
                routes:\n  - name: r\n    stable: {upstream: v1}\n";
    let (ok, out) = check(&write(dir.path(), "weir.yaml", good));
    assert!(ok, "{out}");
}
