//! The verdict (design §4): a pure function of the analysis policy and the
//! two windows. Limits are "exceeded" only when strictly above; a canary
//! exactly at a threshold passes.

use crate::config::Analysis;
use crate::stats::WindowStats;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Insufficient,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Fail, Verdict::Insufficient];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Insufficient => "insufficient",
        }
    }
}

/// Which limit a failing canary broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    ErrorRate,
    /// Canary p99 above `max_p99`.
    Latency,
    /// Canary p99 above `max_p99_ratio` × stable p99.
    LatencyRatio,
}

impl Breach {
    pub fn as_str(self) -> &'static str {
        match self {
            Breach::ErrorRate => "error_rate",
            Breach::Latency => "latency",
            Breach::LatencyRatio => "latency_ratio",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Every limit broken, in the order error rate, latency, latency ratio;
    /// non-empty exactly when the verdict is `fail`.
    pub breaches: Vec<Breach>,
}

/// Judge the canary from the windows of both versions.
pub fn judge(policy: &Analysis, stable: &WindowStats, canary: &WindowStats) -> Judgement {
    if canary.requests < policy.min_requests || canary.requests == 0 {
        return Judgement { verdict: Verdict::Insufficient, breaches: Vec::new() };
    }
    let mut breaches = Vec::new();
    // errors / requests > max% without dividing, so "exactly at" is exact.
    if canary.errors as f64 * 100.0 > policy.max_error_rate * canary.requests as f64 {
        breaches.push(Breach::ErrorRate);
    }
    if let Some(max) = policy.max_p99
        && canary.p99_ms > max.as_secs_f64() * 1000.0
    {
        breaches.push(Breach::Latency);
    }
    if let Some(ratio) = policy.max_p99_ratio
        && stable.requests >= policy.min_requests.max(1)
        && stable.p99_ms > 0.0
        && canary.p99_ms > ratio * stable.p99_ms
    {
        breaches.push(Breach::LatencyRatio);
    }
    let verdict = if breaches.is_empty() { Verdict::Pass } else { Verdict::Fail };
    Judgement { verdict, breaches }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> Analysis {
        Analysis {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            min_requests: 100,
            max_error_rate: 1.0,
            max_p99: Some(Duration::from_millis(400)),
            max_p99_ratio: Some(1.5),
            failures: 3,
        }
    }

    fn stats(requests: u64, errors: u64, p99_ms: f64) -> WindowStats {
        WindowStats {
            requests,
            errors,
            error_percent: if requests == 0 { 0.0 } else { errors as f64 * 100.0 / requests as f64 },
            p50_ms: p99_ms / 2.0,
            p95_ms: p99_ms,
            p99_ms,
        }
    }

    #[test]
    fn too_few_canary_samples_is_insufficient_even_when_all_fail() {
        let j = judge(&policy(), &stats(5000, 0, 10.0), &stats(99, 99, 9000.0));
        assert_eq!(j, Judgement { verdict: Verdict::Insufficient, breaches: vec![] });
        let j = judge(&policy(), &stats(5000, 0, 10.0), &stats(100, 99, 10.0));
        assert_eq!(j.verdict, Verdict::Fail, "exactly min_requests is enough");
    }

    #[test]
    fn min_requests_zero_still_needs_one_request() {
        let p = Analysis { min_requests: 0, ..policy() };
        assert_eq!(judge(&p, &stats(0, 0, 0.0), &stats(0, 0, 0.0)).verdict, Verdict::Insufficient);
    }

    #[test]
    fn error_rate_exactly_at_the_limit_passes_and_above_fails() {
        let stable = stats(1000, 0, 10.0);
        assert_eq!(judge(&policy(), &stable, &stats(200, 2, 10.0)).verdict, Verdict::Pass, "1.0 % is allowed");
        let j = judge(&policy(), &stable, &stats(200, 3, 10.0));
        assert_eq!(j.breaches, vec![Breach::ErrorRate]);
    }

    #[test]
    fn absolute_p99_limit() {
        let stable = stats(1000, 0, 390.0);
        assert_eq!(judge(&policy(), &stable, &stats(200, 0, 400.0)).verdict, Verdict::Pass);
        assert_eq!(judge(&policy(), &stable, &stats(200, 0, 401.0)).breaches, vec![Breach::Latency]);
    }

    #[test]
    fn ratio_applies_only_when_stable_has_enough_samples() {
        let canary = stats(200, 0, 30.0);
        assert_eq!(judge(&policy(), &stats(1000, 0, 20.0), &canary).verdict, Verdict::Pass, "exactly 1.5x passes");
        assert_eq!(judge(&policy(), &stats(1000, 0, 19.0), &canary).breaches, vec![Breach::LatencyRatio]);
        assert_eq!(judge(&policy(), &stats(99, 0, 1.0), &canary).verdict, Verdict::Pass, "stable too thin");
    }

    #[test]
    fn every_breach_is_listed_in_a_fixed_order() {
        let j = judge(&policy(), &stats(1000, 0, 10.0), &stats(200, 100, 900.0));
        assert_eq!(j.breaches, vec![Breach::ErrorRate, Breach::Latency, Breach::LatencyRatio]);
    }

    #[test]
    fn optional_limits_off() {
        let p = Analysis { max_p99: None, max_p99_ratio: None, ..policy() };
        assert_eq!(judge(&p, &stats(1000, 0, 1.0), &stats(200, 0, 60_000.0)).verdict, Verdict::Pass);
    }
}
