//! Fleet mode end to end: three weir processes and a real Prometheus
//! (Debian package `prometheus`, scrape interval 1 s) on loopback, traffic
//! spread round-robin over the replicas. The replicas never talk to each
//! other; everything they share goes through Prometheus.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Upstream, admin_post, client, journal, route_view};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Prometheus server scraping the given admin listeners every second.
struct Prom {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prom {
    fn start(port: u16, targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: weir\n    static_configs: [{{targets: [{}]}}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let mut p = Self { child: None, port, dir };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (.ci/run installs the Debian package)");
        self.child = Some(child);
    }

    /// SIGTERM, so the TSDB is closed cleanly, then wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One weir process with fixed ports (so a restart is the same scrape
/// target) and its own state directory.
struct Replica {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

fn yaml(port: u16, admin: u16, state: &std::path::Path, s: SocketAddr, c: SocketAddr, route: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:{port}"}}]
admin: {{address: "127.0.0.1:{admin}"}}
access_log: false
state_dir: {}
upstreams:
  v1: {{endpoints: ["{s}"], connect_timeout: 500ms, request_timeout: 5s}}
  v2: {{endpoints: ["{c}"], connect_timeout: 500ms, request_timeout: 5s}}
routes:
{route}"#,
        state.display()
    )
}

impl Replica {
    fn start(s: SocketAddr, c: SocketAddr, route: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        std::fs::write(dir.path().join("weir.yaml"), yaml(port, admin, &dir.path().join("state"), s, c, route))
            .unwrap();
        let mut r = Self {
            child: None,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let (child, addr, admin, _out, _err) = support::spawn_weir_admin(&self.dir.path().join("weir.yaml"));
        assert_eq!((addr, admin), (self.addr, self.admin));
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-KILL").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    fn journal(&self) -> Vec<Value> {
        journal(&self.dir.path().join("state")).into_iter().filter(|e| e["route"] == "app").collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn route(extra_analysis: &str, prom: u16, rest: &str) -> String {
    format!(
        r#"  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: 20
    analysis: {{interval: 1s, window: 10s{extra_analysis}, source: {{prometheus: "http://127.0.0.1:{prom}", scrape_interval: 1s}}}}
{rest}"#
    )
}

/// Paced anonymous GETs, round-robin over `targets`, `per_s` a second,
/// until stopped or 120 s.
/// Three replicas of one route in front of `s` and `c`, each judging
/// through one real Prometheus that scrapes them all.
fn fleet(s: &Upstream, c: &Upstream, extra_analysis: &str, rest: &str) -> (Vec<Replica>, Vec<SocketAddr>, Prom) {
    let prom_port = free_port();
    let replicas: Vec<Replica> =
        (0..3).map(|_| Replica::start(s.addr, c.addr, &route(extra_analysis, prom_port, rest))).collect();
    let admins: Vec<SocketAddr> = replicas.iter().map(|r| r.admin).collect();
    let prom = Prom::start(prom_port, &admins);
    (replicas, admins, prom)
}

struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(targets: Vec<SocketAddr>, per_s: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, se) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let http = client();
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / per_s));
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut i = 0usize;
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                tick.tick().await;
                let url = format!("http://{}/", targets[i % targets.len()]);
                i += 1;
                let http = http.clone();
                let se = se.clone();
                tokio::spawn(async move {
                    let req = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                    if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), http.request(req)).await {
                        use http_body_util::BodyExt;
                        let _ = resp.into_body().collect().await;
                        se.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        Self { stop, sent, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.sent.load(Ordering::Relaxed)
    }
}

/// Poll every replica's `/routes/app` until `f` holds on all, or `limit`.
async fn all_routes(admins: &[SocketAddr], limit: Duration, f: impl Fn(&Value) -> bool) -> (bool, Vec<Value>) {
    let deadline = Instant::now() + limit;
    loop {
        let mut views = Vec::new();
        for a in admins {
            views.push(route_view(*a, "app").await);
        }
        if views.iter().all(&f) {
            return (true, views);
        }
        if Instant::now() >= deadline {
            return (false, views);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fleet verdicts by evaluation time (missed evaluations left out).
fn verdicts(lines: &[Value]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter(|e| e["event"] == "verdict" && e["actor"] == "fleet" && e["reason"] != "source_unavailable")
        .map(|e| (e["at"].as_str().unwrap().to_owned(), e["verdict"].as_str().unwrap().to_owned()))
        .collect()
}

/// Verdicts at the times two replicas both judged must agree.
fn same_where_both(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> usize {
    let mut common = 0;
    for (t, v) in a {
        if let Some(w) = b.get(t) {
            assert_eq!(v, w, "replicas disagree at {t}");
            common += 1;
        }
    }
    common
}

/// A canary upstream; `bad` makes every 20th answer a 500 (5 %, evenly spread).
async fn canary_with_errors() -> Upstream {
    Upstream::start("canary").await
}

fn bad(c: &Upstream) {
    c.error_every.store(20, Ordering::Relaxed);
}

fn canary_requests_at_fail(lines: &[Value]) -> Option<u64> {
    lines.iter().find(|e| e["event"] == "verdict" && e["verdict"] == "fail").and_then(|e| {
        e["since_revision"]["canary_requests"]
            .as_u64()
            .or_else(|| e["inputs"]["since_revision"]["canary"]["requests"].as_u64())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_canary_is_rolled_back_on_every_replica_after_as_many_requests_as_one_replica_needs() {
    let s = Upstream::start("stable").await;
    let c = canary_with_errors().await;
    bad(&c);
    let (replicas, admins, _prom) = fleet(&s, &c, "", "");

    // The same canary alone on one replica (no fleet source), for comparison.
    let c1 = canary_with_errors().await;
    bad(&c1);
    let dir = tempfile::tempdir().unwrap();
    let single_route = r#"  - name: app
    stable: {upstream: v1, revision: "1.0"}
    canary: {upstream: v2, revision: "2.0"}
    weight: 20
    analysis: {interval: 1s, window: 10s}
"#;
    let (p, a) = (free_port(), free_port());
    std::fs::write(dir.path().join("weir.yaml"), yaml(p, a, &dir.path().join("state"), s.addr, c1.addr, single_route))
        .unwrap();
    let (mut single, single_addr, single_admin, _o, _e) = support::spawn_weir_admin(&dir.path().join("weir.yaml"));

    let fleet_load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 25);
    let single_load = Traffic::start(vec![single_addr], 25);
    let (ok, views) = all_routes(&admins, Duration::from_secs(90), |v| v["state"] == "rolled_back").await;
    let (single_ok, single_view) =
        all_routes(&[single_admin], Duration::from_secs(60), |v| v["state"] == "rolled_back").await;
    fleet_load.stop().await;
    single_load.stop().await;
    let _ = single.kill();
    let _ = single.wait();
    assert!(ok, "not rolled back everywhere: {views:#?}");
    assert!(single_ok, "the single replica did not roll back: {single_view:#?}");
    // Each replica's own fold names the reason once it reaches the failing
    // time (until then a replica that latched from another says `fleet`).
    let (ok, views) = all_routes(&admins, Duration::from_secs(30), |v| {
        v["rolled_back"]["reason"] == "error_rate" && v["fleet"]["source_up"] == true
    })
    .await;
    assert!(ok, "the folds did not all reach the failing time: {views:#?}");

    // Same verdicts at the same evaluation times, the fail at one time.
    let journals: Vec<Vec<Value>> = replicas.iter().map(Replica::journal).collect();
    let seqs: Vec<BTreeMap<String, String>> = journals.iter().map(|j| verdicts(j)).collect();
    let fail_at: Vec<Option<&String>> =
        seqs.iter().map(|s| s.iter().find(|(_, v)| *v == "fail").map(|(t, _)| t)).collect();
    assert!(fail_at[0].is_some() && fail_at.iter().all(|f| *f == fail_at[0]), "fail times differ: {fail_at:?}");
    assert!(same_where_both(&seqs[0], &seqs[1]) >= 5);
    assert!(same_where_both(&seqs[0], &seqs[2]) >= 5);
    for j in &journals {
        let rb =
            j.iter().find(|e| e["event"] == "rollback" || (e["event"] == "fleet_state" && e["state"] == "rolled_back"));
        assert!(rb.is_some(), "no rollback line: {j:#?}");
    }

    // As many canary requests as one replica taking all the traffic needed.
    let fleet_n = canary_requests_at_fail(&journals[0]).expect("fleet fail line has counts");
    let single_n = canary_requests_at_fail(&journal(&dir.path().join("state"))).expect("single fail line has counts");
    let ratio = fleet_n as f64 / single_n as f64;
    eprintln!("canary requests to the fail: fleet {fleet_n}, one replica {single_n} (ratio {ratio:.2})");
    // One run each, random routing: seen 0.78-1.11 over four printed runs. What it
    // guards against is each replica judging alone, which needs about 3x.
    assert!((0.67..=1.5).contains(&ratio), "fleet needed {fleet_n} canary requests, one replica {single_n}");
}

/// A cold start: the canary's first ~100 requests are 5 ms slower, then it
/// is as fast as stable. With the default warm-up (10 s from the start of
/// the rollout) those requests get no latency line, on every replica, so
/// the fleet does not roll the canary back. (The fleet's step start used to
/// be 0 until its first evidence: lines from the first request, and every
/// replica rolled back for latency about 5 s in.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_start_in_the_warm_up_is_not_rolled_back_by_the_fleet() {
    let s = Upstream::start("stable").await;
    let c = Upstream::start("canary").await;
    c.delay_ms.store(5, Ordering::Relaxed);
    let (replicas, admins, _prom) = fleet(&s, &c, "", "");
    let load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 100);
    // Warm after its first 100 requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.count() < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.delay_ms.store(0, Ordering::Relaxed);
    assert!(c.count() >= 100, "too little canary traffic");
    let canary = |v: &Value| v["evidence"]["since_revision"]["canary"]["requests"].as_u64().unwrap_or(0);
    let (ok, views) = all_routes(&admins, Duration::from_secs(60), |v| {
        v["state"] == "rolled_back" || (v["fleet"]["evaluated_through"].is_string() && canary(v) >= 500)
    })
    .await;
    load.stop().await;
    assert!(ok, "the fleet did not judge 500 canary requests: {views:#?}");
    for (v, r) in views.iter().zip(&replicas) {
        assert_ne!(v["state"], "rolled_back", "a cold start in the warm-up was rolled back: {v}");
        assert!(!r.journal().iter().any(|e| e["verdict"] == "fail"), "{:#?}", r.journal());
    }
}

/// Test R across a fleet: a canary three times slower, judged from the
/// replicas' rank-bin counters (`event="rank_NN"`) and the per-request
/// stratum's share gauge through a real Prometheus, is rolled back for
/// latency by every replica at one evaluation time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_canary_is_rolled_back_by_test_r_on_every_replica() {
    let s = Upstream::start("stable").await;
    let c = Upstream::start("canary").await;
    s.heavy_tail_ms.store(4, Ordering::Relaxed);
    c.heavy_tail_ms.store(12, Ordering::Relaxed);
    let (replicas, admins, _prom) = fleet(&s, &c, ", warmup: 2s", "");
    let load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 100);
    let (ok, views) = all_routes(&admins, Duration::from_secs(90), |v| {
        v["rolled_back"]["reason"] == "latency_ratio" && v["fleet"]["source_up"] == true
    })
    .await;
    load.stop().await;
    assert!(ok, "not rolled back for latency everywhere: {views:#?}");
    let journals: Vec<Vec<Value>> = replicas.iter().map(Replica::journal).collect();
    let fails: Vec<(String, Value)> = journals
        .iter()
        .map(|j| {
            let f = j.iter().find(|e| e["event"] == "verdict" && e["verdict"] == "fail").expect("a fail verdict");
            (f["at"].as_str().unwrap().to_owned(), f.clone())
        })
        .collect();
    for (at, f) in &fails {
        assert_eq!(at, &fails[0].0, "fail times differ: {fails:#?}");
        assert_eq!(f["fired"]["test"], "R", "{f}");
        assert!(f["reason"].as_str().unwrap().contains("percentile on average"), "{f}");
        assert!(f["since_revision"]["canary_timed"].as_u64().unwrap() > 0, "{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_healthy_fleet_follows_steering_from_any_replica_and_a_killed_replica_rejoins() {
    let s = Upstream::start("stable").await;
    let c = Upstream::start("canary").await;
    let progression = "    progression: {steps: [10, 20, 30, 40, 50, 60, 70, 80, 90], hold: 4s}\n";
    let (mut replicas, admins, _prom) = fleet(&s, &c, "", progression);
    let load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 40);

    // Healthy: the fleet steps forward together.
    let (ok, views) = all_routes(&admins, Duration::from_secs(60), |v| v["step"].as_u64() >= Some(2)).await;
    assert!(ok, "no progress: {views:#?}");

    // kill -9 one replica mid-rollout; it comes back in the fleet's state.
    replicas[1].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await; // traffic to the dead one fails meanwhile
    replicas[1].spawn();
    let (ok, views) = all_routes(&admins, Duration::from_secs(20), |v| v["fleet"]["synced"] == true).await;
    assert!(ok, "restarted replica did not sync: {views:#?}");
    let mut agree = false;
    for _ in 0..40 {
        let (_, views) = all_routes(&admins, Duration::ZERO, |_| true).await;
        let steps: Vec<_> = views.iter().map(|v| (v["step"].clone(), v["state"].clone())).collect();
        if steps.iter().all(|s| *s == steps[0]) {
            agree = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(agree, "the restarted replica is not in the fleet's state: {views:#?}");

    // An admin rollback on replica 1 latches 2 and 3 within 3 scrape
    // intervals + 1 evaluation interval.
    let (code, _) = admin_post(admins[0], "/routes/app/rollback").await;
    assert_eq!(code, 200);
    let t0 = Instant::now();
    let (ok, views) = all_routes(&admins, Duration::from_secs(4), |v| v["state"] == "rolled_back").await;
    let took = t0.elapsed();
    assert!(ok, "not latched everywhere within 4 s: {views:#?}");
    eprintln!("admin rollback reached every replica in {took:?}");
    for v in &views {
        assert_eq!(v["weight"]["effective"], 0.0);
    }
    // Nothing reaches the canary through any replica now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.clear();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.count(), 0, "canary still gets traffic after the fleet latched");

    // A resume on replica 3 lifts it on all.
    let (code, _) = admin_post(admins[2], "/routes/app/resume").await;
    assert_eq!(code, 200);
    let (ok, views) = all_routes(&admins, Duration::from_secs(6), |v| v["state"] == "progressing").await;
    assert!(ok, "resume did not reach every replica: {views:#?}");
    let (ok, views) =
        all_routes(&admins, Duration::from_secs(15), |v| v["canary"]["window"]["requests"].as_u64() > Some(0)).await;
    assert!(ok, "canary gets no traffic after the resume: {views:#?}");

    // `weir fleet` reaches every replica at once: each is paused when it returns.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(["fleet", "pause", "app"]);
    for a in &admins {
        cmd.arg("--replicas").arg(a.to_string());
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 of 3 replicas accepted"));
    for a in &admins {
        assert_eq!(route_view(*a, "app").await["state"], "paused");
    }
    // One replica unreachable: said, and the exit code says so.
    let dead = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["fleet", "resume", "app", "--replicas"])
        .arg(admins[0].to_string())
        .arg("--replicas")
        .arg(format!("127.0.0.1:{dead}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("127.0.0.1:{dead}\terror")), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 replicas accepted"));
    load.stop().await;

    // Healthy all along: no automatic rollback anywhere, and the replicas
    // that never stopped judged the same way at the same times.
    for r in &replicas {
        let j = r.journal();
        assert!(!j.iter().any(|e| e["verdict"] == "fail"), "a healthy canary failed: {j:#?}");
    }
    let seqs: Vec<BTreeMap<String, String>> = replicas.iter().map(|r| verdicts(&r.journal())).collect();
    assert!(same_where_both(&seqs[0], &seqs[2]) >= 5);
    assert!(same_where_both(&seqs[0], &seqs[1]) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_prometheus_down_nothing_is_decided_and_judgement_resumes_when_it_is_back() {
    let s = Upstream::start("stable").await;
    let c = canary_with_errors().await;
    let progression = "    progression: {steps: [20, 30, 40, 50, 60, 70, 80, 90], hold: 3s}\n";
    let (replicas, admins, mut prom) = fleet(&s, &c, "", progression);
    let load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 80);
    // Some healthy evidence first, judged by the fleet.
    let (ok, views) = all_routes(&admins, Duration::from_secs(30), |v| {
        v["fleet"]["evaluated_through"].is_string() && v["fleet"]["started_from"].is_string()
    })
    .await;
    assert!(ok, "fleet judgement did not start: {views:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Prometheus goes away; the canary turns bad meanwhile.
    prom.stop();
    bad(&c);
    let (ok, views) = all_routes(&admins, Duration::from_secs(10), |v| v["fleet"]["source_up"] == false).await;
    assert!(ok, "nobody noticed the source is down: {views:#?}");
    for v in &views {
        let last = v["verdicts"].as_array().unwrap().last().unwrap();
        assert_eq!(last["verdict"], "insufficient", "{v}");
        assert!(last["reason"].as_str().unwrap().starts_with("source_unavailable"), "{v}");
        assert!(v["fleet"]["source_error"].is_string());
    }
    let at_outage: Vec<(Value, Value)> = views.iter().map(|v| (v["step"].clone(), v["state"].clone())).collect();
    let m = support::get(&client(), &format!("http://{}/metrics", admins[0]), &[]).await.2;
    assert!(m.contains("weir_analysis_source_up{route=\"app\"} 0"), "{m}");
    // Enough bad canary traffic for a fail goes by (one replica alone needs
    // about 160 canary requests at 5 %): nobody decides on it.
    let before = c.count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.count() < before + 250 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.count() >= before + 250, "too little canary traffic during the outage");
    for (a, before) in admins.iter().zip(&at_outage) {
        let v = route_view(*a, "app").await;
        assert_eq!((v["step"].clone(), v["state"].clone()), before.clone(), "decided without data: {v}");
        assert_eq!(v["state"], "progressing");
    }

    // Back: the evidence gathered meanwhile is judged, once, and the
    // verdict is the one a run without the outage reaches.
    prom.spawn();
    let (ok, views) = all_routes(&admins, Duration::from_secs(60), |v| v["state"] == "rolled_back").await;
    assert!(ok, "not rolled back after the source came back: {views:#?}");
    // A replica may latch from the first one's steering before its own fold
    // gets to the failing time (reason `fleet`); the fold then names it.
    for v in &views {
        assert!(["error_rate", "fleet"].contains(&v["rolled_back"]["reason"].as_str().unwrap_or("")), "{v}");
    }
    let (ok, views) = all_routes(&admins, Duration::from_secs(30), |v| {
        v["rolled_back"]["reason"] == "error_rate" && v["fleet"]["source_up"] == true
    })
    .await;
    load.stop().await;
    assert!(ok, "the folds did not reach the failing time: {views:#?}");
    let seqs: Vec<BTreeMap<String, String>> = replicas.iter().map(|r| verdicts(&r.journal())).collect();
    let fail_at: Vec<Option<&String>> =
        seqs.iter().map(|s| s.iter().find(|(_, v)| *v == "fail").map(|(t, _)| t)).collect();
    assert!(fail_at.iter().all(|f| f.is_some() && *f == fail_at[0]), "{fail_at:?}");
    same_where_both(&seqs[0], &seqs[1]);
    same_where_both(&seqs[0], &seqs[2]);
    // No evaluation time judged twice on any replica.
    for r in &replicas {
        let times: Vec<String> = r
            .journal()
            .iter()
            .filter(|e| e["event"] == "verdict" && e["actor"] == "fleet" && e["reason"] != "source_unavailable")
            .map(|e| e["at"].as_str().unwrap().to_owned())
            .collect();
        let mut dedup = times.clone();
        dedup.dedup();
        assert_eq!(times, dedup, "an evaluation time was judged twice");
    }
}

/// Figures for docs/fleet.md (not run in CI): rounds of a bad canary on
/// three replicas; per round, the time from the failing evaluation time to
/// each replica's latch, and what fleet judgement cost in queries and bytes.
/// `cargo test --release --test fleet -- --ignored --nocapture fleet_figures`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run by hand, figures in docs/fleet.md"]
async fn fleet_figures() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    for round in 0..rounds {
        let s = Upstream::start("stable").await;
        let c = canary_with_errors().await;
        bad(&c);
        let (replicas, admins, _prom) = fleet(&s, &c, "", "");
        let load = Traffic::start(replicas.iter().map(|r| r.addr).collect(), 25);
        // Poll each replica's view; note when each first shows the latch.
        let mut latched: Vec<Option<u64>> = vec![None; 3];
        let deadline = Instant::now() + Duration::from_secs(90);
        while latched.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, a) in admins.iter().enumerate() {
                if latched[i].is_none() && route_view(*a, "app").await["state"] == "rolled_back" {
                    latched[i] =
                        Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                            as u64);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        load.stop().await;
        let j = replicas[0].journal();
        let fail = j.iter().find(|e| e["event"] == "verdict" && e["verdict"] == "fail").expect("no fail");
        let t = fail["at"].as_str().unwrap();
        let fail_ms = parse_rfc3339_ms(t);
        let delays: Vec<i64> = latched.iter().map(|l| l.unwrap() as i64 - fail_ms as i64).collect();
        let m = support::get(&client(), &format!("http://{}/metrics", admins[0]), &[]).await.2;
        let metric = |name: &str| -> f64 {
            m.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()).unwrap().parse().unwrap()
        };
        let (queries, bytes) =
            (metric("weir_analysis_source_queries_total"), metric("weir_analysis_source_received_bytes_total"));
        let evals = j.iter().filter(|e| e["event"] == "verdict" && e["actor"] == "fleet").count().max(1);
        let series = support::get(&client(), &format!("http://{}/metrics", admins[0]), &[])
            .await
            .2
            .lines()
            .filter(|l| l.starts_with("weir_analysis_units_total") || l.starts_with("weir_analysis_bad_units_total"))
            .count();
        println!(
            "round {round}: fail at {t}; latched after {delays:?} ms; replica 1 sent {queries} queries, received {bytes} bytes over {evals} evaluations ({:.1} queries, {:.0} bytes each); {series} evidence series per replica",
            queries / evals as f64,
            bytes / evals as f64
        );
    }
}

fn parse_rfc3339_ms(t: &str) -> u64 {
    // 2026-12-01T18:20:53.000Z
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant).
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    ((days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) * 1000 + ms) as u64
}
