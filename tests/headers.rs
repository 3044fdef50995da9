//! Black-box tests of header hygiene, Host validation, limits and h2c,
//! asserting what the recording upstream received (usually: nothing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, get, raw};

const ROUTE: &str = r#"  - name: app
    match: {hosts: [shop.example.com, "*.example.com"]}
    stable: {upstream: v1}
    canary: {upstream: v2}
    weight: 0
    expose_version: true
    override: {header: x-weir-override}
"#;

async fn setup(extra: &str) -> (Upstream, Upstream, Weir) {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&format!("{}{extra}", config(s.addr, c.addr, ROUTE))).await;
    (s, c, weir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_internal_headers_never_reach_the_upstream() {
    let (s, _c, weir) = setup("").await;
    let req = "GET /a?b=1 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive, x-private\r\n\
               X-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\n\
               Trailer: x-sum\r\nUpgrade: h2c\r\nX-Weir-Version: canary\r\nX-Weir-Route: evil\r\n\
               X-Forwarded-For: 10.1.1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
               Transfer_Encoding: chunked\r\nContent_Length: 5\r\nX_Under: kept\r\nX-Custom: kept\r\n\r\n";
    let resp = raw(weir.addr, req.as_bytes(), Duration::from_millis(500)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let lower = resp.to_ascii_lowercase();
    assert!(lower.contains("x-weir-version: stable"), "expose_version adds the response header");
    assert!(
        !lower.contains("keep-alive: timeout") && !lower.contains("proxy-connection"),
        "response hop-by-hop stripped: {resp}"
    );
    let seen = s.requests();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
        "x-weir-override",
        "transfer_encoding",
        "content_length",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the upstream");
    }
    assert_eq!(h["te"], "trailers");
    assert_eq!(h["x-weir-version"], "stable", "client value replaced, and it did not pick canary");
    assert_eq!(h["x-weir-route"], "app");
    assert_eq!(h["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(h["host"], "shop.example.com");
    assert_eq!(h["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x_under"], "kept", "only names that read as framing are dropped");
    let id = h["x-request-id"].to_str().unwrap();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "generated request id {id}");
    assert_eq!(seen[0].uri, "/a?b=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_id_is_kept() {
    let (s, _c, weir) = setup("").await;
    let http = client();
    let (status, _, _) = get(&http, &weir.url("/"), &[("host", "shop.example.com"), ("x-request-id", "abc-123")]).await;
    assert_eq!(status, 200);
    assert_eq!(s.requests()[0].headers["x-request-id"], "abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hosts_get_400_and_never_reach_the_upstream() {
    let (s, c, weir) = setup("").await;
    for (what, req) in [
        ("missing", "GET / HTTP/1.1\r\n\r\n"),
        ("duplicate", "GET / HTTP/1.1\r\nHost: shop.example.com\r\nHost: evil.example.com\r\n\r\n"),
        ("invalid chars", "GET / HTTP/1.1\r\nHost: shop.example.com/evil\r\n\r\n"),
        ("bad port", "GET / HTTP/1.1\r\nHost: shop.example.com:http\r\n\r\n"),
        ("space", "GET / HTTP/1.1\r\nHost: shop example\r\n\r\n"),
        // RFC 9112 §3.2: HTTP/1.1 needs Host even with an absolute target.
        ("absolute-form without Host", "GET http://shop.example.com/ HTTP/1.1\r\n\r\n"),
        // A plain listener does not take requests meant for TLS.
        ("https target on plain", "GET https://shop.example.com/ HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"),
    ] {
        let resp = raw(weir.addr, req.as_bytes(), Duration::from_millis(500)).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp}");
    }
    let resp = raw(weir.addr, b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", Duration::from_millis(500)).await;
    assert!(resp.starts_with("HTTP/1.1 404"), "no route: {resp}");
    let (_, _, metrics) = get(&client(), &format!("http://{}/metrics", weir.admin), &[]).await;
    assert!(metrics.contains("weir_unrouted_requests_total 1"), "the 404 is counted");
    assert_eq!(s.count() + c.count(), 0);
    // Wildcard host and port are fine.
    let resp = raw(
        weir.addr,
        b"GET / HTTP/1.1\r\nHost: api.example.com:8080\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_give_431_without_upstream() {
    let (s, c, weir) = setup("limits: {max_headers: 100, max_header_bytes: 64KiB}\n").await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: shop.example.com\r\n");
    for i in 0..101 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(weir.addr, many.as_bytes(), Duration::from_secs(2)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "101 headers: {}", &resp[..resp.len().min(80)]);
    let big = format!("GET / HTTP/1.1\r\nHost: shop.example.com\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let resp = raw(weir.addr, big.as_bytes(), Duration::from_secs(2)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "70 KB header: {}", &resp[..resp.len().min(80)]);
    assert_eq!(s.count() + c.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let (s, _c, weir) = setup("limits: {max_request_body: 1KiB}\n").await;
    let body = "x".repeat(2000);
    let req = format!("POST / HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 2000\r\n\r\n{body}");
    let resp = raw(weir.addr, req.as_bytes(), Duration::from_secs(1)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(s.count(), 0, "declared length over the limit: upstream never contacted");
    // Chunked, length unknown up front: cut when the limit is crossed.
    let chunk = format!("{:x}\r\n{}\r\n", 1500, "y".repeat(1500));
    let req =
        format!("POST / HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n");
    let resp = raw(weir.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(s.requests().iter().all(|r| r.body.len() <= 1024), "upstream never got the whole oversize body");
    // Within the limit: delivered intact.
    let req = "POST / HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let resp = raw(weir.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(s.requests().last().unwrap().body, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_at_the_header_deadline() {
    let (s, _c, weir) = setup("limits: {header_read_timeout: 1s}\n").await;
    let t = Instant::now();
    // Never finishes the head; read until weir closes (bounded at 5 s).
    let resp = raw(weir.addr, b"GET / HTTP/1.1\r\nHost: shop.example.com\r\nX-Slow: ", Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "connection held {took:?}");
    assert!(resp.is_empty() || resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert_eq!(s.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works_with_curl() {
    let (s, _c, weir) = setup("").await;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{response_code}",
            "-H",
            "x-player-id: 7",
        ])
        .arg(format!("http://{}/h2path?q=1", weir.addr))
        .args(["-H", "Host: shop.example.com"])
        .output()
        .await
        .expect("curl must be installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("2 200"), "curl said: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("stable"));
    let seen = s.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/h2path?q=1");
    assert_eq!(seen[0].headers["host"], "shop.example.com", "h2 :authority becomes Host for the h1 upstream");
    assert_eq!(seen[0].headers["x-player-id"], "7");
}

/// An absolute-form target and a different Host: weir routes by the
/// target's authority (RFC 9112 §3.2.2) and the upstream gets that same
/// authority as Host, so no route is reachable under another route's Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_and_forwarded_with_one_authority() {
    let (public, internal) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let routes = r#"  - name: internal
    match: {hosts: [internal.example]}
    stable: {upstream: v2}
  - name: public
    match: {hosts: [public.example]}
    stable: {upstream: v1}
"#;
    let weir = Weir::start(&config(public.addr, internal.addr, routes)).await;
    let req = "GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n";
    let resp = raw(weir.addr, req.as_bytes(), Duration::from_millis(500)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(public.count(), 0, "the Host's route was not used");
    let seen = internal.requests();
    assert_eq!(seen.len(), 1);
    let hosts: Vec<_> = seen[0].headers.get_all("host").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(hosts, vec!["internal.example"], "the upstream sees the authority it was routed by");
    assert_eq!(seen[0].headers["x-forwarded-host"], "internal.example");
}

/// An HTTP/1.1 keep-alive connection that waits for its next request is
/// under the head deadline too: hyper starts it when the wait begins, which
/// is what bounds idle keep-alive connections (docs/guide/src/hardening.md, "Idle connections").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (s, _c, weir) = setup("limits: {header_read_timeout: 1s}\n").await;
    let mut conn = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    conn.write_all(b"GET /first HTTP/1.1\r\nHost: shop.example.com\r\n\r\n").await.unwrap();
    let t = Instant::now();
    // The answer, then weir's close after one deadline of waiting (bounded).
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "an idle keep-alive connection was never closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(t.elapsed() >= Duration::from_millis(900), "closed before the deadline: {:?}", t.elapsed());
    assert_eq!(s.requests().iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["/first"]);
}
