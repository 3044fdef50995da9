//! Unit and property tests of the pure routing decision.

use super::*;
use crate::config::validate;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use std::path::Path;

fn table(yaml: &str) -> Table {
    match validate(yaml.as_bytes(), Path::new(".")) {
        Ok(s) => s.table,
        Err(p) => panic!("invalid test config: {p:?}"),
    }
}

const BASE: &str = r#"
listen: [{address: "127.0.0.1:0"}]
upstreams:
  v1: {endpoints: ["127.0.0.1:1"]}
  v2: {endpoints: ["127.0.0.1:2"]}
routes:
"#;

fn with_routes(routes: &str) -> Table {
    table(&format!("{BASE}{routes}"))
}

fn sticky_route(weight: f64) -> Table {
    with_routes(&format!(
        r#"
  - name: app
    stable: {{upstream: v1}}
    canary: {{upstream: v2}}
    weight: {weight}
    sticky: {{keys: ["header:x-player-id", "cookie:player_id", "query:player"]}}
"#
    ))
}

fn hdrs(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn decide_with(t: &Table, host: &str, path: &str, h: &HeaderMap, draw: u16) -> Option<Decision> {
    decide(
        t,
        &Facts { host, path, query: None, headers: h, client_cert: None, method: &http::Method::GET, https: false },
        draw,
    )
}

fn player(t: &Table, id: &str) -> Decision {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-player-id", v);
    }
    match decide_with(t, "any", "/", &h, 0) {
        Some(d) => d,
        None => panic!("no route"),
    }
}

#[test]
fn routes_match_in_file_order_by_host_and_prefix() {
    let t = with_routes(
        r#"
  - name: api
    match: {hosts: ["api.example.com", "*.svc.example.com"], path_prefix: /api}
    stable: {upstream: v1}
  - name: shop
    match: {hosts: [shop.example.com]}
    stable: {upstream: v1}
  - name: catchall
    stable: {upstream: v2}
"#,
    );
    let h = HeaderMap::new();
    let name = |host: &str, path: &str| decide_with(&t, host, path, &h, 0).map(|d| t.routes[d.route].name.to_string());
    assert_eq!(name("api.example.com", "/api/x").as_deref(), Some("api"));
    assert_eq!(name("API.Example.COM", "/api").as_deref(), Some("api"), "host is case-insensitive");
    assert_eq!(name("a.svc.example.com", "/api").as_deref(), Some("api"), "wildcard subdomain");
    assert_eq!(name("svc.example.com", "/api").as_deref(), Some("catchall"), "wildcard is not the apex");
    assert_eq!(name("api.example.com", "/other").as_deref(), Some("catchall"), "prefix must fit");
    assert_eq!(name("shop.example.com", "/api").as_deref(), Some("shop"));
    let only = with_routes("  - {name: a, match: {hosts: [a.example]}, stable: {upstream: v1}}\n");
    assert_eq!(decide_with(&only, "b.example", "/", &h, 0), None, "no route → None (404)");
}

#[test]
fn kill_switch_and_rollback_beat_override_and_segments() {
    let yaml = |extra: &str| {
        with_routes(&format!(
            r#"
  - name: app
    stable: {{upstream: v1}}
    canary: {{upstream: v2}}
    weight: 100
    override: {{header: x-weir-override}}
    segments: [{{name: staff, match: {{header: {{x-employee: "true"}}}}, weight: 100}}]
{extra}"#
        ))
    };
    let h = hdrs(&[("x-weir-override", "canary"), ("x-employee", "true")]);
    let killed = yaml("    kill_switch: true\n");
    let d = decide_with(&killed, "h", "/", &h, 0);
    assert_eq!(d.map(|d| (d.version, d.reason)), Some((Version::Stable, Reason::KillSwitch)));

    let mut rolled = yaml("");
    std::sync::Arc::make_mut(&mut rolled.routes[0]).overlay.rolled_back = true;
    let d = decide_with(&rolled, "h", "/", &h, 0);
    assert_eq!(d.map(|d| (d.version, d.reason)), Some((Version::Stable, Reason::Rollback)));
}

#[test]
fn override_header_then_cookie_with_only_known_values() {
    let t = with_routes(
        r#"
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2}
    weight: 0
    override: {header: x-weir-override, cookie: weir_override}
"#,
    );
    let v = |h: HeaderMap| decide_with(&t, "h", "/", &h, 0).map(|d| (d.version, d.reason));
    assert_eq!(v(hdrs(&[("x-weir-override", "canary")])), Some((Version::Canary, Reason::Override)));
    assert_eq!(v(hdrs(&[("cookie", "a=1; weir_override=canary")])), Some((Version::Canary, Reason::Override)));
    assert_eq!(
        v(hdrs(&[("x-weir-override", "stable"), ("cookie", "weir_override=canary")])),
        Some((Version::Stable, Reason::Override)),
        "header wins over cookie"
    );
    assert_eq!(
        v(hdrs(&[("x-weir-override", "CANARY!")])),
        Some((Version::Stable, Reason::Weight)),
        "other values ignored"
    );
}

#[test]
fn first_present_sticky_key_gives_the_bucket() {
    let t = sticky_route(50.0);
    let by_header = decide_with(&t, "h", "/", &hdrs(&[("x-player-id", "p1"), ("cookie", "player_id=p2")]), 0);
    assert_eq!(
        by_header.and_then(|d| d.bucket),
        Some(Bucket {
            value: bucket_of(b"app\x1f", b"p1"),
            source: BucketSource::Key(0),
            user: key_hash(b"app\x1f", b"p1")
        })
    );
    let by_cookie = decide_with(&t, "h", "/", &hdrs(&[("cookie", "x=1; player_id=p2")]), 0);
    assert_eq!(by_cookie.and_then(|d| d.bucket.map(|b| b.value)), Some(bucket_of(b"app\x1f", b"p2")));
    let h = HeaderMap::new();
    let by_query = decide(
        &t,
        &Facts {
            host: "h",
            path: "/",
            query: Some("a=1&player=p3"),
            headers: &h,
            client_cert: None,
            method: &http::Method::GET,
            https: false,
        },
        0,
    );
    assert_eq!(by_query.and_then(|d| d.bucket.map(|b| b.value)), Some(bucket_of(b"app\x1f", b"p3")));
    let none = decide_with(&t, "h", "/", &h, 1234);
    assert_eq!(none.and_then(|d| d.bucket), Some(Bucket { value: 1234, source: BucketSource::Random, user: 0 }));
    assert_eq!(none.and_then(|d| d.set_cookie), None, "no cookie configured");
}

#[test]
fn bucket_cookie_is_used_and_set_when_no_key() {
    let t = with_routes(
        r#"
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2}
    weight: 50
    sticky: {keys: ["header:x-player-id"], cookie: {name: wb}}
"#,
    );
    let fresh = decide_with(&t, "h", "/", &HeaderMap::new(), 777);
    assert_eq!(fresh.and_then(|d| d.set_cookie), Some(777));
    let back = decide_with(&t, "h", "/", &hdrs(&[("cookie", "wb=777")]), 5);
    let unit = |cookie: &'static str| decide_with(&t, "h", "/", &hdrs(&[("cookie", cookie)]), 9).and_then(|d| d.bucket);
    let b = back.and_then(|d| d.bucket);
    assert_eq!(b.map(|b| (b.value, b.source)), Some((777, BucketSource::Cookie)));
    assert!(b.is_some_and(|b| b.user != 0), "a cookie holder is a counted unit");
    assert_eq!(unit("wb=777").map(|u| u.user), b.map(|b| b.user), "one bucket, one unit");
    assert_ne!(unit("wb=778").map(|u| u.user), b.map(|b| b.user));
    assert_eq!(back.and_then(|d| d.set_cookie), None);
    let junk = decide_with(&t, "h", "/", &hdrs(&[("cookie", "wb=99999")]), 5);
    assert_eq!(junk.and_then(|d| d.set_cookie), Some(5), "invalid cookie → fresh bucket and a new cookie");
}

#[test]
fn segments_deny_force_and_share() {
    let t = with_routes(
        r#"
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2}
    weight: 50
    sticky: {keys: ["header:x-player-id"]}
    segments:
      - {name: staff, match: {header: {x-employee: "true"}}, weight: 100}
      - {name: vip, match: {header: {x-vip: "true"}}, weight: 0}
      - {name: nordics, match: {header: {x-market: [SE, NO, FI]}, cookie: {brand: b1}}, weight: 25}
"#,
    );
    for draw in [0u16, 5000, 9999] {
        let d = decide_with(&t, "h", "/", &hdrs(&[("x-employee", "true"), ("x-vip", "true")]), draw);
        assert_eq!(d.map(|d| (d.version, d.reason)), Some((Version::Canary, Reason::Segment(0))), "first segment wins");
        let d = decide_with(&t, "h", "/", &hdrs(&[("x-vip", "true")]), draw);
        assert_eq!(d.map(|d| (d.version, d.reason)), Some((Version::Stable, Reason::Segment(1))));
    }
    let nordic = |draw| decide_with(&t, "h", "/", &hdrs(&[("x-market", "NO"), ("cookie", "brand=b1")]), draw);
    assert_eq!(nordic(2499).map(|d| (d.version, d.reason)), Some((Version::Canary, Reason::Segment(2))));
    assert_eq!(nordic(2500).map(|d| (d.version, d.reason)), Some((Version::Stable, Reason::Segment(2))));
    let partial = decide_with(&t, "h", "/", &hdrs(&[("x-market", "NO")]), 0);
    assert_eq!(partial.map(|d| d.reason), Some(Reason::Weight), "all conditions must fit");
    assert_eq!(Reason::Segment(2).describe(&t.routes[0]), "segment:nordics");
}

#[test]
fn weighted_split_of_random_draws_is_exact_over_all_buckets() {
    // Every bucket once: the canary share is exactly the weight.
    for w in [0.0, 0.01, 5.0, 33.33, 50.0, 99.99, 100.0] {
        let t = sticky_route(w);
        let canary = (0..BUCKETS)
            .filter(|&b| decide_with(&t, "h", "/", &HeaderMap::new(), b).is_some_and(|d| d.version == Version::Canary))
            .count();
        assert_eq!(canary as f64, (w * 100.0_f64).round(), "weight {w}");
    }
}

#[test]
fn hashed_players_split_within_statistical_tolerance() {
    let t = sticky_route(10.0);
    let n = 20_000;
    let canary = (0..n).filter(|i| player(&t, &format!("player-{i}")).version == Version::Canary).count();
    // Binomial(n, 0.1): sd = sqrt(n p (1-p)) ≈ 42; allow 5 sd.
    let expected = n as f64 * 0.1;
    let sd = (n as f64 * 0.1 * 0.9).sqrt();
    assert!((canary as f64 - expected).abs() < 5.0 * sd, "canary {canary} of {n}");
}

proptest! {
    #[test]
    fn raising_the_weight_never_moves_a_canary_player_back(id in "[a-zA-Z0-9-]{1,40}", a in 0u16..=10000, b in 0u16..=10000) {
        let (lo, hi) = (a.min(b), a.max(b));
        let mut t = sticky_route(0.0);
        std::sync::Arc::make_mut(&mut t.routes[0]).overlay.weight_bp = lo;
        let at_lo = player(&t, &id).version;
        std::sync::Arc::make_mut(&mut t.routes[0]).overlay.weight_bp = hi;
        let at_hi = player(&t, &id).version;
        // canary at the low weight ⇒ canary at the high weight (and lowering only moves users out).
        prop_assert!(at_lo == Version::Stable || at_hi == Version::Canary);
    }

    #[test]
    fn two_replicas_agree_on_every_player(id in ".{0,64}", w in 0u16..=10000) {
        let mut one = sticky_route(0.0);
        let mut two = sticky_route(0.0);
        std::sync::Arc::make_mut(&mut one.routes[0]).overlay.weight_bp = w;
        std::sync::Arc::make_mut(&mut two.routes[0]).overlay.weight_bp = w;
        prop_assert_eq!(player(&one, &id), player(&two, &id));
    }

    #[test]
    fn weight_zero_and_hundred_are_exact(id in "[a-z0-9]{1,20}", draw in 0u16..BUCKETS) {
        let zero = sticky_route(0.0);
        let all = sticky_route(100.0);
        prop_assert_eq!(player(&zero, &id).version, Version::Stable);
        prop_assert_eq!(player(&all, &id).version, Version::Canary);
        prop_assert_eq!(decide_with(&zero, "h", "/", &HeaderMap::new(), draw).map(|d| d.version), Some(Version::Stable));
        prop_assert_eq!(decide_with(&all, "h", "/", &HeaderMap::new(), draw).map(|d| d.version), Some(Version::Canary));
    }
}

proptest! {
    #[test]
    fn host_index_agrees_with_a_linear_scan(
        routes in proptest::collection::vec((0usize..6, 0usize..3, any::<bool>()), 1..12),
        host in 0usize..8,
        path in 0usize..3,
    ) {
        const HOSTS: [&str; 6] = ["a.example.com", "*.example.com", "b.example.com", "*.com", "other.test", ""];
        const PATHS: [&str; 3] = ["/", "/api", "/api/v2"];
        const REQ_HOSTS: [&str; 8] =
            ["a.example.com", "A.Example.COM", "x.a.example.com", "example.com", "b.example.com", "other.test", "com", "zz"];
        let mut y = String::new();
        for (i, (h, p, second)) in routes.iter().enumerate() {
            let hosts = match (HOSTS[*h], second) {
                ("", _) => String::new(),
                (h, true) => format!("hosts: [\"{h}\", \"other.test\"], "),
                (h, false) => format!("hosts: [\"{h}\"], "),
            };
            y.push_str(&format!("  - {{name: r{i}, match: {{{hosts}path_prefix: {}}}, stable: {{upstream: v1}}}}\n", PATHS[*p]));
        }
        let t = with_routes(&y);
        let (host, path) = (REQ_HOSTS[host], PATHS[path]);
        let h = HeaderMap::new();
        let facts = Facts { host, path, query: None, headers: &h, client_cert: None, method: &http::Method::GET, https: false };
        let linear = t.routes.iter().position(|r| r.matches(&facts));
        prop_assert_eq!(t.find(&facts), linear);
    }
}

#[test]
fn kubernetes_path_types_match_exactly_or_by_whole_segments() {
    let t = with_routes(
        r#"
  - {name: exact, match: {path: /session, path_type: exact}, stable: {upstream: v1}}
  - {name: segs, match: {path: /api/, path_type: prefix}, stable: {upstream: v1}}
  - {name: str, match: {path_prefix: /st}, stable: {upstream: v1}}
"#,
    );
    let route =
        |path: &str| decide_with(&t, "h", path, &HeaderMap::new(), 0).map(|d| t.routes[d.route].name.to_string());
    assert_eq!(route("/session").as_deref(), Some("exact"));
    assert_eq!(route("/session/"), None, "exact is exact");
    assert_eq!(route("/api").as_deref(), Some("segs"), "a trailing / in the rule does not matter");
    assert_eq!(route("/api/").as_deref(), Some("segs"));
    assert_eq!(route("/api/v1/bet").as_deref(), Some("segs"));
    assert_eq!(route("/apix"), None, "not a whole segment");
    assert_eq!(route("/stats").as_deref(), Some("str"), "path_prefix stays a plain string prefix");
    assert!(PathMatch::Segments("/".into()).matches("/anything"));
}

#[test]
fn header_regex_segments_search_the_value_and_bad_patterns_name_their_field() {
    let t = with_routes(
        r#"
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v2}
    segments:
      - {name: brands, match: {header_regex: {x-brand: "^(lucky|star)"}}, weight: 100}
"#,
    );
    let version = |v: &'static str| decide_with(&t, "h", "/", &hdrs(&[("x-brand", v)]), 0).map(|d| d.version);
    assert_eq!(version("lucky-7"), Some(Version::Canary));
    assert_eq!(version("starlight"), Some(Version::Canary));
    assert_eq!(version("unlucky"), Some(Version::Stable), "anchored by the pattern itself");
    for (pattern, why) in [("(", "invalid regex"), ("a{1000}{1000}", "invalid regex")] {
        let yaml = format!(
            "{BASE}  - {{name: app, stable: {{upstream: v1}}, canary: {{upstream: v2}}, segments: [{{name: s, match: {{header_regex: {{x-b: \"{pattern}\"}}}}, weight: 1}}]}}\n"
        );
        let problems = validate(yaml.as_bytes(), Path::new(".")).err().unwrap_or_default();
        assert!(
            problems
                .iter()
                .any(|p| p.path == "routes[0].segments[0].match.header_regex.x-b" && p.message.contains(why)),
            "{pattern}: {problems:?}"
        );
    }
    let long = format!(
        "{BASE}  - {{name: app, stable: {{upstream: v1}}, canary: {{upstream: v2}}, segments: [{{name: s, match: {{header_regex: {{x-b: \"{}\"}}}}, weight: 1}}]}}\n",
        "a".repeat(2000)
    );
    assert!(validate(long.as_bytes(), Path::new(".")).is_err());
}
