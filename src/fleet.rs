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
//! - [`run`] (here): the task that asks at the aligned times.
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

use crate::live::Live;
use crate::metrics::{
    EVIDENCE_BAD, EVIDENCE_SHARE, EVIDENCE_UNITS, FLEET_START, PROCESS_START, ROLLOUT_CONTROL, ROLLOUT_POSITION,
};
use crate::rollout::fleet::Target;
use crate::rollout::wall_ms;
use control::Control;
use prom::{Cost, QueryError, quote};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A replica with nothing folded and no fleet start to follow looks this
/// far back for the revision's first evidence.
const LOOKBACK_MS: u64 = 10 * 60_000;
/// Longest a replica in fleet mode waits for its first answer from the
/// source before it reports ready anyway.
pub const READY_WAIT: Duration = Duration::from_secs(8);
/// Evaluation times per range query (Prometheus allows 11,000 points).
const MAX_STEPS: u64 = 1_000;

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

fn label_filter(t: &Target) -> String {
    format!("route={},revision={}", quote(&t.route), quote(&t.revision))
}

/// Where a replica with nothing folded starts: the fleet's start, or a
/// look back for the first evidence.
async fn start_of(t: &Target, latest: u64, cost: &mut Cost) -> Result<u64, QueryError> {
    let q = format!("min({FLEET_START}{{{}}})", label_filter(t));
    let found = prom::instant(&t.source, &q, cost).await?;
    let aligned = |ms: u64| ms / t.interval_ms * t.interval_ms;
    Ok(match found.first().map(|(_, v)| *v) {
        Some(s) if s.is_finite() && s > 0.0 => aligned((s * 1000.0).round() as u64).min(latest),
        _ => aligned(latest.saturating_sub(LOOKBACK_MS)),
    })
}

/// Fold every evaluation time from `t.through_ms` (or the start) to `latest`.
async fn evaluate(live: &Arc<Live>, t: &Target, latest: u64, cost: &mut Cost) -> Result<(), QueryError> {
    let mut from = match t.through_ms {
        Some(th) => th,
        None => start_of(t, latest, cost).await?,
    };
    let q = evidence_query(&t.route, &t.revision);
    while from < latest {
        let to = latest.min(from + MAX_STEPS * t.interval_ms);
        let series = prom::range(&t.source, &q, from, to, t.interval_ms, cost).await?;
        // The newest time must be settled: every replica scraped after it
        // (within the scrape interval, and a second for the scrape itself).
        let allowed = crate::rollout::machine::duration_ms(t.source.scrape_interval) * 2 + 1_000;
        if to == latest
            && let Some(age) = staleness(&series, to)
            && age > allowed
        {
            return Err(QueryError::Lagging(age));
        }
        let times: Vec<u64> = (0..=(to - from) / t.interval_ms).map(|i| from + i * t.interval_ms).collect();
        // The fold's baseline lives in the Book: fold there.
        let (l, route, revision) = (Arc::clone(live), t.route.clone(), t.revision.clone());
        let _ = tokio::task::spawn_blocking(move || l.fleet_steps(&route, &revision, &series, &times)).await;
        from = to;
    }
    Ok(())
}

/// The fleet task: polls steering every scrape interval and folds each
/// evaluation time once its lag has passed, for every route in fleet mode.
pub async fn run(live: Arc<Live>, stop: tokio_util::sync::CancellationToken) {
    let mut polled_at: HashMap<String, Instant> = HashMap::new();
    let mut cost = Cost::default();
    loop {
        let targets = {
            let l = Arc::clone(&live);
            tokio::task::spawn_blocking(move || l.fleet_targets()).await.unwrap_or_default()
        };
        let mut wake = Duration::from_secs(1);
        for t in &targets {
            let poll_every = t.source.scrape_interval.max(Duration::from_millis(200));
            wake = wake.min(poll_every);
            let due = polled_at.get(&t.route).is_none_or(|p| p.elapsed() >= poll_every);
            if due {
                polled_at.insert(t.route.clone(), Instant::now());
                let q = format!("max({ROLLOUT_CONTROL}{{{}}})", label_filter(t));
                if let Ok(found) = prom::instant(&t.source, &q, &mut cost).await
                    && let Some((_, v)) = found.first()
                {
                    let (l, route, revision, c) =
                        (Arc::clone(&live), t.route.clone(), t.revision.clone(), Control::decode(*v));
                    let _ = tokio::task::spawn_blocking(move || l.fleet_polled(&route, &revision, c)).await;
                }
            }
            let now = wall_ms();
            let lag = crate::rollout::machine::duration_ms(t.source.lag);
            let latest = now.saturating_sub(lag) / t.interval_ms * t.interval_ms;
            if t.through_ms.is_some_and(|th| th >= latest) {
                let next = latest + t.interval_ms + lag;
                wake = wake.min(Duration::from_millis(next.saturating_sub(now).max(10)));
                continue;
            }
            if let Err(e) = evaluate(&live, t, latest, &mut cost).await {
                let (l, route, revision, why) = (Arc::clone(&live), t.route.clone(), t.revision.clone(), e.to_string());
                let _ = tokio::task::spawn_blocking(move || l.fleet_unavailable(&route, &revision, latest, &why)).await;
            }
        }
        if targets.is_empty() {
            wake = Duration::from_secs(1);
        }
        live.fleet_cost(cost);
        if !live.fleet_passed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            live.fleet_first_pass.notify_waiters();
            live.fleet_first_pass.notify_one();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = live.changed.notified() => {}
            _ = tokio::time::sleep(wake) => {}
        }
    }
}
