//! Retries with a budget (design §13, issue 33 items 5 and 6): a retry goes
//! to another endpoint of the same version, only for requests that can be
//! replayed, within a budget; and every failed attempt is still evidence
//! against its version, so a retry that saves the user never saves a bad
//! canary. Asserted on what each pod received, what clients got, the
//! metrics, and the rollback journal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Load, Upstream, Weir, client, get, journal, metric, metrics, wait_route};

fn eps(pods: &[&Upstream]) -> String {
    pods.iter().map(|p| format!("\"{}\"", p.addr)).collect::<Vec<_>>().join(", ")
}

/// `tasks` clients sending `each` GETs; the statuses they got.
async fn statuses(
    weir: &Weir,
    tasks: usize,
    each: usize,
    headers: &'static [(&'static str, &'static str)],
) -> Vec<u16> {
    let calls: Vec<_> = (0..tasks)
        .map(|_| {
            let (http, url) = (client(), weir.url("/"));
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..each {
                    got.push(get(&http, &url, headers).await.0.as_u16());
                }
                got
            })
        })
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.extend(tokio::time::timeout(Duration::from_secs(60), c).await.unwrap().unwrap());
    }
    out
}

/// A version failing every request: the retries it causes stay within the
/// budget (20 % of requests, plus the floor of 10 per 10 s window), so a
/// failing version cannot multiply its load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_version_gets_no_more_retries_than_its_budget() {
    let pods = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    for p in &pods {
        p.status.store(503, Ordering::Relaxed);
    }
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [{}], retry: {{attempts: 2, on: [503], budget: 20%}},\n\
         \x20     health: {{passive: {{consecutive_failures: 0}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        eps(&pods.iter().collect::<Vec<_>>())
    );
    let weir = Weir::start(&yaml).await;
    let got = statuses(&weir, 8, 100, &[]).await;
    assert!(got.iter().all(|&s| s == 503), "the last attempt's answer reaches the client");
    let attempts: usize = pods.iter().map(Upstream::count).sum();
    let extra = attempts - got.len();
    println!("{} requests, {attempts} attempts, {extra} retries", got.len());
    // 20 % of 800 plus the floor; a run spanning a window edge gets a second floor.
    assert!(extra <= 160 + 20, "{extra} retries for {} requests", got.len());
    assert!(extra >= 100, "retries stopped well short of the budget: {extra}");
    let m = metrics(weir.admin).await;
    assert_eq!(metric(&m, "weir_retried_attempts_total{route=\"app\",version=\"stable\"}"), Some(extra as f64), "{m}");
}

/// A retry stays in the version: a canary pod answering 503 is retried on
/// the other canary pod, never on stable. A POST is never replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_another_pod_of_the_same_version_and_never_replays_a_post() {
    let stable = Upstream::start("stable").await;
    let (bad, good) = (Upstream::start("bad").await, Upstream::start("good").await);
    bad.status.store(503, Ordering::Relaxed);
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\"]}}\n  v2: {{endpoints: [{}], balance: round_robin,\n\
         \x20     retry: {{attempts: 1, on: [503], budget: 100%}}, health: {{passive: {{consecutive_failures: 0}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n    canary: {{upstream: v2}}\n    weight: 100\n",
        stable.addr,
        eps(&[&bad, &good])
    );
    let weir = Weir::start(&yaml).await;
    let got = statuses(&weir, 1, 20, &[]).await;
    assert!(got.iter().all(|&s| s == 200), "{got:?}");
    assert_eq!(stable.count(), 0, "a canary failure is never retried on stable");
    assert_eq!(good.count(), 20);
    // Round robin turns on every attempt, so each request tried the bad
    // pod first and was retried once on the good one.
    let m = metrics(weir.admin).await;
    let retried = metric(&m, "weir_retried_attempts_total{route=\"app\",version=\"canary\"}").unwrap();
    assert_eq!(retried, bad.count() as f64, "{m}");
    assert!(bad.count() >= 10, "the bad pod was tried: {}", bad.count());

    // POST with no body: not idempotent, so a 503 goes back as it is.
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let req = http::Request::post(weir.url("/bet")).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        statuses.push(http.request(req).await.unwrap().status().as_u16());
    }
    let posts = |u: &Upstream| u.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts(&bad) + posts(&good), 10, "each POST sent once");
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), posts(&bad), "{statuses:?}");
}

/// An idempotent request with a body is retried when the body was declared
/// and small enough to keep a copy of (`REPLAY_MAX_BODY`, 64 KiB): the
/// other pod gets the same bytes. A larger one is sent once, like a POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_a_small_body_is_retried_with_that_body_and_a_large_one_is_not() {
    let (bad, good) = (Upstream::start("bad").await, Upstream::start("good").await);
    bad.status.store(503, Ordering::Relaxed);
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [{}], balance: round_robin,\n\
         \x20     retry: {{attempts: 1, on: [503], budget: 100%}}, health: {{passive: {{consecutive_failures: 0}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        eps(&[&bad, &good])
    );
    let weir = Weir::start(&yaml).await;
    let http = client();
    let put = |size: usize, seed: u8| {
        let body: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let req =
            http::Request::put(weir.url("/profile")).body(http_body_util::Full::new(bytes::Bytes::from(body.clone())));
        (req.unwrap(), body)
    };
    let puts = |u: &Upstream| u.requests().into_iter().filter(|r| r.method == "PUT").collect::<Vec<_>>();
    // Small bodies: every PUT answered 200 by the good pod, with the bytes the client sent.
    let mut sent = Vec::new();
    for i in 0..10u8 {
        let (req, body) = put(2_000 + usize::from(i) * 100, i);
        let status = http.request(req).await.unwrap().status();
        assert_eq!(status, 200, "PUT {i} was retried onto the good pod");
        sent.push(body);
    }
    let (on_bad, on_good) = (puts(&bad), puts(&good));
    assert_eq!(on_good.len(), 10);
    for (got, want) in on_good.iter().zip(&sent) {
        assert_eq!(&got.body[..], &want[..], "the retry carried the whole body");
        assert_eq!(got.headers["content-length"], want.len().to_string().as_str());
    }
    assert!(!on_bad.is_empty(), "the bad pod was tried first");
    for got in &on_bad {
        assert!(sent.iter().any(|w| got.body[..] == w[..]), "the first attempt carried the body too");
    }
    // Over the cap: sent once; the bad pod's 503 reaches the client.
    let (before_bad, before_good) = (puts(&bad).len(), puts(&good).len());
    let mut statuses = Vec::new();
    for i in 0..6u8 {
        let (req, _) = put(70 * 1024, i);
        statuses.push(http.request(req).await.unwrap().status().as_u16());
    }
    let (bad_n, good_n) = (puts(&bad).len() - before_bad, puts(&good).len() - before_good);
    assert_eq!(bad_n + good_n, 6, "each large PUT sent once: {statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 503).count(), bad_n, "{statuses:?}");
    assert!(bad_n > 0, "round robin gave the bad pod some: {statuses:?}");
}

/// Issue 33 point 6: a canary whose every pod fails 5 % of requests is
/// rolled back with retries on, although retries hide nearly all of those
/// failures from users, and in about the canary traffic it needs with
/// retries off; the journal says attempts were retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_save_users_but_not_a_bad_canary() {
    let mut used = Vec::new();
    for retry in ["retry: {attempts: 2, on: [500], budget: 50%}, ", "retry: {attempts: 0}, "] {
        let stable = Upstream::start("stable").await;
        let pods = [Upstream::start("canary-a").await, Upstream::start("canary-b").await];
        for p in &pods {
            // Every 20th request, spread out (not bursts of five in a row).
            p.error_every.store(20, Ordering::Relaxed);
        }
        let yaml = format!(
            r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  v1: {{endpoints: ["{}"]}}
  v2: {{endpoints: [{}], {retry}health: {{passive: {{consecutive_failures: 0}}}}}}
routes:
  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: 50
    sticky: {{keys: ["header:x-player-id"]}}
    analysis: {{interval: 200ms, window: 2s}}
"#,
            stable.addr,
            eps(&[&pods[0], &pods[1]])
        );
        let weir = Weir::start(&yaml).await;
        let load = Load::start(weir.url("/"), 6);
        let (ok, v) = wait_route(weir.admin, "app", Duration::from_secs(40), |v| v["state"] == "rolled_back").await;
        let canary_attempts: usize = pods.iter().map(Upstream::count).sum();
        load.stop().await;
        assert!(ok, "not rolled back with `{retry}`: {v}");
        assert_eq!(v["rolled_back"]["reason"], "error_rate", "{v}");
        let m = metrics(weir.admin).await;
        let retried = metric(&m, "weir_retried_attempts_total{route=\"app\",version=\"canary\"}").unwrap();
        let user_errors =
            metric(&m, "weir_requests_total{route=\"app\",version=\"canary\",code=\"500\"}").unwrap_or(0.0);
        let line = journal(&weir.dir.path().join("weir-state"))
            .into_iter()
            .find(|e| e["route"] == "app" && e["event"] == "rollback")
            .unwrap();
        println!(
            "{retry}: rolled back after {canary_attempts} canary attempts; {retried} retried, {user_errors} 500s to users"
        );
        if retry.contains("attempts: 2") {
            assert!(retried > 0.0, "{m}");
            assert!(user_errors < retried, "retries saved most users: {user_errors} errors, {retried} retried");
            let why = line["why"].as_str().unwrap();
            assert!(why.contains("retried"), "the journal says attempts were retried: {why}");
            assert!(line["retried_attempts"]["canary"].as_u64().unwrap() > 0, "{line}");
        } else {
            assert_eq!(retried, 0.0);
        }
        used.push(canary_attempts as f64);
    }
    // Same evidence either way: within a factor of three (one run each;
    // the sequential test itself is random).
    let ratio = used[0] / used[1];
    println!("canary attempts to rollback, retries on / off: {ratio:.2}");
    assert!((1.0 / 3.0..=3.0).contains(&ratio), "{used:?}");
}
