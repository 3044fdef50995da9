//! Edge policies over real sockets: header modifiers (route and version),
//! rewrites (regex captures, prefix, hostname), redirects (HTTP→HTTPS,
//! Gateway API port rules, the loop guard), per-route timeouts and body
//! size, `match.scheme`/`match.methods`; and what `weir check` refuses.
//! Each test asserts what the upstream received, not only the status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use support::{Upstream, Weir, client, config, get};
use tokio::process::Command;

async fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "10"]).args(args).output().await.expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn header_modifiers_change_what_the_upstream_and_the_client_see() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: api
    canary: {upstream: v2, request_headers: {set: {x-version-note: canary}}, response_headers: {add: {x-served: canary}}}
    stable: {upstream: v1, request_headers: {set: {x-version-note: stable}}, response_headers: {add: {x-served: stable}}}
    override: {header: x-weir-version}
    request_headers:
      set: {x-env: prod, x-dup: one}
      add: {x-added: a}
      remove: [x-secret]
    response_headers:
      set: {cache-control: no-store}
      remove: [x-upstream]
"#,
    ))
    .await;
    let c = client();
    let (status, h, body) =
        get(&c, &w.url("/p"), &[("x-dup", "client"), ("x-secret", "s3cr3t"), ("x-added", "client")]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    let seen = v1.requests();
    let r = &seen[0].headers;
    assert_eq!(r.get("x-env").unwrap(), "prod");
    assert_eq!(r.get_all("x-dup").iter().collect::<Vec<_>>(), ["one"], "set replaces the client's value");
    assert_eq!(r.get_all("x-added").iter().collect::<Vec<_>>(), ["client", "a"], "add appends");
    assert!(r.get("x-secret").is_none(), "remove drops it before the upstream");
    assert_eq!(r.get("x-version-note").unwrap(), "stable");
    assert_eq!(h.get("cache-control").unwrap(), "no-store");
    assert!(h.get("x-upstream").is_none());
    assert_eq!(h.get("x-served").unwrap(), "stable");
    // The canary's own modifiers, after the route's.
    let (_, h, body) = get(&c, &w.url("/p"), &[("x-weir-version", "canary")]).await;
    assert_eq!(body, "v2");
    assert_eq!(v2.requests()[0].headers.get("x-version-note").unwrap(), "canary");
    assert_eq!(v2.requests()[0].headers.get("x-env").unwrap(), "prod");
    assert_eq!(h.get("x-served").unwrap(), "canary");
}

#[tokio::test]
async fn rewrites_take_regex_captures_prefixes_and_hostnames() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    // The ingress-nginx rewrite example: path /something(/|$)(.*) with
    // rewrite-target /$2, case-insensitive as ingress-nginx's `~*`.
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: regex
    match: {hosts: [rewrite.bar.com], path: "/something(/|$)(.*)", path_type: regex, ignore_case: true}
    rewrite: {path: "/$2"}
    stable: {upstream: v1}
  - name: prefix
    match: {hosts: [prefix.test], path: /prefix/one, path_type: prefix}
    rewrite: {path_prefix: /one, hostname: inner.svc.local}
    stable: {upstream: v2}
"#,
    ))
    .await;
    let c = client();
    for (path, want) in [
        ("/something", "/"),
        ("/something/", "/"),
        ("/SomeThing/new", "/new"),
        ("/something/new/deep?x=1&y=2", "/new/deep?x=1&y=2"),
    ] {
        v1.clear();
        let (status, _, _) = get(&c, &w.url(path), &[("host", "rewrite.bar.com")]).await;
        assert_eq!(status.as_u16(), 200, "{path}");
        assert_eq!(v1.requests()[0].uri, want, "{path}");
    }
    let (status, _, _) = get(&c, &w.url("/somethingelse"), &[("host", "rewrite.bar.com")]).await;
    assert_eq!(status.as_u16(), 404, "(/|$): a slash or the end after /something");
    let (status, _, _) = get(&c, &w.url("/prefix/one/two?q=1"), &[("host", "prefix.test")]).await;
    assert_eq!(status.as_u16(), 200);
    let seen = &v2.requests()[0];
    assert_eq!(seen.uri, "/one/two?q=1");
    assert_eq!(seen.headers.get("host").unwrap(), "inner.svc.local");
    assert_eq!(seen.headers.get("x-forwarded-host").unwrap(), "prefix.test", "the client's host travels on");
    let (status, _, _) = get(&c, &w.url("/prefix/onex"), &[("host", "prefix.test")]).await;
    assert_eq!(status.as_u16(), 404, "a prefix is whole segments");
}

#[tokio::test]
async fn a_hostile_path_against_a_nested_quantifier_is_answered_in_linear_time() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: evil
    match: {path: "/(a+)+b", path_type: regex}
    stable: {upstream: v1}
"#,
    ))
    .await;
    // A backtracking engine would take 2^n steps on this; weir's regexes are
    // finite automata, so the answer (no route: 404) comes as fast as any.
    let path = format!("/{}", "a".repeat(6000));
    let (status, _, _) = get(&client(), &w.url(&path), &[]).await;
    assert_eq!(status.as_u16(), 404);
    let (status, _, _) = get(&client(), &w.url("/aaab"), &[]).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(v1.count(), 1);
}

#[tokio::test]
async fn http_goes_to_https_and_redirects_follow_the_gateway_api_port_rules() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: to-https
    match: {hosts: [shop.test], scheme: http}
    redirect: {scheme: https, status: 301}
  - name: moved
    match: {hosts: [old.test], path: /old, path_type: prefix}
    redirect: {hostname: new.test, path_prefix: /new, status: 308}
  - name: loop
    match: {hosts: [loop.test]}
    redirect: {hostname: loop.test}
  - name: rest
    stable: {upstream: v1}
"#,
    ))
    .await;
    let port = w.addr.port();
    // curl, a real client, reads the answer.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "host: shop.test:8080",
        &w.url("/cart?item=7"),
    ])
    .await;
    assert_eq!(out, "301 https://shop.test/cart?item=7", "a changed scheme takes its own well-known port");
    let out =
        curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", "host: old.test", &w.url("/old/a/b")])
            .await;
    assert_eq!(out, "308 http://new.test/new/a/b");
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        &format!("host: old.test:{port}"),
        &w.url("/old"),
    ])
    .await;
    assert_eq!(out, format!("308 http://new.test:{port}/new"), "no scheme given: the request's port stays");
    // A redirect to the very URL asked for is refused, not followed forever.
    let (status, h, _) = get(&client(), &w.url("/x"), &[("host", "loop.test")]).await;
    assert_eq!(status.as_u16(), 508);
    assert_eq!(h.get("x-weir-error").unwrap(), "redirect_loop");
    // curl following redirects ends on the upstream for another host.
    let out = curl(&["-L", "-H", "host: elsewhere.test", &w.url("/y")]).await;
    assert_eq!(out, "v1");
    assert_eq!(v1.count(), 1, "no redirect reached an upstream");
}

#[tokio::test]
async fn routes_match_methods_and_schemes() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: writes
    match: {methods: [POST, PUT]}
    stable: {upstream: v2}
  - name: secure-only
    match: {path_prefix: /admin, scheme: https}
    stable: {upstream: v2}
  - name: beta-testers
    match: {path_prefix: /beta, header: {x-tester: ["yes", "sure"]}, query: {lang: sv}}
    stable: {upstream: v2}
  - name: reads
    match: {path_prefix: /}
    stable: {upstream: v1}
"#,
    ))
    .await;
    let out = curl(&["-X", "POST", "-d", "x=1", &w.url("/a")]).await;
    assert_eq!(out, "v2");
    let out = curl(&[&w.url("/a")]).await;
    assert_eq!(out, "v1");
    let out = curl(&[&w.url("/admin")]).await;
    assert_eq!(out, "v1", "plain HTTP does not match a scheme: https route");
    let out = curl(&["-H", "x-tester: sure", &w.url("/beta?lang=sv")]).await;
    assert_eq!(out, "v2", "header and query conditions both fit");
    let out = curl(&["-H", "x-tester: sure", &w.url("/beta?lang=no")]).await;
    assert_eq!(out, "v1", "one condition fails: the next route takes it");
    let out = curl(&[&w.url("/beta?lang=sv")]).await;
    assert_eq!(out, "v1");
    assert_eq!(v2.requests()[0].method, "POST");
    assert_eq!(v2.count(), 2);
}

#[tokio::test]
async fn per_route_timeouts_end_a_slow_answer_and_others_wait() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    v1.delay_ms.store(1500, std::sync::atomic::Ordering::Relaxed);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: quick
    match: {path_prefix: /quick}
    timeouts: {backend: 200ms}
    stable: {upstream: v1}
  - name: whole
    match: {path_prefix: /whole}
    timeouts: {request: 300ms}
    stable: {upstream: v1}
  - name: patient
    stable: {upstream: v1}
"#,
    ))
    .await;
    let c = client();
    let (status, h, _) = get(&c, &w.url("/quick"), &[]).await;
    assert_eq!(status.as_u16(), 504);
    assert_eq!(h.get("x-weir-error").unwrap(), "upstream_timeout");
    let (status, _, _) = get(&c, &w.url("/whole"), &[]).await;
    assert_eq!(status.as_u16(), 504);
    // The upstream's own request_timeout (5s) still holds elsewhere.
    let (status, _, body) = get(&c, &w.url("/slow"), &[]).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    assert_eq!(v1.count(), 3, "each request reached the upstream once");
}

#[tokio::test]
async fn per_route_body_limits_are_above_or_below_the_global_one() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let yaml = config(
        v1.addr,
        v2.addr,
        r#"  - name: upload
    match: {path_prefix: /upload}
    max_request_body: 1KiB
    stable: {upstream: v1}
  - name: tiny
    match: {path_prefix: /tiny}
    max_request_body: 8
    stable: {upstream: v1}
  - name: rest
    stable: {upstream: v1}
"#,
    )
    .replace("access_log: false", "access_log: false\nlimits: {max_request_body: 64}");
    let w = Weir::start(&yaml).await;
    let body = "b".repeat(500);
    // Declared (Content-Length) and streamed (chunked): both judged by the route's limit.
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "--data-binary", &body, &w.url("/upload")]).await;
    assert_eq!(out, "200");
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &body,
        &w.url("/upload"),
    ])
    .await;
    assert_eq!(out, "200");
    assert_eq!(v1.requests()[1].body.len(), 500);
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "--data-binary", &body, &w.url("/other")]).await;
    assert_eq!(out, "413", "the global 64 bytes elsewhere");
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "0123456789", &w.url("/tiny")]).await;
    assert_eq!(out, "413");
    assert_eq!(v1.count(), 2, "refused bodies never reached the upstream");
}

fn problems(yaml_routes: &str) -> Vec<String> {
    let yaml = config("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap(), yaml_routes);
    match weir::config::validate(yaml.as_bytes(), Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(|p| format!("{}: {}", p.path, p.message)).collect(),
    }
}

fn refused(yaml_routes: &str, want_path: &str, want_words: &str) {
    let p = problems(yaml_routes);
    assert!(
        p.iter().any(|l| l.starts_with(want_path) && l.contains(want_words)),
        "want `{want_path}` … `{want_words}`, got {p:#?}"
    );
}

#[test]
fn weir_check_refuses_edge_policies_that_would_break_messages_or_loop() {
    let r = |extra: &str| format!("  - name: r\n    stable: {{upstream: v1}}\n{extra}");
    // Framing and hop-by-hop headers, weir's own, Host.
    refused(
        &r("    request_headers: {set: {transfer-encoding: chunked}}\n"),
        "routes[0].request_headers.set",
        "hop-by-hop",
    );
    refused(&r("    request_headers: {add: {content-length: \"5\"}}\n"), "routes[0].request_headers.add", "frames");
    refused(&r("    request_headers: {set: {content_length: \"5\"}}\n"), "routes[0].request_headers.set", "frames");
    refused(&r("    response_headers: {remove: [connection]}\n"), "routes[0].response_headers.remove", "hop-by-hop");
    refused(&r("    request_headers: {set: {host: x}}\n"), "routes[0].request_headers.set", "rewrite.hostname");
    refused(
        &r("    request_headers: {set: {x-weir-version: canary}}\n"),
        "routes[0].request_headers.set",
        "weir's own",
    );
    refused(&r("    request_headers: {set: {x-a: \"b\\nc\"}}\n"), "routes[0].request_headers.set", "visible ASCII");
    refused(&r("    request_headers: {set: {x-a: b}, remove: [x-a]}\n"), "routes[0].request_headers", "more than one");
    // Redirects that point at the request itself.
    refused("  - name: r\n    redirect: {scheme: https}\n", "routes[0].redirect.scheme", "match.scheme: http");
    refused("  - name: r\n    redirect: {status: 301}\n", "routes[0].redirect", "to itself");
    refused("  - name: r\n    redirect: {hostname: a.b, status: 200}\n", "routes[0].redirect.status", "301");
    refused("  - name: r\n    stable: {upstream: v1}\n    redirect: {hostname: a.b}\n", "routes[0].redirect", "stable");
    refused("  - name: r\n    weight: 5\n", "routes[0].stable", "required");
    // Rewrites the match cannot give.
    refused(
        &r("    match: {path: \"/a/(.*)\", path_type: regex}\n    rewrite: {path: \"/$2\"}\n"),
        "routes[0].rewrite.path",
        "1 capture groups",
    );
    refused(&r("    rewrite: {path: \"/$1\"}\n"), "routes[0].rewrite.path", "path_type: regex");
    refused(
        &r("    match: {path: /a, path_type: exact}\n    rewrite: {path_prefix: /b}\n"),
        "routes[0].rewrite.path_prefix",
        "prefix",
    );
    refused(&r("    rewrite: {path: \"/a b\"}\n"), "routes[0].rewrite.path", "must be a path");
    refused(&r("    match: {path: \"/(\", path_type: regex}\n"), "routes[0].match.path", "invalid regex");
    refused(&r("    match: {path: \"/a{1000}{1000}\", path_type: regex}\n"), "routes[0].match.path", "invalid regex");
    refused(
        &r(&format!("    match: {{path: \"/{}\", path_type: regex}}\n", "a".repeat(1100))),
        "routes[0].match.path",
        "longer",
    );
    refused(&r("    match: {path_prefix: /a, ignore_case: true}\n"), "routes[0].match.ignore_case", "regex");
    refused(&r("    match: {methods: [get]}\n"), "routes[0].match.methods[0]", "upper-case");
    refused(&r("    match: {scheme: ftp}\n"), "routes[0].match.scheme", "http");
    refused(&r("    timeouts: {request: 1s, backend: 2s}\n"), "routes[0].timeouts.backend", "longer");
    refused(&r("    timeouts: {backend: 0s}\n"), "routes[0].timeouts.backend", "more than 0s");
    refused(&r("    max_request_body: 0\n"), "routes[0].max_request_body", "every body");
    refused(&r("    rate_limit: {requests: 0}\n"), "routes[0].rate_limit.requests", "1 to");
    refused(&r("    cors: {allow_origins: [\"app.example.com\"]}\n"), "routes[0].cors.allow_origins[0]", "scheme://");
    refused(&r("    cors: {allow_origins: [\"https://a/b\"]}\n"), "routes[0].cors.allow_origins[0]", "scheme://");
    refused(
        &r("    cors: {allow_origins: [\"*\"], allow_methods: [\"GET, POST\"]}\n"),
        "routes[0].cors.allow_methods",
        "commas",
    );
    refused(&r("    rate_limit: {requests: 5, key: cookie}\n"), "routes[0].rate_limit.key", "header:NAME");
    refused(&r("    rate_limit: {requests: 5, per: 0s}\n"), "routes[0].rate_limit.per", "more than 0s");
    refused(&r("    rate_limit: {requests: 5, max_keys: 1}\n"), "routes[0].rate_limit.max_keys", "16 to");
    // And what is fine.
    assert_eq!(
        problems(&r(
            "    match: {path: \"/a/(.*)\", path_type: regex, ignore_case: true, methods: [GET], scheme: https}\n    \
             rewrite: {path: \"/$1\", hostname: b.svc}\n    timeouts: {request: 2s, backend: 1s}\n    \
             max_request_body: 10MiB\n    request_headers: {set: {x-a: b}}\n"
        )),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_key() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: login
    match: {path_prefix: /login}
    rate_limit: {requests: 2, per: 1m, burst: 1, key: "header:x-api-key"}
    stable: {upstream: v1}
  - name: rest
    stable: {upstream: v1}
"#,
    ))
    .await;
    let c = client();
    // Burst 1 above the rate: two at once for a key, then 429.
    let mut codes = Vec::new();
    for _ in 0..4 {
        let (s, h, _) = get(&c, &w.url("/login"), &[("x-api-key", "alice")]).await;
        codes.push(s.as_u16());
        if s.as_u16() == 429 {
            let wait: u64 = h.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=30).contains(&wait), "retry-after {wait}");
            assert_eq!(h.get("x-weir-error").unwrap(), "rate_limited");
        }
    }
    assert_eq!(codes, [200, 200, 429, 429]);
    let (s, _, _) = get(&c, &w.url("/login"), &[("x-api-key", "bob")]).await;
    assert_eq!(s.as_u16(), 200, "another key has its own bucket");
    let (s, _, _) = get(&c, &w.url("/other"), &[("x-api-key", "alice")]).await;
    assert_eq!(s.as_u16(), 200, "other routes are not limited");
    assert_eq!(v1.count(), 4, "refused requests never reached the upstream");
    let m = support::metrics(w.admin).await;
    assert_eq!(support::metric(&m, "weir_rate_limited_total{route=\"login\"}"), Some(2.0), "{m}");
    // weir's own 429s are no version's answers: not in the version's counts.
    assert_eq!(
        support::metric(&m, "weir_requests_total{route=\"login\",version=\"stable\",code=\"429\"}"),
        None,
        "{m}"
    );
    assert_eq!(
        support::metric(&m, "weir_requests_total{route=\"login\",version=\"stable\",code=\"200\"}"),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_flood_of_distinct_keys_keeps_rate_limit_memory_bounded() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: api
    rate_limit: {requests: 1, per: 1m, burst: 0, key: "header:x-key", max_keys: 64}
    stable: {upstream: v1}
"#,
    ))
    .await;
    let c = client();
    for i in 0..600 {
        let (s, _, _) = get(&c, &w.url("/"), &[("x-key", &format!("k{i}"))]).await;
        assert_eq!(s.as_u16(), 200, "a new key's first request is within its rate");
    }
    let m = support::metrics(w.admin).await;
    let keys = support::metric(&m, "weir_rate_limit_keys{route=\"api\"}").unwrap();
    assert!(keys <= 64.0, "{keys} keys kept");
    let evicted = support::metric(&m, "weir_rate_limit_evictions_total{route=\"api\"}").unwrap();
    assert!(evicted >= 600.0 - 64.0, "{evicted}");
    // A reload that leaves the limit alone keeps the buckets: a key just
    // used is still refused afterwards.
    let (s, _, _) = get(&c, &w.url("/"), &[("x-key", "last")]).await;
    assert_eq!(s.as_u16(), 200);
    let yaml = std::fs::read_to_string(w.config_path()).unwrap();
    w.install(&yaml.replace("access_log: false", "access_log: false\nlimits: {max_in_flight: 1000}"));
    let (s, _, _) = get(&c, &w.url("/"), &[("x-key", "last")]).await;
    assert_eq!(s.as_u16(), 429);
}

/// Config with `real_ip` and a PROXY protocol listener besides the plain one.
fn proxied_config(v1: std::net::SocketAddr, trusted: &str, routes: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}, {{address: "127.0.0.1:0", proxy_protocol: true}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
real_ip: {{trusted: [{trusted}]}}
upstreams:
  v1: {{endpoints: ["{v1}"]}}
routes:
{routes}"#
    )
}

#[tokio::test]
async fn real_ip_believes_trusted_proxies_only() {
    let v1 = Upstream::start("v1").await;
    let w = Weir::start(&proxied_config(
        v1.addr,
        "127.0.0.0/8, 10.0.0.0/8",
        "  - name: api\n    rate_limit: {requests: 1, per: 1m, burst: 0}\n    stable: {upstream: v1}\n",
    ))
    .await;
    let c = client();
    // From a trusted peer: the client is the first untrusted address from
    // the right, and each client has its own bucket.
    let (s, _, _) = get(&c, &w.url("/"), &[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]).await;
    assert_eq!(s.as_u16(), 200);
    let (s, _, _) = get(&c, &w.url("/"), &[("x-forwarded-for", "198.51.100.4")]).await;
    assert_eq!(s.as_u16(), 200, "another client behind the same proxy");
    let (s, _, _) = get(&c, &w.url("/"), &[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]).await;
    assert_eq!(s.as_u16(), 429, "203.0.113.9 again, whatever it claims before itself");
    assert_eq!(v1.requests()[0].headers.get("x-forwarded-for").unwrap(), "203.0.113.9, 10.1.1.1, 127.0.0.1");
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    let v1 = Upstream::start("v1").await;
    let w = Weir::start(&proxied_config(
        v1.addr,
        "10.0.0.0/8",
        "  - name: api\n    rate_limit: {requests: 1, per: 1m, burst: 0}\n    stable: {upstream: v1}\n",
    ))
    .await;
    let c = client();
    let (s, _, _) = get(&c, &w.url("/"), &[("x-forwarded-for", "203.0.113.1")]).await;
    assert_eq!(s.as_u16(), 200);
    let (s, _, _) = get(&c, &w.url("/"), &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!(s.as_u16(), 429, "127.0.0.1 is the client however many addresses it names");
    assert_eq!(
        v1.requests()[0].headers.get("x-forwarded-for").unwrap(),
        "127.0.0.1",
        "its forwarded list is not passed on"
    );
    // The PROXY listener: a peer outside real_ip.trusted is closed before
    // anything is read, header or not.
    let proxied = w.handle.listen[1];
    let out = support::raw(
        proxied,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 4000 80\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert_eq!(out, "", "closed without an answer");
    assert_eq!(v1.count(), 1);
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_name_the_client() {
    let v1 = Upstream::start("v1").await;
    let w = Weir::start(&proxied_config(v1.addr, "127.0.0.1", "  - name: api\n    stable: {upstream: v1}\n")).await;
    let proxied = w.handle.listen[1];
    let wait = std::time::Duration::from_secs(5);
    let req = b"GET /v1 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n";
    let mut v1_bytes = b"PROXY TCP4 203.0.113.7 10.0.0.1 4000 80\r\n".to_vec();
    v1_bytes.extend_from_slice(req);
    let out = support::raw(proxied, &v1_bytes, wait).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // v2, TCP over IPv4, 198.51.100.9:8080 → 10.0.0.1:443, then a request.
    let mut v2 = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12];
    v2.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb]);
    v2.extend_from_slice(b"GET /v2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    let out = support::raw(proxied, &v2, wait).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // No header: closed, nothing forwarded.
    let out = support::raw(proxied, req, wait).await;
    assert_eq!(out, "");
    let seen = v1.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers.get("x-forwarded-for").unwrap(), "203.0.113.7");
    assert_eq!(seen[1].headers.get("x-forwarded-for").unwrap(), "198.51.100.9");
    // The plain listener next to it takes plain HTTP as before.
    let (s, _, body) = get(&client(), &w.url("/plain"), &[]).await;
    assert_eq!((s.as_u16(), body.as_str()), (200, "v1"));
}

#[tokio::test]
async fn cors_preflights_are_answered_here_and_answers_marked_for_allowed_origins() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let w = Weir::start(&config(
        v1.addr,
        v2.addr,
        r#"  - name: api
    cors:
      allow_origins: ["https://app.example.com", "https://*.foo.com"]
      allow_methods: [GET, POST]
      allow_headers: [content-type, x-token]
      expose_headers: [x-request-id]
      allow_credentials: true
      max_age: 10m
    stable: {upstream: v1}
"#,
    ))
    .await;
    let preflight = |origin: &'static str| {
        let url = w.url("/bet");
        async move {
            curl(&[
                "-i",
                "-X",
                "OPTIONS",
                "-H",
                &format!("origin: {origin}"),
                "-H",
                "access-control-request-method: POST",
                &url,
            ])
            .await
            .to_ascii_lowercase()
        }
    };
    let out = preflight("https://a.foo.com").await;
    assert!(out.starts_with("http/1.1 204"), "{out}");
    assert!(out.contains("access-control-allow-origin: https://a.foo.com\r\n"), "{out}");
    assert!(out.contains("access-control-allow-methods: get, post\r\n"), "{out}");
    assert!(out.contains("access-control-allow-headers: content-type, x-token\r\n"), "{out}");
    assert!(out.contains("access-control-allow-credentials: true\r\n"), "{out}");
    assert!(out.contains("access-control-max-age: 600\r\n"), "{out}");
    let out = preflight("https://evil.net").await;
    assert!(out.starts_with("http/1.1 204"), "{out}");
    assert!(!out.contains("access-control-allow-origin"), "{out}");
    assert_eq!(v1.count(), 0, "preflights never reach the upstream");
    // A real request: forwarded, and its answer marked for an allowed origin only.
    let (s, h, _) = get(&client(), &w.url("/bet"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(h.get("access-control-allow-origin").unwrap(), "https://app.example.com");
    assert_eq!(h.get("access-control-expose-headers").unwrap(), "x-request-id");
    assert_eq!(h.get("vary").unwrap(), "Origin");
    let (_, h, _) = get(&client(), &w.url("/bet"), &[("origin", "https://evil.net")]).await;
    assert!(h.get("access-control-allow-origin").is_none());
    // A plain OPTIONS (no preflight headers) goes to the upstream.
    let out = curl(&["-X", "OPTIONS", &w.url("/bet")]).await;
    assert_eq!(out, "v1");
    assert_eq!(v1.count(), 3);
    assert_eq!(v1.requests()[2].method, "OPTIONS");
}
