//! Upstream pools: round-robin over endpoints (`balance: round_robin`; p2c
//! is in tests/balancing.rs), keep-alive reuse, timeouts
//! mapped to 504, and an upstream closing idle keep-alive connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, get};

fn two_endpoint_config(a: std::net::SocketAddr, b: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  pool: {{endpoints: ["{a}", "{b}"], connect_timeout: 500ms, request_timeout: 1s{extra}}}
routes:
  - name: app
    stable: {{upstream: pool}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_round_robin_over_endpoints_and_reuse_connections() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let weir = Weir::start(&two_endpoint_config(a.addr, b.addr, ", balance: round_robin")).await;
    let http = client();
    for _ in 0..200 {
        assert_eq!(get(&http, &weir.url("/"), &[]).await.0, 200);
    }
    assert_eq!(a.count(), 100);
    assert_eq!(b.count(), 100);
    // Sequential requests reuse keep-alive connections instead of dialing each time.
    let dials = a.connections.load(Ordering::Relaxed) + b.connections.load(Ordering::Relaxed);
    assert!(dials <= 4, "{dials} upstream connections for 200 sequential requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped_for_the_next_one() {
    let a = Upstream::start("a").await;
    let dead_guard = support::refused_addr().await;
    let dead = dead_guard.addr;
    let weir = Weir::start(&two_endpoint_config(dead, a.addr, "")).await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(get(&http, &weir.url("/"), &[]).await.0, 200);
    }
    assert_eq!(a.count(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_headers_within_request_timeout_is_504() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.delay_ms.store(3000, Ordering::Relaxed);
    b.delay_ms.store(3000, Ordering::Relaxed);
    let weir = Weir::start(&two_endpoint_config(a.addr, b.addr, "")).await;
    let t = Instant::now();
    let (status, headers, _) = get(&client(), &weir.url("/"), &[]).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-weir-error"], "upstream_timeout");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "took {took:?}");
    // The timed-out connection is not reused: the next request dials anew.
    a.delay_ms.store(0, Ordering::Relaxed);
    b.delay_ms.store(0, Ordering::Relaxed);
    let before = a.connections.load(Ordering::Relaxed) + b.connections.load(Ordering::Relaxed);
    assert_eq!(get(&client(), &weir.url("/"), &[]).await.0, 200);
    let after = a.connections.load(Ordering::Relaxed) + b.connections.load(Ordering::Relaxed);
    assert_eq!(after, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_answer_5xx_and_pass_through() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.status.store(503, Ordering::Relaxed);
    b.status.store(503, Ordering::Relaxed);
    let weir = Weir::start(&two_endpoint_config(a.addr, b.addr, "")).await;
    let (status, headers, body) = get(&client(), &weir.url("/"), &[]).await;
    assert_eq!(status, 503, "an upstream 503 is passed through as is");
    assert!(headers.get("x-weir-error").is_none());
    assert!(body == "a" || body == "b");
}
