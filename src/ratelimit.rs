//! Per-client rate limits (`routes[].rate_limit`): a token bucket per key
//! (the client's address, or a header's value), written as GCRA, so a key
//! costs one number: the time its bucket is next full.
//!
//! Memory is bounded whatever the keys: at most `max_keys` per route, in
//! shards. A key whose bucket has refilled is indistinguishable from a new
//! one, so a full shard forgets those (a sweep, at most once a second per
//! shard); between sweeps, or when every key is still owed time, the key
//! owed least among a few is evicted (counted). A flood of distinct keys
//! therefore costs a fixed amount of memory and bounded work per request,
//! and can at worst give an evicted key a fresh bucket, never refuse a
//! client that is within its rate.
//!
//! Each replica counts alone (as ingress-nginx's `limit-rps`): N replicas
//! behind a balancer allow up to N times the rate in total.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the limit is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The client's address (`real_ip` applied).
    ClientIp,
    /// A header's value; requests without it are keyed by client address.
    Header(http::HeaderName),
}

/// `routes[].rate_limit` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per `per`, sustained.
    pub requests: u32,
    pub per: Duration,
    /// Requests a key may make at once above the sustained rate.
    pub burst: u32,
    pub key: Key,
    /// Keys remembered per route at most.
    pub max_keys: usize,
}

const SHARDS: usize = 16;
/// A full shard forgets refilled keys at most this often (ns); in between,
/// a new key evicts one of a sample, so no request pays for a whole sweep
/// more than once a second per shard.
const PURGE_EVERY_NS: u64 = 1_000_000_000;

/// One shard: each key's "full again" time, and when it was last swept.
#[derive(Default)]
struct Shard {
    tat: HashMap<u64, u64>,
    purged_ns: u64,
}
/// How many keys a full shard looks at to pick one to evict.
const EVICTION_SAMPLE: usize = 8;

/// A route's buckets. Kept across reloads that leave the limit unchanged.
pub struct Limiter {
    pub spec: RateLimit,
    /// Time between two requests at the sustained rate, ns.
    interval_ns: u64,
    /// How far ahead of now a bucket's "full again" time may run: the burst.
    tolerance_ns: u64,
    origin: Instant,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// Requests refused.
    pub limited: AtomicU64,
    /// Keys forgotten to make room (a flood of distinct keys).
    pub evicted: AtomicU64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Refused; the client may try again after this long.
    No(Duration),
}

impl Limiter {
    pub fn new(spec: RateLimit) -> Self {
        let interval_ns =
            u64::try_from(spec.per.as_nanos() / u128::from(spec.requests.max(1))).unwrap_or(u64::MAX).max(1);
        let tolerance_ns = interval_ns.saturating_mul(u64::from(spec.burst));
        let per_shard = spec.max_keys.div_ceil(SHARDS).max(1);
        Self {
            interval_ns,
            tolerance_ns,
            origin: Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            limited: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            spec,
        }
    }

    /// Keys remembered now (for tests and `/config`).
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.tat.len())).sum()
    }

    /// One request from `key` (a header's value) under `tag`, so that
    /// keys of different kinds never share a bucket.
    pub fn admit_tagged(&self, tag: u8, key: &[u8], now: Instant) -> Admit {
        let mut h = self.hasher.build_hasher();
        h.write_u8(tag);
        h.write(key);
        self.admit_hash(h.finish(), now)
    }

    /// One request from `key` at `now`.
    pub fn admit(&self, key: &[u8], now: Instant) -> Admit {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        self.admit_hash(h.finish(), now)
    }

    fn admit_hash(&self, hash: u64, now: Instant) -> Admit {
        let now_ns = u64::try_from(now.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let tat = shard.tat.get(&hash).copied().unwrap_or(now_ns).max(now_ns);
        let owed = tat - now_ns;
        if owed > self.tolerance_ns {
            drop(shard);
            self.limited.fetch_add(1, Ordering::Relaxed);
            return Admit::No(Duration::from_nanos(owed - self.tolerance_ns));
        }
        let next = tat.saturating_add(self.interval_ns);
        if shard.tat.len() >= self.per_shard && !shard.tat.contains_key(&hash) {
            self.make_room(&mut shard, now_ns);
        }
        shard.tat.insert(hash, next);
        Admit::Yes
    }

    /// A full shard: forget refilled buckets (at most once a second); if
    /// still full, evict the key owed the least time among a few.
    fn make_room(&self, shard: &mut Shard, now_ns: u64) {
        if now_ns.saturating_sub(shard.purged_ns) >= PURGE_EVERY_NS || shard.purged_ns == 0 {
            shard.tat.retain(|_, tat| *tat > now_ns);
            shard.purged_ns = now_ns.max(1);
            if shard.tat.len() < self.per_shard {
                return;
            }
        }
        let victim = shard.tat.iter().take(EVICTION_SAMPLE).min_by_key(|(_, tat)| **tat).map(|(k, _)| *k);
        if let Some(k) = victim {
            shard.tat.remove(&k);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, per: Duration, burst: u32, max_keys: usize) -> Limiter {
        Limiter::new(RateLimit { requests, per, burst, key: Key::ClientIp, max_keys })
    }

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let l = limiter(10, Duration::from_secs(1), 5, 100);
        let t0 = l.origin + Duration::from_secs(1);
        // Burst 5 above the rate: 6 at once (one now, five ahead).
        let at_once = (0..20).filter(|_| l.admit(b"a", t0) == Admit::Yes).count();
        assert_eq!(at_once, 6);
        let Admit::No(wait) = l.admit(b"a", t0) else { panic!("over the burst") };
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one more is allowed, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(b"a", t1), Admit::Yes);
        assert!(matches!(l.admit(b"a", t1), Admit::No(_)));
        // Another key is not affected.
        assert_eq!(l.admit(b"b", t1), Admit::Yes);
        assert_eq!(l.limited.load(Ordering::Relaxed), 16);
    }

    #[test]
    fn over_a_long_run_the_rate_holds() {
        let l = limiter(50, Duration::from_secs(60), 0, 100);
        let mut t = l.origin;
        let mut allowed = 0;
        // One request every 100 ms for ten minutes: 6,000 asked, 50/min allowed.
        for _ in 0..6000 {
            if l.admit(b"k", t) == Admit::Yes {
                allowed += 1;
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(allowed, 500);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_max_keys() {
        let l = limiter(1, Duration::from_secs(1), 0, 1_000);
        let t = l.origin + Duration::from_secs(5);
        for i in 0..100_000u32 {
            assert_eq!(l.admit(&i.to_be_bytes(), t), Admit::Yes, "a new key always gets its first request");
        }
        let cap = 1_000usize.div_ceil(SHARDS) * SHARDS;
        assert!(l.keys() <= cap, "{} keys kept", l.keys());
        assert!(l.evicted.load(Ordering::Relaxed) >= 100_000 - cap as u64);
        // Refilled buckets are forgotten before anything is evicted.
        let later = t + Duration::from_secs(2);
        let before = l.evicted.load(Ordering::Relaxed);
        for i in 200_000..200_300u32 {
            l.admit(&i.to_be_bytes(), later);
        }
        assert_eq!(l.evicted.load(Ordering::Relaxed), before);
    }
}
