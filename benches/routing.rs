#![allow(clippy::panic)]
//! Question: how long does the pure routing decision take per request, and
//! does it stay flat as the table grows (1 → 1,000 routes), with and without
//! sticky keys and segments? Also: the cost of hashing one sticky key.
//!
//! The request always matches the LAST route. Routes are indexed by host,
//! so it is looked up, not scanned for: the figure should not grow with the
//! table. Run: `cargo bench --bench routing`.

use divan::{Bencher, black_box};
use http::{HeaderMap, HeaderValue};
use std::path::Path;
use weir::routing::{Facts, Table, bucket_of, decide};

fn main() {
    divan::main();
}

fn table(routes: usize, sticky: bool, segments: bool) -> Table {
    let mut y = String::from(
        "listen: [{address: \"127.0.0.1:0\"}]\nupstreams:\n  v1: {endpoints: [\"127.0.0.1:1\"]}\n  v2: {endpoints: [\"127.0.0.1:2\"]}\nroutes:\n",
    );
    for i in 0..routes {
        y.push_str(&format!(
            "  - name: r{i}\n    match: {{hosts: [h{i}.example.com], path_prefix: /p{i}}}\n    stable: {{upstream: v1}}\n    canary: {{upstream: v2}}\n    weight: 10\n"
        ));
        if sticky {
            y.push_str("    sticky: {keys: [\"header:x-player-id\", \"cookie:player_id\"]}\n");
        }
        if segments {
            y.push_str("    segments:\n      - {name: staff, match: {header: {x-employee: \"true\"}}, weight: 100}\n      - {name: nordics, match: {header: {x-market: [SE, NO, FI]}}, weight: 25}\n");
        }
    }
    match weir::config::validate(y.as_bytes(), Path::new(".")) {
        Ok(s) => s.table,
        Err(p) => panic!("{p:?}"),
    }
}

fn headers(sticky: bool, segments: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("wrk"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    if sticky {
        h.insert("x-player-id", HeaderValue::from_static("player-8c1f2e77"));
    }
    if segments {
        h.insert("x-market", HeaderValue::from_static("NO"));
    }
    h
}

#[divan::bench(args = [1, 10, 100, 1000])]
fn weight_only(b: Bencher, routes: usize) {
    let t = table(routes, false, false);
    let h = headers(false, false);
    let host = format!("h{}.example.com", routes - 1);
    let path = format!("/p{}/bet", routes - 1);
    b.bench_local(|| {
        decide(
            black_box(&t),
            &Facts {
                host: &host,
                path: &path,
                query: None,
                headers: &h,
                client_cert: None,
                method: &http::Method::GET,
                https: false,
            },
            4242,
        )
    });
}

#[divan::bench(args = [1, 10, 100, 1000])]
fn sticky_and_segments(b: Bencher, routes: usize) {
    let t = table(routes, true, true);
    let h = headers(true, true);
    let host = format!("h{}.example.com", routes - 1);
    let path = format!("/p{}/bet", routes - 1);
    b.bench_local(|| {
        decide(
            black_box(&t),
            &Facts {
                host: &host,
                path: &path,
                query: None,
                headers: &h,
                client_cert: None,
                method: &http::Method::GET,
                https: false,
            },
            4242,
        )
    });
}

#[divan::bench]
fn bucket_hash() -> u16 {
    bucket_of(black_box(b"checkout-1.5.0\x1f"), black_box(b"player-8c1f2e77"))
}

/// Question (issue 4): what does recording one finished request cost —
/// status counter, histogram bucket, sum/count and the sliding window?
#[divan::bench]
fn record_one_request(b: Bencher) {
    let registry = weir::metrics::Registry::default();
    let m = registry.route(&std::sync::Arc::from("app"));
    let now = std::time::Instant::now();
    b.bench_local(|| m.canary.record(black_box(now), 200, black_box(std::time::Duration::from_micros(1234)), false));
}

/// Question (issue 19): what would the `metrics` facade with its Prometheus
/// exporter cost for the same counters (status counter and latency
/// histogram through cached handles), against weir's own atomics? The
/// sliding window is weir's either way, so it is left out of both.
#[divan::bench(args = ["weir", "facade"])]
fn record_counters(b: Bencher, how: &str) {
    let registry = weir::metrics::Registry::default();
    let m = registry.route(&std::sync::Arc::from("app"));
    if how == "weir" {
        b.bench_local(|| m.canary.record_counters(200, black_box(std::time::Duration::from_micros(1234))));
        return;
    }
    let Ok(builder) = metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets(&weir::metrics::LATENCY_BOUNDS)
    else {
        return;
    };
    let recorder = builder.build_recorder();
    let (c, h) = metrics::with_local_recorder(&recorder, || {
        (
            metrics::counter!("weir_requests_total", "route" => "app", "version" => "canary", "code" => "200"),
            metrics::histogram!("weir_request_duration_seconds", "route" => "app", "version" => "canary"),
        )
    });
    b.bench_local(|| {
        c.increment(1);
        h.record(black_box(0.001234));
    });
}

/// Question (judgement): what does the evidence recorder add per request —
/// classify against the frozen lines and count, per request (anonymous) and
/// per user (two counted-user filter probes per scope)?
#[divan::bench(args = [false, true])]
fn record_evidence(b: Bencher, per_user: bool) {
    use weir::analysis::{Frozen, Stratum};
    use weir::evidence::{Evidence, Unit};
    let ev = Evidence::default();
    let lines = [100, 200, 300, 400, 500, 600, 700, 800, 1000, 2000, 3000, 4000, 6000, 8000];
    ev.take(Frozen { rank_us: Some(lines), tolerance: 0.05, ..Frozen::default() });
    let mut user = 0u64;
    b.bench_local(|| {
        user = user.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let unit = Unit { stratum: Stratum { segment: None, per_user }, weight_bp: 1000, user };
        ev.record(
            black_box(&unit),
            weir::routing::Version::Canary,
            false,
            Some(black_box(std::time::Duration::from_micros(1234))),
        );
    });
}
