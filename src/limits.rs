//! Shared handles of weir's resource limits, kept at the bottom of the
//! module ladder so the request path and the WebSocket relay can hold them
//! without reaching up into `app`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
// tokio's clock: the same as std's, except that tests can pause it.
use tokio::time::Instant;

/// One accepted connection's place under `limits.max_connections`: held by
/// the connection task, and by a WebSocket after an upgrade (the socket
/// outlives the HTTP connection that carried the handshake).
pub type ConnPermit = Arc<tokio::sync::OwnedSemaphorePermit>;

/// What a WebSocket keeps of the client connection that carried its
/// handshake: the connection's `max_connections` slot, and over HTTP/2 an
/// open stream (the tunnel), so the connection does not count as idle.
pub struct ConnHold {
    _permit: ConnPermit,
    _busy: Option<Busy>,
}

impl ConnHold {
    pub fn new(permit: ConnPermit, busy: Option<Busy>) -> Self {
        Self { _permit: permit, _busy: busy }
    }
}

/// Whether an HTTP/2 client connection has a stream open, and since when
/// it has had none: what `limits.idle_timeout` is measured against. A
/// request holds a [`Busy`] until its response body is done; a WebSocket
/// over HTTP/2 holds one for the life of its tunnel.
pub struct Activity {
    open: AtomicUsize,
    born: Instant,
    /// When the last stream closed, in milliseconds after `born`.
    last_ms: AtomicU64,
}

/// One open stream of an [`Activity`]; the stream is over when it drops.
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), born: now, last_ms: AtomicU64::new(0) })
    }

    pub fn begin(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// How long the connection has had no stream open at `now`; `None`
    /// while one is.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.born.checked_add(last).map_or(Duration::ZERO, |since| now.saturating_duration_since(since)))
    }

    fn end(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX);
        // The time first, then the count: a checker that sees no stream
        // open also sees when the last one closed.
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end(Instant::now());
    }
}

/// Resolves once `activity` has had no stream open for `limit`, counting
/// from `from` at the earliest (checked when that could first be true, so
/// an idle connection costs one timer).
pub async fn idle(activity: &Activity, limit: Duration, from: Instant) {
    loop {
        let now = Instant::now();
        let wait = match activity.idle_for(now).map(|d| d.min(now.saturating_duration_since(from))) {
            Some(d) if d >= limit => return,
            Some(d) => limit - d,
            None => limit,
        };
        tokio::time::sleep(wait).await;
    }
}

/// A place under a counted cap (`limits.max_in_flight`, a shadow's
/// `max_in_flight`): taken only while the count is below the cap, given
/// back when dropped, so an early return or a panic cannot leak it.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// `None` when `count` is already at `max`.
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_counts_from_the_last_stream_to_close() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(a.idle_for(t0 + Duration::from_secs(3)), Some(Duration::from_secs(3)));
        let one = a.begin();
        let two = a.begin();
        assert_eq!(a.idle_for(t0 + Duration::from_secs(5)), None);
        a.end(t0 + Duration::from_secs(7));
        std::mem::forget(one);
        assert_eq!(a.idle_for(t0 + Duration::from_secs(8)), None, "one stream is still open");
        a.end(t0 + Duration::from_secs(9));
        std::mem::forget(two);
        assert_eq!(a.idle_for(t0 + Duration::from_secs(12)), Some(Duration::from_secs(3)));
        // A stream that closes late never moves the idle start backwards.
        let three = a.begin();
        a.end(t0 + Duration::from_secs(4));
        std::mem::forget(three);
        assert_eq!(a.idle_for(t0 + Duration::from_secs(12)), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_dropped_guard_closes_its_stream() {
        let a = Activity::new(Instant::now());
        let b = a.begin();
        assert!(a.idle_for(Instant::now()).is_none());
        drop(b);
        assert!(a.idle_for(Instant::now()).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_resolves_after_the_limit_and_not_while_busy() {
        let a = Activity::new(Instant::now());
        let busy = a.begin();
        let limit = Duration::from_secs(60);
        let start = tokio::time::Instant::now();
        let mut wait = std::pin::pin!(idle(&a, limit, start));
        assert!(tokio::time::timeout(Duration::from_secs(600), wait.as_mut()).await.is_err(), "busy: never idle");
        drop(busy);
        wait.await;
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(660) && took < Duration::from_secs(661), "{took:?}");
        // Counted again from a later start: a full period from there.
        let again = tokio::time::Instant::now();
        idle(&a, limit, again).await;
        assert_eq!(again.elapsed(), limit);
    }
}
