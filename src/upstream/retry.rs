//! Retries (design §13): what one request has tried, and the budget that
//! keeps a failing version from multiplying its load.
//!
//! The budget is counted per upstream in tumbling 10 s windows: a retry is
//! allowed while the window's retries stay under `budget` × its first
//! attempts, plus a floor of `FLOOR` per window so a quiet upstream can still
//! retry. It costs nothing per request: first attempts are read from the
//! endpoints' own request counters when a retry asks.

use super::pool::Endpoint;
use crate::labels::ErrorKind;
use std::sync::Arc;
use std::sync::Mutex;

/// Largest request body kept to be sent again: an idempotent request with a
/// declared body up to this size is retried like a bodiless one (the copy
/// costs a reference count per chunk while it streams).
pub const REPLAY_MAX_BODY: u64 = 64 * 1024;

const WINDOW_MS: u64 = 10_000;
/// Retries always allowed per window.
const FLOOR: u64 = 10;

/// Endpoints one request may try: the first attempt and at most 10 retries.
const MAX_TRIED: usize = 11;

/// Which endpoints a request has tried, by identity: inline, no allocation
/// and no reference counting on the request path.
#[derive(Default)]
pub struct TriedSet {
    ids: [usize; MAX_TRIED],
    len: usize,
}

impl TriedSet {
    pub fn push(&mut self, ep: &Arc<Endpoint>) {
        if let Some(slot) = self.ids.get_mut(self.len) {
            *slot = Arc::as_ptr(ep) as usize;
            self.len += 1;
        }
    }

    pub fn contains(&self, ep: &Arc<Endpoint>) -> bool {
        let id = Arc::as_ptr(ep) as usize;
        self.ids.iter().take(self.len).any(|&t| t == id)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One request's attempts so far.
#[derive(Default)]
pub struct Tried {
    /// Endpoints tried (a retry goes elsewhere). Only compared, never
    /// dereferenced: the set keeps the endpoints alive meanwhile.
    pub endpoints: TriedSet,
    /// Failed attempts that were retried, oldest first: each is evidence
    /// against the version (the caller records and clears them). None: a
    /// response whose status is listed in `retry.on`.
    pub failed: Vec<Option<ErrorKind>>,
    /// Retries made.
    pub retries: u32,
}

impl Tried {
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Default)]
pub struct Budget {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    start_ms: u64,
    /// Requests through the upstream (attempts, retries included) and retries
    /// made, when the window started.
    requests_at_start: u64,
    retries_at_start: u64,
    retries: u64,
}

impl Budget {
    /// May one more retry go out? `requests`: attempts so far over the
    /// upstream's life; `percent`: the budget. Counts the retry if so.
    pub fn allow(&self, now_ms: u64, requests: u64, percent: u32) -> bool {
        let Ok(mut w) = self.window.lock() else { return false };
        if now_ms.saturating_sub(w.start_ms) >= WINDOW_MS || w.start_ms == 0 {
            let retries = w.retries;
            *w = Window { start_ms: now_ms.max(1), requests_at_start: requests, retries_at_start: retries, retries };
        }
        let in_window = w.retries - w.retries_at_start;
        let firsts = requests.saturating_sub(w.requests_at_start).saturating_sub(in_window);
        if in_window < FLOOR + firsts * u64::from(percent) / 100 {
            w.retries += 1;
            true
        } else {
            false
        }
    }
}

/// Safe to send twice (RFC 9110 §9.2.2).
pub fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_then_the_share_of_first_attempts() {
        let b = Budget::default();
        // Attempts as the endpoints count them: first attempts and retries.
        let mut attempts = 0;
        let retry = |now: u64, attempts: &mut u64| {
            let ok = b.allow(now, *attempts, 20);
            *attempts += u64::from(ok);
            ok
        };
        // No traffic yet: the floor only.
        let allowed = (0..50).filter(|_| retry(1, &mut attempts)).count();
        assert_eq!(allowed as u64, FLOOR);
        // 100 first attempts later in the same window: 20 % of them more.
        attempts += 100;
        let allowed = (0..50).filter(|_| retry(2, &mut attempts)).count();
        assert_eq!(allowed, 20);
        // A new window starts afresh.
        let allowed = (0..50).filter(|_| retry(1 + WINDOW_MS, &mut attempts)).count();
        assert_eq!(allowed as u64, FLOOR);
    }

    #[test]
    fn a_zero_budget_still_has_its_floor_and_no_more() {
        let b = Budget::default();
        let allowed = (0..1000).filter(|i| b.allow(5, 1000 + i, 0)).count();
        assert_eq!(allowed as u64, FLOOR);
    }
}
