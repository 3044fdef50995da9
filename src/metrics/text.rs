//! The Prometheus text exposition (format 0.0.4) of every route's handles,
//! rendered on scrape. Counters are stored non-cumulative per bucket and
//! made cumulative here.

use super::*;
use std::fmt::Write as _;

mod evidence;
use evidence::evidence_families;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One counter per (route, version, `label`) for a fixed list of label values.
fn counter_family(
    o: &mut String,
    routes: &[RouteView<'_>],
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
    counters: impl Fn(&VersionMetrics) -> &[AtomicU64],
) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} counter");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            for (value, c) in values.iter().zip(counters(r.metrics.version(v))) {
                let _ = writeln!(
                    o,
                    "{name}{{route=\"{}\",version=\"{}\",{label}=\"{value}\"}} {}",
                    escape(&r.metrics.name),
                    v.as_str(),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
}

/// One counter per (route, `label`).
fn route_counters(
    o: &mut String,
    routes: &[RouteView<'_>],
    name: &str,
    help: &str,
    label: &str,
    values: impl Fn(&RouteMetrics) -> Vec<(&'static str, &AtomicU64)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} counter");
    for r in routes {
        for (value, c) in values(r.metrics) {
            let _ = writeln!(
                o,
                "{name}{{route=\"{}\",{label}=\"{value}\"}} {}",
                escape(&r.metrics.name),
                c.load(Ordering::Relaxed)
            );
        }
    }
}

/// One histogram series: cumulative `_bucket` lines (the counters are kept
/// per bucket), `+Inf`, `_sum` (stored in µs) and `_count`.
fn histogram_series(
    o: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    buckets: &[AtomicU64],
    sum_us: &AtomicU64,
    count: &AtomicU64,
) {
    let mut cumulative = 0;
    for (le, b) in bounds.iter().zip(buckets) {
        cumulative += b.load(Ordering::Relaxed);
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
    }
    let count = count.load(Ordering::Relaxed);
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", sum_us.load(Ordering::Relaxed) as f64 / 1e6);
    let _ = writeln!(o, "{name}_count{{{labels}}} {count}");
}

/// `weir_upstream_unsolicited_total`: per (upstream, endpoint), connections
/// closed for bytes no request asked for, by where they were found.
fn unsolicited_family(o: &mut String, rows: &[(String, String, [u64; 2])]) {
    let _ = writeln!(
        o,
        "# HELP {UPSTREAM_UNSOLICITED} Upstream connections closed for bytes no request asked for, by where they were found."
    );
    let _ = writeln!(o, "# TYPE {UPSTREAM_UNSOLICITED} counter");
    for (upstream, endpoint, counts) in rows {
        for (when, n) in crate::labels::Unsolicited::ALL.iter().zip(counts) {
            let _ = writeln!(
                o,
                "{UPSTREAM_UNSOLICITED}{{upstream=\"{}\",endpoint=\"{}\",when=\"{}\"}} {n}",
                escape(upstream),
                escape(endpoint),
                when.as_str()
            );
        }
    }
}

/// `weir_upstream_endpoints`, per-endpoint attempts and failures, and DNS
/// lookup failures.
fn upstream_families(o: &mut String, rows: &[super::UpstreamRow]) {
    use super::{DNS_FAILURES, ENDPOINT_FAILURES, ENDPOINT_REQUESTS, UPSTREAM_ENDPOINTS};
    let _ = writeln!(o, "# HELP {UPSTREAM_ENDPOINTS} Endpoints of an upstream, by state.");
    let _ = writeln!(o, "# TYPE {UPSTREAM_ENDPOINTS} gauge");
    for r in rows {
        for (state, n) in ["healthy", "ejected", "draining"].iter().zip(r.by_state) {
            let _ = writeln!(o, "{UPSTREAM_ENDPOINTS}{{upstream=\"{}\",state=\"{state}\"}} {n}", escape(&r.name));
        }
    }
    for (family, help, pick) in [
        (ENDPOINT_REQUESTS, "Attempts sent to an endpoint (connected or not).", 0),
        (ENDPOINT_FAILURES, "Failed attempts on an endpoint (connect, reset, timeout, counted 5xx).", 1),
    ] {
        let _ = writeln!(o, "# HELP {family} {help}");
        let _ = writeln!(o, "# TYPE {family} counter");
        for r in rows {
            for (address, requests, failures) in &r.endpoints {
                let n = if pick == 0 { requests } else { failures };
                let _ =
                    writeln!(o, "{family}{{upstream=\"{}\",endpoint=\"{}\"}} {n}", escape(&r.name), escape(address));
            }
        }
    }
    let _ = writeln!(o, "# HELP {DNS_FAILURES} Failed or empty DNS lookups of an upstream's dns source.");
    let _ = writeln!(o, "# TYPE {DNS_FAILURES} counter");
    for r in rows {
        if let Some(n) = r.dns_failures {
            let _ = writeln!(o, "{DNS_FAILURES}{{upstream=\"{}\"}} {n}", escape(&r.name));
        }
    }
}

/// `weir_retried_attempts_total`: failed attempts retried, per version.
fn retried_family(o: &mut String, routes: &[RouteView<'_>]) {
    let _ = writeln!(
        o,
        "# HELP {} Failed attempts retried on another endpoint of the same version.",
        super::RETRIED_ATTEMPTS
    );
    let _ = writeln!(o, "# TYPE {} counter", super::RETRIED_ATTEMPTS);
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            let _ = writeln!(
                o,
                "{}{{route=\"{}\",version=\"{}\"}} {}",
                super::RETRIED_ATTEMPTS,
                escape(&r.metrics.name),
                v.as_str(),
                r.metrics.version(v).retried_attempts()
            );
        }
    }
}

/// `weir_rate_limited_total`, `weir_rate_limit_evictions_total` and
/// `weir_rate_limit_keys`, for routes with a `rate_limit`.
fn rate_limit_family(o: &mut String, routes: &[RouteView<'_>]) {
    use std::sync::atomic::Ordering::Relaxed;
    type Read = fn(&crate::ratelimit::Limiter) -> u64;
    let families: [(&str, &str, &str, Read); 3] = [
        (super::RATE_LIMITED, "counter", "Requests refused (429) by the route's rate limit.", |l| {
            l.limited.load(Relaxed)
        }),
        (
            super::RATE_LIMIT_EVICTIONS,
            "counter",
            "Keys forgotten to make room (more distinct keys than max_keys).",
            |l| l.evicted.load(Relaxed),
        ),
        (super::RATE_LIMIT_KEYS, "gauge", "Keys the route's rate limit remembers.", |l| {
            u64::try_from(l.keys()).unwrap_or(u64::MAX)
        }),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for r in routes {
            if let Some(l) = r.limiter {
                let _ = writeln!(o, "{name}{{route=\"{}\"}} {}", escape(&r.metrics.name), value(l));
            }
        }
    }
}

/// `weir_grpc_responses_total`: gRPC calls by code (only codes seen).
fn grpc_family(o: &mut String, routes: &[RouteView<'_>]) {
    let name = super::GRPC_RESPONSES;
    let _ = writeln!(o, "# HELP {name} gRPC calls answered, by route, version and grpc-status.");
    let _ = writeln!(o, "# TYPE {name} counter");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            for (code, n) in r.metrics.version(v).grpc_counts().iter().enumerate() {
                if *n > 0 {
                    let _ = writeln!(
                        o,
                        "{name}{{route=\"{}\",version=\"{}\",grpc_status=\"{}\"}} {n}",
                        escape(&r.metrics.name),
                        v.as_str(),
                        crate::labels::GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN")
                    );
                }
            }
        }
    }
}

/// Prometheus text format 0.0.4: every family, per route then global.
pub fn render(routes: &[RouteView<'_>], g: &Globals) -> String {
    let mut o = String::with_capacity(16 * 1024);
    request_families(&mut o, routes);
    routing_families(&mut o, routes);
    websocket_families(&mut o, routes);
    shadow_families(&mut o, routes);
    rollout_families(&mut o, routes);
    process_families(&mut o, g);
    o
}

/// `weir_requests_total` and `weir_request_duration_seconds`, per route and version.
fn request_families(o: &mut String, routes: &[RouteView<'_>]) {
    let _ = writeln!(o, "# HELP {REQUESTS_TOTAL} Requests answered, by route, version and status code.");
    let _ = writeln!(o, "# TYPE {REQUESTS_TOTAL} counter");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            let m = r.metrics.version(v);
            for (code, c) in m.codes.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        o,
                        "{REQUESTS_TOTAL}{{route=\"{}\",version=\"{}\",code=\"{code:03}\"}} {n}",
                        escape(&r.metrics.name),
                        v.as_str()
                    );
                }
            }
        }
    }
    let _ = writeln!(o, "# HELP {REQUEST_DURATION} Time from request head to the end of the response, seconds.");
    let _ = writeln!(o, "# TYPE {REQUEST_DURATION} histogram");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            let m = r.metrics.version(v);
            let labels = format!("route=\"{}\",version=\"{}\"", escape(&r.metrics.name), v.as_str());
            let extra = m.slo.snapshot();
            if extra.is_empty() {
                histogram_series(o, REQUEST_DURATION, &labels, &LATENCY_BOUNDS, &m.buckets, &m.sum_us, &m.count);
            } else {
                // Merge the SLO edges in: each one's cumulative count is the
                // bound below it plus its own samples.
                let mut bounds: Vec<f64> = LATENCY_BOUNDS.to_vec();
                let mut counts: Vec<u64> = m.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                for (edge, own) in extra {
                    let at = bounds.partition_point(|b| *b < edge);
                    bounds.insert(at, edge);
                    counts.insert(at, own);
                    // The next standard bound above now holds only what
                    // lies beyond the edge (the edges' ranges do not overlap).
                    if let Some(next) = (at + 1..bounds.len())
                        .find(|j| LATENCY_BOUNDS.iter().any(|b| bounds.get(*j) == Some(b)))
                        .and_then(|j| counts.get_mut(j))
                    {
                        *next = next.saturating_sub(own);
                    }
                }
                let counters: Vec<AtomicU64> = counts.into_iter().map(AtomicU64::new).collect();
                histogram_series(o, REQUEST_DURATION, &labels, &bounds, &counters, &m.sum_us, &m.count);
            }
        }
    }
}

/// Upstream failures, routing decisions, gRPC codes, retried attempts and
/// rate limits, per route.
fn routing_families(o: &mut String, routes: &[RouteView<'_>]) {
    let kinds: Vec<&str> = crate::labels::ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    counter_family(
        o,
        routes,
        UPSTREAM_ERRORS_TOTAL,
        "Upstream failures, by kind (`client`: the client's request body failed).",
        "kind",
        &kinds,
        |m| &m.upstream_errors,
    );
    counter_family(
        o,
        routes,
        ROUTING_DECISIONS_TOTAL,
        "Routing decisions, by version and reason.",
        "reason",
        &REASONS,
        |m| &m.decisions,
    );
    grpc_family(o, routes);
    retried_family(o, routes);
    rate_limit_family(o, routes);
}

/// Open and closed WebSockets and their round trips, per route and version.
fn websocket_families(o: &mut String, routes: &[RouteView<'_>]) {
    let _ = writeln!(o, "# HELP {WEBSOCKET_ACTIVE} Open WebSocket connections.");
    let _ = writeln!(o, "# TYPE {WEBSOCKET_ACTIVE} gauge");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            let _ = writeln!(
                o,
                "{WEBSOCKET_ACTIVE}{{route=\"{}\",version=\"{}\"}} {}",
                escape(&r.metrics.name),
                v.as_str(),
                r.metrics.version(v).ws_active.load(Ordering::Relaxed).max(0)
            );
        }
    }
    let close_labels: Vec<&str> = CloseWhy::ALL.iter().map(|c| c.as_str()).collect();
    counter_family(
        o,
        routes,
        WEBSOCKET_TOTAL,
        "Closed WebSocket connections, by who or what closed them.",
        "close",
        &close_labels,
        |m| &m.ws_closed,
    );
    let _ = writeln!(
        o,
        "# HELP {WEBSOCKET_RTT} WebSocket ping round trips to the upstream (weir's ping to its pong), seconds."
    );
    let _ = writeln!(o, "# TYPE {WEBSOCKET_RTT} histogram");
    for r in routes {
        for v in [Version::Stable, Version::Canary] {
            let m = r.metrics.version(v);
            let labels = format!("route=\"{}\",version=\"{}\"", escape(&r.metrics.name), v.as_str());
            histogram_series(o, WEBSOCKET_RTT, &labels, &LATENCY_BOUNDS, &m.rtt_buckets, &m.rtt_sum_us, &m.rtt_count);
        }
    }
}

/// Mirrored copies of the routes that shadow traffic.
fn shadow_families(o: &mut String, routes: &[RouteView<'_>]) {
    let shadowed: Vec<&RouteView<'_>> = routes.iter().filter(|r| r.shadow).collect();
    let _ = writeln!(o, "# HELP {SHADOW_REQUESTS_TOTAL} Mirrored copies, by outcome.");
    let _ = writeln!(o, "# TYPE {SHADOW_REQUESTS_TOTAL} counter");
    for r in &shadowed {
        for (outcome, c) in ShadowOutcome::ALL.iter().zip(&r.metrics.shadow.outcomes) {
            let _ = writeln!(
                o,
                "{SHADOW_REQUESTS_TOTAL}{{route=\"{}\",outcome=\"{}\"}} {}",
                escape(&r.metrics.name),
                outcome.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
    }
    let _ =
        writeln!(o, "# HELP {SHADOW_MISMATCHES_TOTAL} Shadow answers whose status class differed from the primary's.");
    let _ = writeln!(o, "# TYPE {SHADOW_MISMATCHES_TOTAL} counter");
    for r in &shadowed {
        let n = r.metrics.shadow.mismatches.load(Ordering::Relaxed);
        let _ = writeln!(o, "{SHADOW_MISMATCHES_TOTAL}{{route=\"{}\"}} {n}", escape(&r.metrics.name));
    }
    let _ = writeln!(o, "# HELP {SHADOW_DURATION} Time of a mirrored exchange with the shadow upstream, seconds.");
    let _ = writeln!(o, "# TYPE {SHADOW_DURATION} histogram");
    for r in &shadowed {
        let m = &r.metrics.shadow;
        let labels = format!("route=\"{}\"", escape(&r.metrics.name));
        histogram_series(o, SHADOW_DURATION, &labels, &LATENCY_BOUNDS, &m.buckets, &m.sum_us, &m.count);
    }
}

/// Canary weight, rollout state, verdicts, evidence, thresholds, rollbacks.
fn rollout_families(o: &mut String, routes: &[RouteView<'_>]) {
    let _ = writeln!(o, "# HELP {CANARY_WEIGHT_RATIO} Share of traffic for canary, 0-1, as configured and in force.");
    let _ = writeln!(o, "# TYPE {CANARY_WEIGHT_RATIO} gauge");
    for r in routes {
        for (source, bp) in [("config", r.config_weight_bp), ("effective", r.effective_weight_bp)] {
            let _ = writeln!(
                o,
                "{CANARY_WEIGHT_RATIO}{{route=\"{}\",source=\"{source}\"}} {}",
                escape(&r.metrics.name),
                f64::from(bp) / 10_000.0
            );
        }
    }
    let _ = writeln!(o, "# HELP {ROLLOUT_STATE} 1 for the rollout state each route is in, else 0.");
    let _ = writeln!(o, "# TYPE {ROLLOUT_STATE} gauge");
    for r in routes {
        for phase in Phase::ALL {
            let _ = writeln!(
                o,
                "{ROLLOUT_STATE}{{route=\"{}\",state=\"{}\"}} {}",
                escape(&r.metrics.name),
                phase.as_str(),
                u8::from(phase == r.phase)
            );
        }
    }
    route_counters(o, routes, ANALYSIS_VERDICTS_TOTAL, "Canary analysis verdicts.", "verdict", |m| {
        Verdict::ALL.iter().map(|v| v.as_str()).zip(m.verdicts.iter()).collect()
    });
    let standings: Vec<(&RouteView<'_>, Vec<Standing>)> = routes.iter().map(|r| (r, r.metrics.standings())).collect();
    for (name, help, pick) in [
        (
            ANALYSIS_EVIDENCE,
            "E-value of each evidence test after the latest verdict (a test fires at its threshold).",
            0,
        ),
        (
            ANALYSIS_THRESHOLD,
            "E-value at which each evidence test fires: K/alpha for its strongest start weighted by its share (scope weighted), what the revision or an epoch alone needs unweighted (revision, epoch).",
            1,
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (r, list) in &standings {
            for s in list {
                for (scope, e, t) in [
                    ("weighted", s.e_weighted, s.threshold),
                    ("revision", s.e_revision, s.threshold_revision),
                    ("epoch", s.e_epoch, s.threshold_epoch),
                ] {
                    let value = if pick == 0 { e } else { t };
                    let _ = writeln!(
                        o,
                        "{name}{{route=\"{}\",test=\"{}\",scope=\"{scope}\"}} {value}",
                        escape(&r.metrics.name),
                        s.test.as_str()
                    );
                }
            }
        }
    }
    route_counters(o, routes, ROLLBACKS_TOTAL, "Canary rollbacks, by reason.", "reason", |m| {
        RollbackReason::ALL.iter().map(|v| v.as_str()).zip(m.rollbacks.iter()).collect()
    });
    evidence_families(o, routes);
}

/// This process: start time, access log, analysis source, reloads,
/// webhooks, readiness, build.
fn process_families(o: &mut String, g: &Globals) {
    let _ = writeln!(o, "# HELP {PROCESS_START} Start time of this weir process, seconds since the Unix epoch.");
    let _ = writeln!(o, "# TYPE {PROCESS_START} gauge");
    let _ = writeln!(o, "{PROCESS_START} {}", g.start_time_s);
    let _ = writeln!(o, "# HELP {ACCESS_LOG_DROPPED} Access-log lines dropped because stdout could not keep up.");
    let _ = writeln!(o, "# TYPE {ACCESS_LOG_DROPPED} counter");
    let _ = writeln!(o, "{ACCESS_LOG_DROPPED} {}", g.access_log_dropped);
    let _ = writeln!(o, "# HELP {SOURCE_QUERIES} Queries sent to the analysis source (fleet mode).");
    let _ = writeln!(o, "# TYPE {SOURCE_QUERIES} counter");
    let _ = writeln!(o, "{SOURCE_QUERIES} {}", g.fleet_queries);
    let _ = writeln!(o, "# HELP {SOURCE_BYTES} Bytes of answers received from the analysis source.");
    let _ = writeln!(o, "# TYPE {SOURCE_BYTES} counter");
    let _ = writeln!(o, "{SOURCE_BYTES} {}", g.fleet_bytes);
    let _ = writeln!(o, "# HELP {UNROUTED_TOTAL} Requests that matched no route (answered 404).");
    let _ = writeln!(o, "# TYPE {UNROUTED_TOTAL} counter");
    let _ = writeln!(o, "{UNROUTED_TOTAL} {}", g.unrouted);
    unsolicited_family(o, &g.unsolicited);
    upstream_families(o, &g.upstreams);
    let _ = writeln!(o, "# HELP {CONFIG_RELOADS_TOTAL} Config reloads, by result.");
    let _ = writeln!(o, "# TYPE {CONFIG_RELOADS_TOTAL} counter");
    let _ = writeln!(o, "{CONFIG_RELOADS_TOTAL}{{result=\"success\"}} {}", g.reloads_success);
    let _ = writeln!(o, "{CONFIG_RELOADS_TOTAL}{{result=\"failure\"}} {}", g.reloads_failure);
    let _ = writeln!(o, "# HELP {CONFIG_GENERATION} Generation of the config in force (1 at start).");
    let _ = writeln!(o, "# TYPE {CONFIG_GENERATION} gauge");
    let _ = writeln!(o, "{CONFIG_GENERATION} {}", g.generation);
    let _ = writeln!(o, "# HELP {NOTIFICATIONS_TOTAL} Webhook notifications by outcome (retried counts attempts).");
    let _ = writeln!(o, "# TYPE {NOTIFICATIONS_TOTAL} counter");
    for (sink, counts) in &g.notifications {
        for (outcome, n) in ["sent", "failed", "dropped", "retried"].iter().zip(counts) {
            let _ = writeln!(o, "{NOTIFICATIONS_TOTAL}{{sink=\"{}\",outcome=\"{outcome}\"}} {n}", escape(sink));
        }
    }
    let _ = writeln!(o, "# HELP {READY} 1 while /ready answers 200; 0 while starting or draining.");
    let _ = writeln!(o, "# TYPE {READY} gauge");
    let _ = writeln!(o, "{READY} {}", u8::from(g.ready));
    let _ = writeln!(o, "# HELP {BUILD_INFO} Always 1; the version label says which weir runs.");
    let _ = writeln!(o, "# TYPE {BUILD_INFO} gauge");
    let _ = writeln!(o, "{BUILD_INFO}{{version=\"{}\"}} 1", crate::version::VERSION);
}
