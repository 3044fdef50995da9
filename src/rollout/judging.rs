//! One route's verdict, taken: freeze the next interval's thresholds, take
//! the interval's counts from the recorder in the same step, judge, apply
//! the verdict to the route's state, and turn epochs (a new step, or
//! `analysis.epoch` elapsed) in step with the recorder's user filters.

use crate::analysis::machine::{RouteState, Transition};
use crate::analysis::{Event, Frozen, Interval, Judgement, Verdict, judge, rank};
use crate::metrics::RouteMetrics;
use crate::routing::Route;
use crate::routing::policy::Analysis;
use crate::units::duration_ms;
use serde_json::{Value, json};
use std::time::Instant;

/// Stable needs this many requests in the window before its quantiles
/// become latency lines.
const MIN_STABLE_FOR_LINES: u64 = 20;

fn us(ms: f64) -> u64 {
    (ms * 1000.0).round().max(0.0) as u64
}

fn opt_us(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The thresholds for the interval that starts now: stable's quantiles over
/// the window just past (none during a step's warm-up), and the SLO lines.
pub fn frozen_for(a: &Analysis, m: &RouteMetrics, step_since_ms: u64, now: Instant, now_ms: u64) -> Frozen {
    let warming = now_ms.saturating_sub(step_since_ms) < duration_ms(a.warmup);
    let (requests, lines) = m.stable.window.quantiles_us(now, &rank::LEVELS);
    let rtt = m.stable.rtt_window.stats(now);
    Frozen {
        rank_us: lines.filter(|_| !warming && requests >= MIN_STABLE_FOR_LINES),
        rtt95_us: (!warming && rtt.requests >= MIN_STABLE_FOR_LINES).then(|| us(rtt.p95_ms)),
        tolerance: a.latency_tolerance,
        slo_p95_us: opt_us(a.max_p95),
        slo_p99_us: opt_us(a.max_p99),
        slo_rtt_us: opt_us(a.max_ws_rtt_p95),
    }
}

/// Judge `r` once. Returns the judgement, what it did to `st`, and the
/// inputs the journal records.
pub fn take_verdict(
    r: &Route,
    a: &Analysis,
    st: &mut RouteState,
    m: &RouteMetrics,
    now: Instant,
    now_ms: u64,
) -> (Judgement, Transition, Value) {
    let next = frozen_for(a, m, st.step_since_ms, now, now_ms);
    let iv = m.evidence.take(next);
    st.judge.frozen = next;
    let ws_rtt = !r.websocket.rtt_interval.is_zero();
    let j = judge(a, &mut st.judge, &iv, ws_rtt, now_ms);
    let t = st.on_verdict(&j, r.control.acting_mode(a.mode), r.progression.as_deref(), now_ms);
    match t {
        Transition::Advanced { .. } | Transition::Promoted => {
            // A new step: fresh epoch processes, and latency warms up again.
            new_step(a, st, m, now, now_ms);
        }
        Transition::None if st.judge.epoch_due(a, now_ms) => {
            st.judge.new_epoch(now_ms);
            m.evidence.new_epoch(None);
        }
        _ => {}
    }
    let inputs = match j.verdict {
        Verdict::Pass | Verdict::Insufficient => routine_inputs(&iv, &j, st),
        Verdict::Fail | Verdict::Hold => inputs(a, &iv, &j, st),
    };
    (j, t, inputs)
}

/// A new step began outside a verdict (admin `promote`).
pub fn new_step(a: &Analysis, st: &mut RouteState, m: &RouteMetrics, now: Instant, now_ms: u64) {
    st.judge.new_step(now_ms);
    let frozen = frozen_for(a, m, st.step_since_ms, now, now_ms);
    st.judge.frozen = frozen;
    m.evidence.new_epoch(Some(frozen));
}

fn per_version(c: &crate::analysis::Cell, e: Event) -> Value {
    json!({"stable": {"units": c.n(e, 0), "bad": c.x(e, 0)}, "canary": {"units": c.n(e, 1), "bad": c.x(e, 1)}})
}

/// A routine verdict (pass, insufficient) is journaled short, one line of
/// a few hundred bytes every interval: each test's e-values (since the
/// revision, strongest epoch) and the interval's counts.
fn routine_inputs(iv: &Interval, j: &Judgement, st: &RouteState) -> Value {
    let tests: serde_json::Map<String, Value> = j
        .standings
        .iter()
        .map(|s| (s.test.as_str().to_owned(), json!([s.e_revision, s.e_epoch, s.e_weighted])))
        .collect();
    json!({
        "tests": tests,
        "epoch": st.judge.epoch,
        "sat_out": j.sat_out,
        "interval": {"errors": per_version(&iv.requests, Event::Error)},
    })
}

/// What the journal keeps of a fail or hold: enough to redo it by hand.
fn inputs(a: &Analysis, iv: &Interval, j: &Judgement, st: &RouteState) -> Value {
    let ms = |v: Option<u64>| v.map(|u| u as f64 / 1000.0);
    let f = &iv.frozen;
    let totals = &st.judge.revision().map(|s| s.totals).unwrap_or_default();
    let version = |v: usize| {
        let n = totals.n(Event::Error, v);
        let x = totals.x(Event::Error, v);
        let pct = if n == 0 { 0.0 } else { x as f64 * 100.0 / n as f64 };
        // Timed: requests with a rank in stable's distribution (test R),
        // i.e. those that finished with lines set, after the warm-up.
        json!({"requests": n, "errors": x, "error_percent": pct, "timed": totals.ranked(v)})
    };
    json!({
        "fired": j.fired,
        "held_by": j.held_by.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "sat_out": j.sat_out,
        "tests": j.standings.iter().map(|s| json!({
            "test": s.test.as_str(),
            "e_weighted": s.e_weighted, "threshold": s.threshold,
            "e_revision": s.e_revision, "threshold_revision": s.threshold_revision,
            "epoch": s.epoch, "e_epoch": s.e_epoch, "threshold_epoch": s.threshold_epoch,
            "e_slo": s.e_slo, "breaking": s.breaking,
        })).collect::<Vec<_>>(),
        "epoch": st.judge.epoch,
        "thresholds": {
            "stable_p50_ms": ms(f.stable_at(0.5)),
            "stable_p95_ms": ms(f.stable_at(0.95)),
            "stable_p99_ms": ms(f.stable_at(0.99)),
            "stable_p99_9_ms": ms(f.stable_at(0.999)),
            "stable_rtt_p95_ms": ms(f.rtt95_us),
            "latency_tolerance": f.tolerance,
            "max_p95_ms": ms(f.slo_p95_us), "max_p99_ms": ms(f.slo_p99_us), "max_ws_rtt_p95_ms": ms(f.slo_rtt_us),
            "max_error_rate": a.max_error_rate, "error_tolerance": a.error_tolerance,
            "min_error_delta": a.min_error_delta, "alpha": a.alpha,
        },
        "interval": {
            "errors": per_version(&iv.requests, Event::Error),
            "mean_rank": [rank::mean_rank(&iv.requests.rank, 0), rank::mean_rank(&iv.requests.rank, 1)],
        },
        "since_revision": {"stable": version(0), "canary": version(1)},
    })
}
