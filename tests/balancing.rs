//! Balancing inside a version (design §13, issue 33 item 3) and what
//! `GET /upstreams` shows (item 7): with `p2c` (least outstanding of two
//! random endpoints) a slow pod gets little traffic; with `round_robin`
//! it gets its turn like the others. Every request and failed connect is
//! counted on the endpoint it went to, and `in_flight` returns to zero.
//! Asserted on what each upstream received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, get, refused_addr};

/// Three endpoints of one upstream (the middle one slow), `balance` as given.
async fn three_pods(balance: &str) -> (Vec<Upstream>, Weir) {
    let pods = vec![Upstream::start("a").await, Upstream::start("slow").await, Upstream::start("c").await];
    pods[1].delay_ms.store(100, std::sync::atomic::Ordering::Relaxed);
    let eps: Vec<String> = pods.iter().map(|p| format!("\"{}\"", p.addr)).collect();
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [{}], balance: {balance}}}\nroutes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        eps.join(", ")
    );
    (pods, Weir::start(&yaml).await)
}

/// `tasks` clients, each sending `each` requests one after another.
async fn load(weir: &Weir, tasks: usize, each: usize) {
    let calls: Vec<_> = (0..tasks)
        .map(|_| {
            let (http, url) = (client(), weir.url("/"));
            tokio::spawn(async move {
                for _ in 0..each {
                    assert_eq!(get(&http, &url, &[]).await.0, 200);
                }
            })
        })
        .collect();
    for c in calls {
        tokio::time::timeout(Duration::from_secs(60), c).await.unwrap().unwrap();
    }
}

async fn upstreams(weir: &Weir) -> serde_json::Value {
    let (status, _, body) = get(&client(), &format!("http://{}/upstreams", weir.admin), &[]).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Poll (bounded) until no request is in flight on any endpoint.
async fn settled(weir: &Weir) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = upstreams(weir).await;
        let busy: u64 =
            v["upstreams"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["in_flight"].as_u64().unwrap()).sum();
        if busy == 0 || Instant::now() > deadline {
            assert_eq!(busy, 0, "requests left in flight: {v}");
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_little_to_a_slow_pod_and_round_robin_gives_it_its_turn() {
    let (pods, weir) = three_pods("p2c").await;
    load(&weir, 12, 30).await;
    let counts: Vec<usize> = pods.iter().map(Upstream::count).collect();
    let total: usize = counts.iter().sum();
    println!("p2c: a {} / slow {} / c {} of {total}", counts[0], counts[1], counts[2]);
    assert_eq!(total, 360);
    assert!(counts[1] * 10 < total, "p2c sent the slow pod {} of {total}", counts[1]);
    assert!(counts[0] > total / 4 && counts[2] > total / 4, "the fast pods share the rest: {counts:?}");
    // What the upstream saw is what /upstreams says.
    let v = settled(&weir).await;
    assert_eq!(v["upstreams"][0]["name"], "v1");
    assert_eq!(v["upstreams"][0]["balance"], "p2c");
    for (e, pod) in v["upstreams"][0]["endpoints"].as_array().unwrap().iter().zip(&pods) {
        assert_eq!(e["address"], pod.addr.to_string());
        assert_eq!(e["state"], "healthy");
        assert_eq!(e["requests"].as_u64().unwrap(), pod.count() as u64, "{v}");
        assert_eq!(e["failures"], 0);
    }

    let (pods, weir) = three_pods("round_robin").await;
    load(&weir, 12, 30).await;
    let counts: Vec<usize> = pods.iter().map(Upstream::count).collect();
    println!("round_robin: a {} / slow {} / c {} of 360", counts[0], counts[1], counts[2]);
    assert!(counts.iter().all(|&n| (100..=140).contains(&n)), "each pod its turn: {counts:?}");
    assert_eq!(settled(&weir).await["upstreams"][0]["balance"], "round_robin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_endpoint_counts_failures_and_the_request_goes_to_the_next() {
    let (live, dead) = (Upstream::start("live").await, refused_addr().await);
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\", \"{}\"], balance: round_robin}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        dead.addr, live.addr
    );
    let weir = Weir::start(&yaml).await;
    load(&weir, 1, 10).await;
    assert_eq!(live.count(), 10);
    let v = settled(&weir).await;
    let eps = v["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps[1]["requests"].as_u64(), Some(10), "{v}");
    // Round robin starts on the dead one every other request; each of
    // those connects fails once (an attempt, failed) before the live one
    // takes the request.
    assert!(eps[0]["failures"].as_u64().unwrap() >= 4, "{v}");
    assert_eq!(eps[0]["requests"], eps[0]["failures"], "{v}");
    assert_eq!(eps[1]["failures"], 0);
}

/// Passive health (design §13, issue 33 item 4): a refusing endpoint is
/// ejected after `consecutive_failures` failed connects in a row and then
/// gets no attempts while ejected; `max_ejected` keeps at least one of two
/// endpoints in service even when both fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_skipped_but_never_all_of_them() {
    let (live, dead) = (Upstream::start("live").await, refused_addr().await);
    let yaml = |a: std::net::SocketAddr, b: std::net::SocketAddr| {
        format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
             upstreams:\n  v1: {{endpoints: [\"{a}\", \"{b}\"], balance: round_robin,\n\
             \x20     health: {{passive: {{consecutive_failures: 3, eject: 30s, max_ejected: 50%}}}}}}\n\
             routes:\n  - name: app\n    stable: {{upstream: v1}}\n"
        )
    };
    let weir = Weir::start(&yaml(dead.addr, live.addr)).await;
    load(&weir, 1, 40).await;
    assert_eq!(live.count(), 40);
    let v = settled(&weir).await;
    let eps = v["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps[0]["state"], "ejected", "{v}");
    assert_eq!(eps[0]["ejections"], 1, "{v}");
    // Three failed connects ejected it; while ejected nothing more was tried.
    assert_eq!(eps[0]["failures"], 3, "{v}");
    assert_eq!((eps[1]["state"].as_str(), eps[1]["failures"].as_u64()), (Some("healthy"), Some(0)), "{v}");

    // Both endpoints refusing: one may be ejected (50 % of 2), the other
    // keeps being tried, so clients get 502s, not a pool with nothing in it.
    let dead2 = refused_addr().await;
    let weir = Weir::start(&yaml(dead.addr, dead2.addr)).await;
    for _ in 0..12 {
        assert_eq!(get(&client(), &weir.url("/"), &[]).await.0, 502);
    }
    let v = settled(&weir).await;
    let states: Vec<&str> =
        v["upstreams"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "ejected").count(), 1, "{v}");
}

/// A black-holed endpoint (its SYNs dropped: a listener whose accept queue
/// is full) costs `connect_timeout` per attempt, so it must be ejected:
/// after `consecutive_failures` timed-out connects nothing more is sent
/// there, and every request is answered by the live endpoint (the timed-out
/// connect is retried there: the request never left weir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_endpoint_is_ejected_and_stops_costing_connect_timeouts() {
    let hole = tokio::net::TcpSocket::new_v4().unwrap();
    hole.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let hole = hole.listen(0).unwrap();
    // Fill the accept queue (never accepted): later SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(hole_addr)).await
        {
            fillers.push(s);
        }
    }
    let probe = tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(hole_addr)).await;
    assert!(probe.is_err(), "the black hole still completes handshakes");

    let live = Upstream::start("live").await;
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{hole_addr}\", \"{}\"], balance: round_robin, connect_timeout: 300ms,\n\
         \x20     health: {{passive: {{consecutive_failures: 2, eject: 30s}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        live.addr
    );
    let weir = Weir::start(&yaml).await;
    load(&weir, 1, 20).await;
    assert_eq!(live.count(), 20);
    let v = settled(&weir).await;
    let eps = v["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps[0]["state"], "ejected", "{v}");
    // Two timed-out connects, then never tried again while ejected.
    assert_eq!((eps[0]["requests"].as_u64(), eps[0]["failures"].as_u64()), (Some(2), Some(2)), "{v}");
    let m = support::metrics(weir.admin).await;
    assert_eq!(support::metric(&m, "weir_upstream_endpoints{upstream=\"v1\",state=\"ejected\"}"), Some(1.0), "{m}");
    assert_eq!(
        support::metric(
            &m,
            &format!("weir_upstream_endpoint_failures_total{{upstream=\"v1\",endpoint=\"{hole_addr}\"}}")
        ),
        Some(2.0),
        "{m}"
    );
    drop((hole, fillers));
}

/// Active health (design §13): a pod whose check answers 503 is taken out
/// after `unhealthy` failures in a row and gets no requests; when its
/// check passes `healthy` times in a row it is back. The checks are real
/// `GET /healthz` requests the pods see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_health_check_is_out_until_it_passes_again() {
    let (ok, sick) = (Upstream::start("ok").await, Upstream::start("sick").await);
    sick.status.store(503, std::sync::atomic::Ordering::Relaxed);
    let yaml = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         upstreams:\n  v1: {{endpoints: [\"{}\", \"{}\"], retry: {{attempts: 0}},\n\
         \x20     health: {{passive: {{consecutive_failures: 0}},\n\
         \x20               active: {{path: /healthz, interval: 100ms, timeout: 100ms, healthy: 2, unhealthy: 2}}}}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        ok.addr, sick.addr
    );
    let weir = Weir::start(&yaml).await;
    let state = |v: &serde_json::Value, i: usize| {
        let e = &v["upstreams"][0]["endpoints"][i];
        (e["state"].as_str().unwrap_or("").to_owned(), e["check"].as_str().unwrap_or("").to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut v = upstreams(&weir).await;
    while state(&v, 1) != ("ejected".into(), "failing".into()) {
        assert!(Instant::now() < deadline, "the failing check never took the pod out: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = upstreams(&weir).await;
    }
    assert_eq!(state(&v, 0), ("healthy".to_owned(), "passing".to_owned()), "{v}");
    let checks = sick.requests().iter().filter(|r| r.uri == "/healthz").count();
    assert!(checks >= 2, "the pod saw the checks");
    let ua = sick.requests()[0].headers["user-agent"].to_str().unwrap().to_owned();
    assert_eq!(ua, "weir-health-check");

    let served = |u: &Upstream| u.requests().iter().filter(|r| r.uri == "/").count();
    load(&weir, 2, 10).await; // `load` asserts every answer is 200
    assert_eq!((served(&ok), served(&sick)), (20, 0), "no request reached the pod out of service");

    sick.status.store(200, std::sync::atomic::Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&v, 1) != ("healthy".into(), "passing".into()) {
        assert!(Instant::now() < deadline, "the passing check never brought the pod back: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        v = upstreams(&weir).await;
    }
    load(&weir, 2, 20).await;
    assert!(served(&sick) > 0, "back in service, it gets requests again");
}
