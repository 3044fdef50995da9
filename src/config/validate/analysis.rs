//! `routes[].analysis`: the judge's policy (README "Canary judgement"),
//! with the window rule's keys accepted, warned about and ignored.

use super::Problems;
use crate::config::raw::{PercentValue, RawAnalysis};
use crate::config::{Analysis, AnalysisMode};
use std::time::Duration;

pub(super) fn compile_analysis(a: &RawAnalysis, path: &str, p: &mut Problems) -> Analysis {
    let d = Analysis::default();
    let interval = p.duration(&format!("{path}.interval"), a.interval.as_ref(), d.interval);
    let window = p.duration(&format!("{path}.window"), a.window.as_ref(), d.window);
    if interval.is_zero() {
        p.at(format!("{path}.interval"), "must be more than 0s");
    }
    if window < Duration::from_millis(100) {
        p.at(format!("{path}.window"), "must be at least 100ms");
    }
    let mode = match a.mode.as_deref() {
        None | Some("enforce") => AnalysisMode::Enforce,
        Some("observe") => AnalysisMode::Observe,
        Some(other) => {
            p.at(format!("{path}.mode"), format!("`{other}` is not `enforce` or `observe`"));
            AnalysisMode::Enforce
        }
    };
    let mut percent = |key: &str, v: Option<&PercentValue>, lo_open: bool, hi: f64| -> Option<f64> {
        let v = v?;
        match v.percent() {
            Ok(x) if x.is_finite() && (if lo_open { x > 0.0 } else { x >= 0.0 }) && x <= hi => Some(x),
            Ok(_) => {
                let lo = if lo_open { "above 0" } else { "from 0" };
                p.at(format!("{path}.{key}"), format!("a percent {lo} up to {hi}"));
                None
            }
            Err(e) => {
                p.at(format!("{path}.{key}"), e);
                None
            }
        }
    };
    let alpha = percent("alpha", a.alpha.as_ref(), true, 50.0).map_or(d.alpha, |x| x / 100.0);
    let max_error_rate = percent("max_error_rate", a.max_error_rate.as_ref(), false, 100.0);
    let mut at_least = |key: &str, v: Option<f64>, min: f64, default: f64, what: &str| -> f64 {
        match v {
            None => default,
            Some(x) if x.is_finite() && x >= min => x,
            Some(_) => {
                p.at(format!("{path}.{key}"), what.to_string());
                default
            }
        }
    };
    let error_tolerance = at_least(
        "error_tolerance",
        a.error_tolerance,
        1.0,
        d.error_tolerance,
        "an odds ratio of at least 1 (1.25 = 25 % more errors are tolerated)",
    );
    let min_error_delta =
        at_least("min_error_delta", a.min_error_delta, 0.0, d.min_error_delta, "percentage points, 0 or more");
    let latency_tolerance = at_least(
        "latency_tolerance",
        a.latency_tolerance,
        0.0,
        d.latency_tolerance,
        "a fraction, 0 or more (0.05 = 5 % slower than stable is tolerated)",
    );
    let warmup = p.duration(&format!("{path}.warmup"), a.warmup.as_ref(), d.warmup);
    let epoch = p.duration(&format!("{path}.epoch"), a.epoch.as_ref(), d.epoch);
    if epoch < interval {
        p.at(format!("{path}.epoch"), "must be at least one interval");
    }
    let mut slo = |key: &str, v: Option<&String>| {
        let d = v.map(|v| p.duration(&format!("{path}.{key}"), Some(v), Duration::ZERO));
        if d.is_some_and(|d| d.is_zero()) {
            p.at(format!("{path}.{key}"), "must be more than 0s");
        }
        d.filter(|d| !d.is_zero())
    };
    let max_p95 = slo("max_p95", a.max_p95.as_ref());
    let max_p99 = slo("max_p99", a.max_p99.as_ref());
    let max_ws_rtt_p95 = slo("max_ws_rtt_p95", a.max_ws_rtt_p95.as_ref());
    for (key, set, instead) in [
        (
            "min_requests",
            a.min_requests.is_some(),
            "evidence tests need no minimum: with little data they simply have not crossed",
        ),
        (
            "failures",
            a.failures.is_some(),
            "a fail rolls back at once; the e-process already integrates evidence over the rollout",
        ),
        (
            "max_p99_ratio",
            a.max_p99_ratio.is_some(),
            "test L99 compares canary with stable's p99; `latency_tolerance` sets how much slower is tolerated",
        ),
    ] {
        if set {
            p.warn(format!("{path}.{key}"), format!("deprecated and ignored: {instead}"));
        }
    }
    if let Some(r) = a.max_p99_ratio
        && !(r.is_finite() && r > 0.0)
    {
        p.at(format!("{path}.max_p99_ratio"), "must be a number above 0");
    }
    if a.failures == Some(0) {
        p.at(format!("{path}.failures"), "must be at least 1");
    }
    Analysis {
        interval,
        window,
        mode,
        alpha,
        error_tolerance,
        min_error_delta,
        latency_tolerance,
        warmup,
        epoch,
        max_error_rate,
        max_p95,
        max_p99,
        max_ws_rtt_p95,
    }
}
