//! Fleet judgement through Prometheus (judgement.md § Fleet): every replica
//! judges the canary from the whole fleet's evidence, reaches the same
//! verdict at the same evaluation time, and follows the same steering. No
//! protocol between replicas: each exports counters and gauges on its admin
//! port, Prometheus scrapes them all, and each replica asks Prometheus.
//!
//! - [`fold`]: Prometheus answers → per-interval evidence, pure.
//! - [`state`]: the replicated rollout state folded from those steps, and
//!   what a replica serves ahead of it, pure.
//! - [`control`]: steering encoded so that `max` is the merge.
//! - [`prom`]: the HTTP API client.
//! - [`broadcast`]: `weir fleet`, one admin call to every replica.
//! - `crate::tasks::fleet`: the task that asks at the aligned times.
//!
//! Timing: evaluation time T is a wall-clock multiple of `analysis.interval`.
//! The question about T is asked at T + `source.lag` (a scrape that began
//! before T has been stored by then), with PromQL evaluated *at* T (range
//! query steps land exactly on T), so every replica gets the same answer.
//! Steering is also polled every scrape interval without alignment, so a
//! latch reaches every replica within about two scrape intervals.

pub mod broadcast;
pub mod control;
pub mod fold;
pub mod prom;
pub mod state;

use crate::metrics::{EVIDENCE_BAD, EVIDENCE_SHARE, EVIDENCE_UNITS, PROCESS_START, ROLLOUT_CONTROL, ROLLOUT_POSITION};
use crate::routing::policy::FleetSource;
use prom::quote;
use std::time::Duration;

/// A replica with nothing folded and no fleet start to follow looks this
/// far back for the revision's first evidence.
pub const LOOKBACK_MS: u64 = 10 * 60_000;
/// Longest a replica in fleet mode waits for its first answer from the
/// source before it reports ready anyway.
pub const READY_WAIT: Duration = Duration::from_secs(8);
/// Evaluation times per range query (Prometheus allows 11,000 points).
pub const MAX_STEPS: u64 = 1_000;

/// Everything the fold needs about one route, in one range query.
pub fn evidence_query(route: &str, revision: &str) -> String {
    format!(
        "{{__name__=~\"{EVIDENCE_UNITS}|{EVIDENCE_BAD}|{EVIDENCE_SHARE}|{ROLLOUT_CONTROL}|{ROLLOUT_POSITION}\",route={},revision={}}} or {PROCESS_START} or label_replace(timestamp({PROCESS_START}), \"{FRESH}\", \"1\", \"\", \"\")",
        quote(route),
        quote(revision)
    )
}

/// Label on the series that carry each target's latest sample time.
pub const FRESH: &str = "weir_sample_time";

/// How old the stalest replica's newest sample is at `t` (ms), if any
/// replica reports: a source that lags behind its scrapes would answer a
/// question about `t` differently a moment later.
pub fn staleness(series: &[fold::Series], t: u64) -> Option<u64> {
    series
        .iter()
        .filter(|s| s.labels.contains_key(FRESH))
        .filter_map(|s| s.points.iter().find(|p| p.0 == t).map(|p| p.1))
        .map(|ts| t.saturating_sub((ts * 1000.0).round() as u64))
        .max()
}

/// The PromQL label matchers of one route's revision.
pub fn label_filter(t: &Target) -> String {
    format!("route={},revision={}", quote(&t.route), quote(&t.revision))
}

/// What the fleet task needs to ask Prometheus about one route.
#[derive(Debug, Clone)]
pub struct Target {
    pub route: String,
    pub revision: String,
    pub source: FleetSource,
    pub interval_ms: u64,
    pub segments: Vec<String>,
    /// Latest evaluation time folded (None: replay from the start).
    pub through_ms: Option<u64>,
}
