//! Black-box tests of the traffic split: weights, sticky players, segments,
//! overrides, kill switch, bucket cookies and canary fallback, asserting what
//! the upstreams actually received.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, get, refused_addr};

fn sticky_route(weight: &str) -> String {
    format!(
        r#"  - name: app
    stable: {{upstream: v1, revision: "1.0"}}
    canary: {{upstream: v2, revision: "2.0"}}
    weight: {weight}
    sticky: {{keys: ["header:x-player-id", "cookie:player_id"]}}
    override: {{header: x-weir-override, cookie: weir_override}}
    segments:
      - {{name: staff, match: {{header: {{x-employee: "true"}}}}, weight: 100}}
      - {{name: vip, match: {{header: {{x-vip: "true"}}}}, weight: 0}}
      - {{name: nordics, match: {{header: {{x-market: [SE, NO, FI]}}}}, weight: 25}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_split_by_weight_within_tolerance() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &sticky_route("10"))).await;
    let http = client();
    let n = 10_000;
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (http, url) = (http.clone(), weir.url("/"));
        tasks.push(tokio::spawn(async move {
            let mut canary = 0;
            for _ in 0..n / 20 {
                let (status, headers, body) = get(&http, &url, &[]).await;
                assert_eq!(status, 200, "task {t}");
                assert_eq!(headers["x-upstream"], body.as_str());
                canary += usize::from(body == "canary");
            }
            canary
        }));
    }
    let mut client_canary = 0;
    for t in tasks {
        client_canary += t.await.unwrap();
    }
    // What the upstreams received agrees with what clients saw.
    assert_eq!(c.count(), client_canary);
    assert_eq!(s.count() + c.count(), n);
    // Binomial(10000, 0.1): sd = 30; allow 5 sd.
    assert!((client_canary as i64 - 1000).abs() < 150, "canary got {client_canary} of {n}");
    for seen in c.requests().iter().take(10) {
        assert_eq!(seen.headers["x-weir-version"], "canary");
        assert_eq!(seen.headers["x-weir-route"], "app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_stays_on_one_version_and_on_canary_as_weight_rises() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &sticky_route("1"))).await;
    let http = client();
    let players: Vec<String> = (0..300).map(|i| format!("player-{i}")).collect();
    let mut on_canary = vec![false; players.len()];
    let mut counts = Vec::new();
    for weight in ["1", "5", "25", "100"] {
        weir.install(&config(s.addr, c.addr, &sticky_route(weight)));
        let mut canary_now = 0;
        for (i, p) in players.iter().enumerate() {
            // Same player, three requests: always the same version.
            let mut versions = Vec::new();
            for _ in 0..3 {
                versions.push(get(&http, &weir.url("/"), &[("x-player-id", p)]).await.2);
            }
            assert!(versions.iter().all(|v| v == &versions[0]), "{p} flapped at weight {weight}: {versions:?}");
            let canary = versions[0] == "canary";
            assert!(!on_canary[i] || canary, "{p} moved back to stable when weight rose to {weight}");
            on_canary[i] = canary;
            canary_now += usize::from(canary);
        }
        counts.push(canary_now);
    }
    assert_eq!(counts[3], players.len(), "weight 100 puts everyone on canary");
    assert!(counts[0] <= counts[1] && counts[1] <= counts[2], "{counts:?}");
    // The sticky key was used; the raw key never reached a log, but the
    // upstream gets the request headers as sent.
    assert!(c.requests().iter().all(|r| r.headers.contains_key("x-player-id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_force_deny_and_share() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &sticky_route("50"))).await;
    let http = client();
    for i in 0..100 {
        let id = format!("p{i}");
        let staff = get(&http, &weir.url("/"), &[("x-player-id", &id), ("x-employee", "true")]).await.2;
        assert_eq!(staff, "canary", "staff segment is 100 %");
        let vip = get(&http, &weir.url("/"), &[("x-player-id", &id), ("x-vip", "true")]).await.2;
        assert_eq!(vip, "stable", "vip segment is 0 %");
    }
    let mut nordic_canary = 0;
    let n = 2000;
    for i in 0..n {
        let id = format!("nordic-{i}");
        let v = get(&http, &weir.url("/"), &[("x-player-id", &id), ("x-market", ["SE", "NO", "FI"][i % 3])]).await.2;
        nordic_canary += usize::from(v == "canary");
    }
    // Binomial(2000, 0.25): sd ≈ 19.4; allow 5 sd.
    assert!((nordic_canary as i64 - 500).abs() < 97, "nordics on canary: {nordic_canary}/{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_header_and_cookie_pick_the_version() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &sticky_route("0"))).await;
    let http = client();
    assert_eq!(get(&http, &weir.url("/"), &[("x-weir-override", "canary")]).await.2, "canary");
    assert_eq!(get(&http, &weir.url("/"), &[("cookie", "weir_override=canary")]).await.2, "canary");
    assert_eq!(get(&http, &weir.url("/"), &[("x-weir-override", "bogus")]).await.2, "stable");
    let seen = c.requests();
    assert_eq!(seen.len(), 2);
    // The configured override header is the one x-weir-* header passed on.
    assert_eq!(seen[0].headers["x-weir-override"], "canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switch_sends_everyone_to_stable() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let killed = sticky_route("100").replace("    weight: 100\n", "    weight: 100\n    kill_switch: true\n");
    let weir = Weir::start(&config(s.addr, c.addr, &killed)).await;
    let http = client();
    for h in [("x-weir-override", "canary"), ("x-employee", "true"), ("x-player-id", "p1")] {
        assert_eq!(get(&http, &weir.url("/"), &[h]).await.2, "stable", "{h:?}");
    }
    assert_eq!(c.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_down_falls_back_to_stable_with_no_client_errors() {
    let s = Upstream::start("stable").await;
    let dead_guard = refused_addr().await;
    let dead = dead_guard.addr;
    let weir = Weir::start(&config(s.addr, dead, &sticky_route("50"))).await;
    let http = client();
    for i in 0..200 {
        let (status, _, body) = get(&http, &weir.url("/checkout"), &[("x-player-id", &format!("p{i}"))]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "stable"));
    }
    // A POST is safe too: the canary never saw it, so stable gets the body intact.
    for i in 0..50 {
        let body = format!("bet-{i}");
        let req = http::Request::post(weir.url("/bet"))
            .header("x-player-id", format!("p{i}"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let resp = http.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(s.count(), 250);
    let posts: Vec<_> = s.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 50);
    for (i, p) in posts.iter().enumerate() {
        assert_eq!(p.body, format!("bet-{i}").as_bytes());
    }
    assert!(s.requests().iter().all(|r| r.headers["x-weir-version"] == "stable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_down_gives_502_quickly() {
    let c = Upstream::start("canary").await;
    let dead_guard = refused_addr().await;
    let dead = dead_guard.addr;
    let weir = Weir::start(&config(dead, c.addr, &sticky_route("0"))).await;
    let http = client();
    let t = Instant::now();
    let (status, headers, _) = get(&http, &weir.url("/"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-weir-error"], "upstream_connect");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(c.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_cookie_keeps_anonymous_users_on_their_version_and_forgeries_are_ignored() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "k3y-material\n").unwrap();
    let route = format!(
        r#"  - name: app
    stable: {{upstream: v1}}
    canary: {{upstream: v2}}
    weight: 50
    sticky: {{keys: ["header:x-player-id"], cookie: {{name: wb, max_age: 1d, secret_file: "{}"}}}}
"#,
        secret.path().display()
    );
    let weir = Weir::start(&config(s.addr, c.addr, &route)).await;
    let http = client();
    for _ in 0..20 {
        let (_, headers, first) = get(&http, &weir.url("/"), &[]).await;
        let set = headers["set-cookie"].to_str().unwrap().to_string();
        assert!(set.starts_with("wb=") && set.contains("Max-Age=86400") && set.contains("HttpOnly"), "{set}");
        let cookie = set.split(';').next().unwrap().to_string();
        for _ in 0..5 {
            let (_, h, again) = get(&http, &weir.url("/"), &[("cookie", &cookie)]).await;
            assert_eq!(again, first, "the cookie keeps the version");
            assert!(h.get("set-cookie").is_none(), "a valid cookie is not re-issued");
        }
    }
    // Unsigned or forged: ignored, so a fresh signed cookie is issued.
    for forged in ["wb=1", "wb=1.00000000000000000000000000000000"] {
        let (_, h, _) = get(&http, &weir.url("/"), &[("cookie", forged)]).await;
        assert!(h.get("set-cookie").is_some(), "{forged} must be ignored");
    }
}
