//! The background tasks that drive `live`: each runs until its stop token
//! is cancelled, does its blocking part (journal fsync) on a blocking
//! thread, and changes what serves only through `Live`.
//!
//! - [`controller`]: takes each route's verdict every `analysis.interval`
//!   (routes judged by this replica alone).
//! - [`fleet`]: asks the analysis source at the aligned evaluation times and
//!   polls the fleet's steering (routes in fleet mode, `crate::fleet`).
//! - [`reap_idle_connections`]: closes pooled upstream connections that
//!   expired or that their upstream closed.

use crate::clock::wall_ms;
use crate::fleet::Target;
use crate::fleet::control::Control;
use crate::fleet::prom::{self, Cost, QueryError};
use crate::fleet::{LOOKBACK_MS, MAX_STEPS, evidence_query, label_filter, staleness};
use crate::live::Live;
use crate::metrics::{FLEET_START, ROLLOUT_CONTROL};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Longest the controller sleeps, so it notices new routes promptly even
/// if a wake-up were missed.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// The controller task: takes each route's verdict every `interval` until
/// `stop`. The tick runs on a blocking thread because it fsyncs the journal.
pub async fn controller(live: Arc<Live>, stop: CancellationToken) {
    loop {
        let l = Arc::clone(&live);
        let next = tokio::task::spawn_blocking(move || l.tick(Instant::now(), wall_ms())).await.ok().flatten();
        let now = Instant::now();
        let wake = next.map_or(now + MAX_SLEEP, |n| n.min(now + MAX_SLEEP));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = live.changed.notified() => {}
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
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
        let allowed = crate::units::duration_ms(t.source.scrape_interval) * 2 + 1_000;
        if to == latest
            && let Some(age) = staleness(&series, to)
            && age > allowed
        {
            return Err(QueryError::Lagging(age));
        }
        let times: Vec<u64> = (0..=(to - from) / t.interval_ms).map(|i| from + i * t.interval_ms).collect();
        // The fold's baseline lives in `Rollouts`: fold there.
        let (l, route, revision) = (Arc::clone(live), t.route.clone(), t.revision.clone());
        let _ = tokio::task::spawn_blocking(move || l.fleet_steps(&route, &revision, &series, &times)).await;
        from = to;
    }
    Ok(())
}

/// The fleet task: polls steering every scrape interval and folds each
/// evaluation time once its lag has passed, for every route in fleet mode.
pub async fn fleet(live: Arc<Live>, stop: CancellationToken) {
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
            let lag = crate::units::duration_ms(t.source.lag);
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

/// How often idle upstream connections are checked.
const REAP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Close pooled upstream connections that expired or that their upstream
/// closed, so a burst's sockets do not linger (in CLOSE_WAIT) until a
/// request happens to pop them.
pub async fn reap_idle_connections(live: Arc<Live>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REAP_EVERY) => {}
        }
        let served = live.load();
        let dropped: usize = served.upstreams.iter().map(|u| u.reap_idle()).sum();
        if dropped > 0 {
            tracing::debug!(dropped, "idle upstream connections closed");
        }
    }
}
