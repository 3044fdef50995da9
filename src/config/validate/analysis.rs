//! `routes[].analysis`: the judge's policy (docs/guide/src/canary-judgement.md),
//! with the window rule's keys accepted, warned about and ignored.

use super::Problems;
use crate::config::raw::{PercentValue, RawAnalysis, RawSource};
use crate::config::{Analysis, AnalysisMode, FleetSource};
use std::time::Duration;

/// `routes[i].analysis`, checked and compiled (defaults for what is unset).
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
    let mode = compile_mode(a.mode.as_deref(), path, p);
    let alpha = percent(p, &format!("{path}.alpha"), a.alpha.as_ref(), true, 50.0).map_or(d.alpha, |x| x / 100.0);
    let max_error_rate = percent(p, &format!("{path}.max_error_rate"), a.max_error_rate.as_ref(), false, 100.0);
    let error_tolerance = at_least(
        p,
        &format!("{path}.error_tolerance"),
        (a.error_tolerance, 1.0, d.error_tolerance),
        "an odds ratio of at least 1 (1.25 = 25 % more errors are tolerated)",
    );
    let min_error_delta = at_least(
        p,
        &format!("{path}.min_error_delta"),
        (a.min_error_delta, 0.0, d.min_error_delta),
        "percentage points, 0 or more",
    );
    let latency_tolerance = at_least(
        p,
        &format!("{path}.latency_tolerance"),
        (a.latency_tolerance, 0.0, d.latency_tolerance),
        "a fraction, 0 or more (0.05 = 5 % slower than stable is tolerated)",
    );
    let warmup = p.duration(&format!("{path}.warmup"), a.warmup.as_ref(), d.warmup);
    let epoch = p.duration(&format!("{path}.epoch"), a.epoch.as_ref(), d.epoch);
    if epoch < interval {
        p.at(format!("{path}.epoch"), "must be at least one interval");
    }
    let max_p95 = slo(p, &format!("{path}.max_p95"), a.max_p95.as_ref());
    let max_p99 = slo(p, &format!("{path}.max_p99"), a.max_p99.as_ref());
    let max_ws_rtt_p95 = slo(p, &format!("{path}.max_ws_rtt_p95"), a.max_ws_rtt_p95.as_ref());
    retired_keys(a, path, p);
    let source = a.source.as_ref().and_then(|s| compile_source(s, &format!("{path}.source"), interval, p));
    Analysis {
        source,
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

/// `mode`: `enforce` (the default) or `observe`.
fn compile_mode(mode: Option<&str>, path: &str, p: &mut Problems) -> AnalysisMode {
    match mode {
        None | Some("enforce") => AnalysisMode::Enforce,
        Some("observe") => AnalysisMode::Observe,
        Some(other) => {
            p.at(format!("{path}.mode"), format!("`{other}` is not `enforce` or `observe`"));
            AnalysisMode::Enforce
        }
    }
}

/// A percent at `field` up to `hi`, above 0 (`lo_open`) or from 0; None
/// when unset or out of range.
fn percent(p: &mut Problems, field: &str, v: Option<&PercentValue>, lo_open: bool, hi: f64) -> Option<f64> {
    let v = v?;
    match v.percent() {
        Ok(x) if x.is_finite() && (if lo_open { x > 0.0 } else { x >= 0.0 }) && x <= hi => Some(x),
        Ok(_) => {
            let lo = if lo_open { "above 0" } else { "from 0" };
            p.at(field, format!("a percent {lo} up to {hi}"));
            None
        }
        Err(e) => {
            p.at(field, e);
            None
        }
    }
}

/// A number at `field`: `(value, min, default)`; `what` says what it must be.
fn at_least(p: &mut Problems, field: &str, (v, min, default): (Option<f64>, f64, f64), what: &str) -> f64 {
    match v {
        None => default,
        Some(x) if x.is_finite() && x >= min => x,
        Some(_) => {
            p.at(field, what.to_string());
            default
        }
    }
}

/// An SLO guard's latency at `field`: None when unset (or wrongly 0s).
fn slo(p: &mut Problems, field: &str, v: Option<&String>) -> Option<Duration> {
    let d = v.map(|v| p.duration(field, Some(v), Duration::ZERO));
    if d.is_some_and(|d| d.is_zero()) {
        p.at(field, "must be more than 0s");
    }
    d.filter(|d| !d.is_zero())
}

/// The window rule's keys: warned about as deprecated and ignored, but
/// still checked as they always were.
fn retired_keys(a: &RawAnalysis, path: &str, p: &mut Problems) {
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
            "test R ranks canary's requests in stable's distribution, body and tail; `latency_tolerance` sets how much slower is tolerated",
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
}

/// Split `http://host[:port][/prefix]` into authority and path prefix.
pub(crate) fn parse_base_url(url: &str) -> Result<(String, String), String> {
    let rest = match url.strip_prefix("http://") {
        Some(r) => r,
        None if url.starts_with("https://") => {
            return Err("https is not supported for the analysis source yet; use the in-cluster http URL".into());
        }
        None => return Err(format!("`{url}` is not an http:// URL")),
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace()) {
        return Err(format!("`{url}` has no usable host"));
    }
    if prefix.contains(['?', '#']) {
        return Err(format!("`{url}`: a base URL has no query or fragment"));
    }
    let authority = if authority.starts_with('[') || authority.rsplit_once(':').is_none_or(|(_, p)| p.is_empty()) {
        if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:80")
        } else {
            authority.to_owned()
        }
    } else {
        authority.to_owned()
    };
    if let Some((_, port)) = authority.rsplit_once(':')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{url}`: port `{port}` is not a number up to 65535"));
    }
    Ok((authority, prefix.to_owned()))
}

fn compile_source(s: &RawSource, path: &str, interval: Duration, p: &mut Problems) -> Option<FleetSource> {
    let Some(url) = s.prometheus.as_deref() else {
        p.at(format!("{path}.prometheus"), "required: the base URL of the Prometheus that scrapes every replica");
        return None;
    };
    let (authority, path_prefix) = match parse_base_url(url.trim()) {
        Ok(x) => x,
        Err(e) => {
            p.at(format!("{path}.prometheus"), e);
            return None;
        }
    };
    let scrape_interval =
        p.duration(&format!("{path}.scrape_interval"), s.scrape_interval.as_ref(), Duration::from_secs(15));
    if scrape_interval < Duration::from_millis(100) {
        p.at(format!("{path}.scrape_interval"), "must be at least 100ms");
    }
    if interval < scrape_interval {
        p.at(
            format!("{path}.scrape_interval"),
            format!(
                "the analysis interval ({}ms) is shorter than the scrape interval: most intervals would hold no new sample",
                interval.as_millis()
            ),
        );
    }
    // A scrape that began just before an evaluation time is stored when it
    // ends: Prometheus caps a scrape at its timeout, which is at most the
    // scrape interval (and 10s by default).
    let default_lag = scrape_interval.min(Duration::from_secs(10)) + Duration::from_secs(1);
    let lag = p.duration(&format!("{path}.lag"), s.lag.as_ref(), default_lag);
    if lag.is_zero() {
        p.at(format!("{path}.lag"), "must be more than 0s");
    }
    let timeout = p.duration(&format!("{path}.timeout"), s.timeout.as_ref(), Duration::from_secs(5));
    if timeout.is_zero() {
        p.at(format!("{path}.timeout"), "must be more than 0s");
    }
    Some(FleetSource { prometheus: url.trim().to_owned(), authority, path_prefix, scrape_interval, lag, timeout })
}

#[cfg(test)]
mod tests {
    use super::parse_base_url;

    #[test]
    fn base_urls() {
        assert_eq!(parse_base_url("http://prom:9090").unwrap(), ("prom:9090".into(), "".into()));
        assert_eq!(parse_base_url("http://prom").unwrap(), ("prom:80".into(), "".into()));
        assert_eq!(parse_base_url("http://10.0.0.1:9090/prom/").unwrap(), ("10.0.0.1:9090".into(), "/prom".into()));
        assert_eq!(parse_base_url("http://[::1]:9090").unwrap(), ("[::1]:9090".into(), "".into()));
        assert!(parse_base_url("https://prom").unwrap_err().contains("https"));
        assert!(parse_base_url("prom:9090").is_err());
        assert!(parse_base_url("http://prom:x").is_err());
        assert!(parse_base_url("http:///x").is_err());
    }
}
