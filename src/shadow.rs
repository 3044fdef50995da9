//! Shadow traffic (design §10): a sample of a route's requests copied to an
//! upstream whose answers nobody sees.
//!
//! The rule is that the primary can never tell. The copy is a spawned task
//! with its own deadline (`timeout`, covering the wait for the client's body
//! as well as the exchange) and a per-route gate (`max_in_flight`): over it
//! the copy is dropped and counted, never queued. The primary's body streams
//! as usual; the copy only takes another reference to each chunk (`Tee`) and
//! is sent once the body has ended. Results go to the route's shadow
//! metrics only — never to the stable/canary windows, verdicts or request
//! metrics.

use crate::limits::Slot;
use crate::metrics::{RouteMetrics, ShadowOutcome};
use crate::routing::policy::Shadow;
use crate::routing::{BUCKETS, Bucket, BucketSource, Facts, Route};
use crate::upstream::{ReqBody, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

pub static X_WEIR_SHADOW: http::HeaderName = http::HeaderName::from_static("x-weir-shadow");

/// Is this request mirrored? Pure. With a sticky key (or a valid bucket
/// cookie) the answer depends only on the user, so whole sessions are
/// mirrored; otherwise on `draw`, a fresh uniform draw in 0..10000.
pub fn sampled(
    shadow: &Shadow,
    route: &Route,
    method: &Method,
    bucket: Option<Bucket>,
    facts: &Facts<'_>,
    draw: u16,
) -> bool {
    if !shadow.methods.contains(method) {
        return false;
    }
    // The decision has no bucket when it did not need one (override, kill
    // switch, no canary); the user's key still decides the sample.
    let bucket = bucket.unwrap_or_else(|| route.bucket(facts, draw).0);
    let value = match bucket.source {
        BucketSource::Key(_) | BucketSource::Cookie => spread(bucket.value),
        BucketSource::Random => draw,
    };
    value < shadow.percent_bp
}

/// A fixed permutation of 0..10000, so the shadowed users are not simply
/// the canary's users (bucket < weight) over again. 7919 is prime and
/// coprime with 10000, so this is a bijection.
fn spread(bucket: u16) -> u16 {
    let b = u32::from(bucket) % u32::from(BUCKETS);
    u16::try_from((b * 7919 + 4049) % u32::from(BUCKETS)).unwrap_or(0)
}

/// A place under the route's `max_in_flight`; freed on drop.
pub struct MirrorPermit {
    _slot: Slot,
    metrics: Arc<RouteMetrics>,
}

impl MirrorPermit {
    /// `None` (and the copy counted `dropped`) when the route is at its cap.
    pub fn acquire(metrics: &Arc<RouteMetrics>, max: usize) -> Option<Self> {
        let Some(slot) = Slot::take(&metrics.shadow.in_flight, max) else {
            metrics.shadow.outcome(ShadowOutcome::Dropped);
            return None;
        };
        Some(Self { _slot: slot, metrics: Arc::clone(metrics) })
    }
}

/// The copy's body.
pub enum MirrorBody {
    Empty,
    /// Arrives when the primary's body has streamed to its end.
    Pending(oneshot::Receiver<Bytes>),
}

/// One mirrored request, ready to go.
pub struct Mirror {
    pub upstream: Arc<Upstream>,
    pub timeout: Duration,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: MirrorBody,
    /// The primary's status, once known (for the mismatch counter).
    pub primary: oneshot::Receiver<u16>,
}

impl Mirror {
    /// The head the shadow gets: the primary's, rewritten as for the primary
    /// (Host kept), minus `x-weir-version`, plus `x-weir-shadow: 1`.
    pub fn head(mut headers: HeaderMap) -> HeaderMap {
        headers.remove(&crate::headers::X_WEIR_VERSION);
        headers.insert(&X_WEIR_SHADOW, HeaderValue::from_static("1"));
        headers
    }
}

/// Send `copy` in the background; the caller never waits for it.
pub fn spawn(copy: Mirror, slot: MirrorPermit) {
    tokio::spawn(run(copy, slot));
}

async fn run(copy: Mirror, slot: MirrorPermit) {
    let metrics = Arc::clone(&slot.metrics);
    let started = Instant::now();
    let deadline = started + copy.timeout;
    let Mirror { upstream, method, uri, headers, body, primary, .. } = copy;
    let outcome = match tokio::time::timeout_at(deadline, exchange(&upstream, method, uri, headers, body)).await {
        Err(_) => ShadowOutcome::Timeout,
        Ok(Err(o)) => o,
        Ok(Ok(status)) => {
            // Compare status classes once the primary's is known (bounded by
            // the same deadline; a primary slower than that is not compared).
            if let Ok(Ok(p)) = tokio::time::timeout_at(deadline, primary).await
                && p / 100 != status / 100
            {
                metrics.shadow.mismatch();
            }
            ShadowOutcome::Ok
        }
    };
    if outcome != ShadowOutcome::SkippedBody {
        metrics.shadow.duration(started.elapsed());
    }
    metrics.shadow.outcome(outcome);
    tracing::debug!(route = %metrics.name, outcome = outcome.as_str(), "shadow copy done");
    drop(slot);
}

async fn exchange(
    upstream: &Upstream,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: MirrorBody,
) -> Result<u16, ShadowOutcome> {
    let body = match body {
        MirrorBody::Empty => Bytes::new(),
        MirrorBody::Pending(rx) => rx.await.map_err(|_| ShadowOutcome::SkippedBody)?,
    };
    let failed = |e: crate::upstream::UpstreamError| match e {
        crate::upstream::UpstreamError::Timeout | crate::upstream::UpstreamError::ConnectTimeout => {
            ShadowOutcome::Timeout
        }
        _ => ShadowOutcome::Error,
    };
    let conn = upstream.connect(&mut crate::upstream::Tried::new()).await.map_err(failed)?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = headers;
    let resp = upstream.send(conn, &mut parts, ReqBody::full(body), &[]).await.map_err(failed)?;
    let status = resp.status().as_u16();
    // Read the answer to its end (and discard it) so the connection can go
    // back to the pool; the deadline bounds this too.
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Err(ShadowOutcome::Error);
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_a_permutation_of_the_buckets() {
        let mut seen = vec![false; usize::from(BUCKETS)];
        for b in 0..BUCKETS {
            let s = usize::from(spread(b));
            assert!(!seen[s], "bucket {b} collides");
            seen[s] = true;
        }
        assert!(seen.iter().all(|x| *x));
    }

    #[test]
    fn spread_decorrelates_the_shadow_sample_from_the_canary_cohort() {
        // Of the 10 % of buckets that are canary at weight 10, about 10 %
        // (not 100 %) are in a 10 % shadow sample.
        let both = (0..1000u16).filter(|b| spread(*b) < 1000).count();
        assert!((50..=150).contains(&both), "{both}");
    }
}
