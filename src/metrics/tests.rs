//! Unit tests of the metric handles and their rendering (a `#[cfg(test)]`
//! module of `metrics`).

use super::*;

#[test]
fn histogram_buckets_are_cumulative_and_monotone() {
    let reg = Registry::default();
    let m = reg.route_with_slo(&Arc::from("app"), &[Duration::from_millis(300)]);
    let now = Instant::now();
    for ms in [1u64, 3, 7, 40, 40, 300, 20_000] {
        m.canary.record(now, 200, Duration::from_millis(ms), false);
    }
    m.canary.record(now, 0, Duration::from_millis(2), true);
    for k in crate::labels::ErrorKind::ALL {
        m.stable.upstream_error(k);
    }
    m.stable.upstream_error(crate::labels::ErrorKind::Client);
    let text = render(
        &[RouteView {
            metrics: &m,
            config_weight_bp: 500,
            effective_weight_bp: 500,
            phase: Phase::Progressing,
            shadow: true,
            revision: Some("2"),
            segments: vec![],
            limiter: None,
        }],
        &Globals {
            generation: 3,
            unrouted: 4,
            reloads_success: 2,
            reloads_failure: 1,
            ready: true,
            notifications: vec![("oncall".into(), [3, 1, 0, 2])],
            unsolicited: vec![("v2".into(), "127.0.0.2:8080".into(), [1, 4])],
            upstreams: vec![crate::metrics::UpstreamRow {
                name: "v2".into(),
                by_state: [3, 1, 2],
                endpoints: vec![("10.0.0.7:8080".into(), 40, 5)],
                dns_failures: Some(6),
            }],
            start_time_s: 1.5,
            access_log_dropped: 7,
            fleet_queries: 0,
            fleet_bytes: 0,
        },
    );
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("weir_request_duration_seconds_bucket{route=\"app\",version=\"canary\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 2, "one more for the 300 ms SLO, plus +Inf");
    assert!(text.contains("le=\"0.3\"} 7"), "the SLO is a bucket edge: {text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&8));
    assert_eq!(buckets[0], 1, "le=0.001 holds the 1 ms sample");
    assert!(text.contains("weir_requests_total{route=\"app\",version=\"canary\",code=\"200\"} 7"));
    assert!(text.contains("weir_requests_total{route=\"app\",version=\"canary\",code=\"000\"} 1"));
    assert!(text.contains("weir_access_log_dropped_total 7"), "{text}");
    let stray = "weir_upstream_unsolicited_total{upstream=\"v2\",endpoint=\"127.0.0.2:8080\"";
    assert!(text.contains(&format!("{stray},when=\"after_response\"}} 1")), "{text}");
    assert!(text.contains(&format!("{stray},when=\"idle\"}} 4")), "{text}");
    for line in [
        "weir_upstream_endpoints{upstream=\"v2\",state=\"healthy\"} 3",
        "weir_upstream_endpoints{upstream=\"v2\",state=\"ejected\"} 1",
        "weir_upstream_endpoints{upstream=\"v2\",state=\"draining\"} 2",
        "weir_upstream_endpoint_requests_total{upstream=\"v2\",endpoint=\"10.0.0.7:8080\"} 40",
        "weir_upstream_endpoint_failures_total{upstream=\"v2\",endpoint=\"10.0.0.7:8080\"} 5",
        "weir_upstream_dns_failures_total{upstream=\"v2\"} 6",
        "weir_retried_attempts_total{route=\"app\",version=\"canary\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // Every error kind that can be produced is counted under its label.
    for k in crate::labels::ErrorKind::ALL {
        let n = if k == crate::labels::ErrorKind::Client { 2 } else { 1 };
        let line =
            format!("weir_upstream_errors_total{{route=\"app\",version=\"stable\",kind=\"{}\"}} {n}", k.as_str());
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(text.contains("weir_canary_weight_ratio{route=\"app\",source=\"effective\"} 0.05"));
    assert!(text.contains("weir_config_generation 3"));
    assert!(text.contains("weir_rollout_state{route=\"app\",state=\"progressing\"} 1"));
    assert!(text.contains("weir_rollout_state{route=\"app\",state=\"steady\"} 0"));
    assert!(text.contains("weir_rollbacks_total{route=\"app\",reason=\"latency_ratio\"} 0"));
    assert!(text.contains("weir_unrouted_requests_total 4"));
    // Same handle on the next "reload": counters persist.
    assert!(Arc::ptr_eq(&m, &reg.route(&Arc::from("app"))));
}

#[test]
fn slo_edges_follow_the_config_whenever_the_handle_was_made() {
    let reg = Registry::default();
    let name: Arc<str> = Arc::from("app");
    // Made first without SLOs (as after an unreadable state file) ...
    let m = reg.route(&name);
    let now = Instant::now();
    m.canary.record(now, 200, Duration::from_millis(280), false);
    // ... then installed with max_p95 300ms and max_p99 350ms: both are
    // edges from now on.
    let m = reg.route_with_slo(&name, &[Duration::from_millis(300), Duration::from_millis(350)]);
    for ms in [260u64, 290, 320, 390, 600] {
        m.canary.record(now, 200, Duration::from_millis(ms), false);
    }
    let view = |m: &RouteMetrics| {
        render(
            &[RouteView {
                metrics: m,
                config_weight_bp: 0,
                effective_weight_bp: 0,
                phase: Phase::Steady,
                shadow: false,
                revision: None,
                segments: vec![],
                limiter: None,
            }],
            &Globals {
                generation: 1,
                unrouted: 0,
                reloads_success: 0,
                reloads_failure: 0,
                ready: true,
                notifications: Vec::new(),
                unsolicited: Vec::new(),
                upstreams: Vec::new(),
                start_time_s: 0.0,
                access_log_dropped: 0,
                fleet_queries: 0,
                fleet_bytes: 0,
            },
        )
    };
    let text = view(&m);
    let le = |text: &str, le: &str| -> u64 {
        let key = format!("weir_request_duration_seconds_bucket{{route=\"app\",version=\"canary\",le=\"{le}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(key.as_str())).unwrap().parse().unwrap()
    };
    assert_eq!(le(&text, "0.25"), 0);
    assert_eq!(le(&text, "0.3"), 2, "260 and 290 since the edge was set (280 came before it)");
    assert_eq!(le(&text, "0.35"), 3);
    assert_eq!(le(&text, "0.4"), 5, "the standard bound is untouched by the edges");
    assert_eq!(le(&text, "1"), 6);
    let cumulative: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("weir_request_duration_seconds_bucket{route=\"app\",version=\"canary\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "{cumulative:?}");
    // A reload that drops one SLO and changes the other.
    let m = reg.route_with_slo(&name, &[Duration::from_millis(700)]);
    let text = view(&m);
    assert!(!text.contains("le=\"0.3\"") && !text.contains("le=\"0.35\""));
    assert_eq!(le(&text, "0.7"), 5, "a new edge counts from when it was set: the 600 ms sample came before it");
    assert_eq!(le(&text, "1"), 6);
}
