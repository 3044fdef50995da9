//! Per (route, version) sliding windows: request and error counts and an HDR
//! latency histogram (µs, 2 significant figures), kept in a ring of time
//! slots. The rollout analysis reads these; /routes shows them.
//!
//! Time is passed in (monotonic `Instant`), never read here, so rotation is
//! unit-tested without sleeping and wall-clock jumps cannot age a window.
//! A slot's histogram is allocated on its first sample, so idle routes cost
//! almost nothing.
//!
//! Every request records into its version's window, so the ring is sharded
//! per worker thread (`shards`): a thread locks only its own ring, and
//! readers (the analysis, /routes) rotate and merge all of them.

use crate::shards::{self, Padded};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Highest latency tracked exactly, µs (larger samples are clamped): 10 minutes.
const MAX_US: u64 = 600_000_000;
const SIGFIG: u8 = 2;

#[derive(Default)]
struct Slot {
    hist: Option<Histogram<u32>>,
    requests: u64,
    errors: u64,
}

impl Slot {
    fn clear(&mut self) {
        if let Some(h) = self.hist.as_mut() {
            h.reset();
        }
        self.requests = 0;
        self.errors = 0;
    }
}

struct Ring {
    slot_len: Duration,
    slots: Vec<Slot>,
    head: usize,
    /// When the head slot began.
    head_start: Instant,
}

impl Ring {
    fn slot_len(window: Duration, slots: usize) -> Duration {
        (window / slots.max(1) as u32).max(Duration::from_millis(1))
    }

    fn new(window: Duration, slots: usize, now: Instant) -> Self {
        let slots = slots.max(1);
        Ring {
            slot_len: Self::slot_len(window, slots),
            slots: (0..slots).map(|_| Slot::default()).collect(),
            head: 0,
            head_start: now,
        }
    }
}

/// A sliding window of `slots` slots covering `window` in total.
pub struct Window {
    /// Shard 0's ring; it also holds the window's length for the others.
    first: Padded<Mutex<Ring>>,
    /// The other shards' rings, made on the first sample from a thread of
    /// theirs: a route that gets no traffic (there may be thousands, on a
    /// 16-core machine) costs one ring, not sixteen.
    rest: OnceLock<Box<[Padded<Mutex<Ring>>]>>,
    shards: usize,
}

/// What a window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    pub error_percent: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl Window {
    pub fn new(window: Duration, slots: usize, now: Instant) -> Self {
        Self::with_shards(window, slots, now, shards::count())
    }

    fn with_shards(window: Duration, slots: usize, now: Instant, n: usize) -> Self {
        Self { first: Padded(Mutex::new(Ring::new(window, slots, now))), rest: OnceLock::new(), shards: n.max(1) }
    }

    /// Shard 0's length and start, for a ring made or checked later.
    fn shape(&self) -> Option<(Duration, usize, Instant)> {
        let f = self.first.lock().ok()?;
        Some((f.slot_len * f.slots.len() as u32, f.slots.len(), f.head_start))
    }

    /// Every ring made so far. A ring whose length differs from shard 0's
    /// (made from the old length while a reload changed it) starts over
    /// with the new one.
    fn each(&self, mut f: impl FnMut(&mut Ring)) {
        if let Ok(mut ring) = self.first.lock() {
            f(&mut ring);
        }
        let Some(rest) = self.rest.get() else { return };
        let shape = self.shape();
        for r in rest.iter() {
            if let Ok(mut ring) = r.lock() {
                if let Some((window, n, start)) = shape
                    && (ring.slots.len() != n || ring.slot_len != Ring::slot_len(window, n))
                {
                    *ring = Ring::new(window, n, start);
                }
                f(&mut ring);
            }
        }
    }

    /// This thread's ring.
    fn mine(&self) -> Option<std::sync::MutexGuard<'_, Ring>> {
        match shards::mine(self.shards) {
            0 => self.first.lock().ok(),
            i => {
                let rest = self.rest.get_or_init(|| {
                    let (window, n, start) = self.shape().unwrap_or((Duration::from_secs(1), 1, Instant::now()));
                    (1..self.shards).map(|_| Padded(Mutex::new(Ring::new(window, n, start)))).collect()
                });
                rest.get(i - 1)?.lock().ok()
            }
        }
    }

    /// Change the window length (a reload changed `analysis.window`). A new
    /// length starts empty; the same length keeps every sample.
    pub fn configure(&self, window: Duration, now: Instant) {
        self.each(|ring| {
            let n = ring.slots.len();
            if ring.slot_len != Ring::slot_len(window, n) {
                *ring = Ring::new(window, n, now);
            }
        });
    }

    /// Drop every sample (a new canary revision, or a resumed rollback).
    pub fn reset(&self, now: Instant) {
        self.each(|ring| {
            ring.slots.iter_mut().for_each(Slot::clear);
            ring.head_start = now;
        });
    }

    /// Length of the window.
    pub fn length(&self) -> Duration {
        self.shape().map_or(Duration::ZERO, |(window, _, _)| window)
    }

    /// Advance the ring so the head slot contains `now`.
    fn rotate(ring: &mut Ring, now: Instant) {
        let n = ring.slots.len();
        let elapsed = now.saturating_duration_since(ring.head_start);
        if elapsed < ring.slot_len {
            return;
        }
        let steps = (elapsed.as_nanos() / ring.slot_len.as_nanos().max(1)) as usize;
        if steps >= n {
            ring.slots.iter_mut().for_each(Slot::clear);
        } else {
            for _ in 0..steps {
                ring.head = (ring.head + 1) % n;
                if let Some(s) = ring.slots.get_mut(ring.head) {
                    s.clear();
                }
            }
        }
        ring.head = if steps >= n { (ring.head + steps) % n } else { ring.head };
        ring.head_start += ring.slot_len * u32::try_from(steps).unwrap_or(u32::MAX);
    }

    pub fn record(&self, now: Instant, latency: Duration, error: bool) {
        let Some(mut ring) = self.mine() else { return };
        Self::rotate(&mut ring, now);
        let head = ring.head;
        let Some(slot) = ring.slots.get_mut(head) else { return };
        slot.requests += 1;
        slot.errors += u64::from(error);
        if slot.hist.is_none() {
            slot.hist = Histogram::new_with_bounds(1, MAX_US, SIGFIG).ok();
        }
        if let Some(h) = slot.hist.as_mut() {
            let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_US).clamp(1, MAX_US);
            h.saturating_record(us);
        }
    }

    /// Count a failed event that has no meaningful latency (an abnormal
    /// WebSocket close): it adds to requests and errors, not to the histogram.
    pub fn record_error_only(&self, now: Instant) {
        let Some(mut ring) = self.mine() else { return };
        Self::rotate(&mut ring, now);
        let head = ring.head;
        if let Some(slot) = ring.slots.get_mut(head) {
            slot.requests += 1;
            slot.errors += 1;
        }
    }

    /// Every ring's samples merged: requests, errors and the histogram.
    fn merged(&self, now: Instant) -> (u64, u64, Option<Histogram<u32>>) {
        let mut merged: Option<Histogram<u32>> = None;
        let (mut requests, mut errors) = (0, 0);
        self.each(|ring| {
            Self::rotate(ring, now);
            for slot in &ring.slots {
                requests += slot.requests;
                errors += slot.errors;
                if let Some(h) = &slot.hist {
                    match merged.as_mut() {
                        Some(m) => {
                            let _ = m.add(h);
                        }
                        None => merged = Some(h.clone()),
                    }
                }
            }
        });
        (requests, errors, merged)
    }

    pub fn stats(&self, now: Instant) -> WindowStats {
        let (requests, errors, merged) = self.merged(now);
        let q = |p: f64| merged.as_ref().map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0);
        WindowStats {
            requests,
            errors,
            error_percent: if requests == 0 { 0.0 } else { errors as f64 * 100.0 / requests as f64 },
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
        }
    }

    /// The latency (µs) at each of `levels`, and how many requests the
    /// window holds; None while it has no timed sample.
    pub fn quantiles_us<const N: usize>(&self, now: Instant, levels: &[f64; N]) -> (u64, Option<[u64; N]>) {
        let (requests, _, merged) = self.merged(now);
        (requests, merged.map(|h| levels.map(|p| h.value_at_quantile(p))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn samples_recorded_on_many_threads_merge_into_one_window() {
        let t0 = Instant::now();
        let sharded = std::sync::Arc::new(Window::with_shards(Duration::from_secs(60), 6, t0, 4));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let w = std::sync::Arc::clone(&sharded);
                std::thread::spawn(move || {
                    for i in 0..250u64 {
                        w.record(t0 + ms(i), ms(10 + t * 5), i % 50 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let one = Window::with_shards(Duration::from_secs(60), 6, t0, 1);
        for t in 0..8u64 {
            for i in 0..250u64 {
                one.record(t0 + ms(i), ms(10 + t * 5), i % 50 == 0);
            }
        }
        let at = t0 + ms(300);
        assert_eq!(sharded.stats(at).requests, 2000);
        assert_eq!(sharded.stats(at).errors, 40);
        assert_eq!(sharded.stats(at), one.stats(at));
        assert!(sharded.rest.get().is_some());
        let idle = Window::with_shards(Duration::from_secs(60), 6, t0, 4);
        assert!(idle.stats(at).requests == 0 && idle.rest.get().is_none(), "other shards made on first use");
        // A new length reaches every shard.
        sharded.configure(Duration::from_secs(30), at);
        assert_eq!(sharded.length(), Duration::from_secs(30));
        assert_eq!(sharded.stats(at).requests, 0, "a new length starts empty on every shard");
        // Ageing and reset reach every shard.
        assert_eq!(sharded.stats(t0 + Duration::from_secs(61)).requests, 0);
        sharded.record(t0 + Duration::from_secs(62), ms(1), false);
        sharded.reset(t0 + Duration::from_secs(62));
        assert_eq!(sharded.stats(t0 + Duration::from_secs(62)).requests, 0);
    }

    #[test]
    fn counts_errors_and_quantiles_within_precision() {
        let t0 = Instant::now();
        let w = Window::new(Duration::from_secs(60), 6, t0);
        for i in 0..1000u64 {
            // 97 % at 10 ms, 3 % at 60 ms and errors.
            let slow = i % 100 < 3;
            w.record(t0 + ms(i), if slow { ms(60) } else { ms(10) }, slow);
        }
        let s = w.stats(t0 + ms(1000));
        assert_eq!((s.requests, s.errors), (1000, 30));
        assert!((s.error_percent - 3.0).abs() < 1e-9);
        assert!((s.p50_ms - 10.0).abs() <= 10.0 * 0.01, "{s:?}");
        assert!((s.p99_ms - 60.0).abs() <= 60.0 * 0.01, "{s:?}");
    }

    #[test]
    fn old_slots_fall_out_of_the_window() {
        let t0 = Instant::now();
        let w = Window::new(Duration::from_secs(60), 6, t0);
        w.record(t0, ms(5), true);
        w.record(t0 + Duration::from_secs(30), ms(5), false);
        assert_eq!(w.stats(t0 + Duration::from_secs(59)).requests, 2);
        // The first sample's slot [0,10) s is gone once the window moved past 60 s.
        let s = w.stats(t0 + Duration::from_secs(65));
        assert_eq!((s.requests, s.errors), (1, 0));
        assert_eq!(w.stats(t0 + Duration::from_secs(200)).requests, 0, "long idle clears everything");
        w.record(t0 + Duration::from_secs(201), ms(5), false);
        assert_eq!(w.stats(t0 + Duration::from_secs(202)).requests, 1, "recording works after a long gap");
    }

    #[test]
    fn reset_and_reconfigure() {
        let t0 = Instant::now();
        let w = Window::new(Duration::from_secs(60), 6, t0);
        w.record(t0, ms(5), true);
        w.configure(Duration::from_secs(60), t0);
        assert_eq!(w.stats(t0).requests, 1, "same length keeps samples");
        w.configure(Duration::from_secs(12), t0);
        assert_eq!((w.stats(t0).requests, w.length()), (0, Duration::from_secs(12)));
        w.record(t0, ms(5), true);
        w.reset(t0);
        assert_eq!(w.stats(t0).requests, 0);
    }

    #[test]
    fn an_empty_window_reports_zeros() {
        let t0 = Instant::now();
        let w = Window::new(Duration::from_secs(10), 5, t0);
        assert_eq!(w.stats(t0), WindowStats::default());
    }
}
