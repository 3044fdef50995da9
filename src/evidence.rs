//! The evidence recorder: turns each finished request, WebSocket session
//! and ping round trip into counts for the judge (`analysis::counts`).
//!
//! It lives with a route's metric handles (so it survives reloads) and does
//! only bounded work per request under its worker thread's own lock (the
//! counts are sharded per thread and merged when taken): classify against the
//! frozen thresholds, find the stratum, add to counters, and on routes with
//! sticky keys consult the counted-user filters. The controller takes one
//! `Interval` per analysis interval and installs the next thresholds in the
//! same step, so no request is counted against thresholds chosen after it.
//!
//! Counted-user filters: per scope (since the revision started, this epoch)
//! a Bloom filter of (user, event) pairs answers "has this user already
//! counted?". A false positive skips a unit regardless of its version, which
//! costs a little power and never validity. 2^21 bits (256 KiB) per scope,
//! four probes: under 1 % false positives up to ~150,000 entries. They are
//! saved next to the state file with each verdict of their route
//! (`rollout::store`), so a restart does not count a user twice.

use crate::analysis::{Cell, Event, Frozen, Interval, Stratum, StratumCounts};
use crate::routing::{BucketSource, Decision, Reason, Route, Version};
use crate::shards::{self, Padded};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

const FILTER_BITS: usize = 1 << 21;
const FILTER_WORDS: usize = FILTER_BITS / 64;
/// Filter entry for "this user was seen" (n), next to one per event (x).
const SEEN: u64 = 0xff;
/// Filter entry for "this user's rank was counted": test R scores a user's
/// first timed request in a scope, once (their later requests share its
/// version, so they are not new evidence).
const RANKED: u64 = 0xfe;

/// Who a unit of evidence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub stratum: Stratum,
    /// Canary weight the unit was routed with, basis points.
    pub weight_bp: u16,
    /// The user's key hash (per-user strata only).
    pub user: u64,
}

impl Unit {
    /// The unit a routing decision makes, if it is evidence: only traffic
    /// the bucket randomised (weight or a segment's weight strictly between
    /// 0 and 100 %) can be compared; overrides, kill and rollback cannot.
    pub fn of(route: &Route, d: &Decision) -> Option<Unit> {
        let (segment, weight_bp) = match d.reason {
            Reason::Weight => (None, route.overlay.weight_bp),
            Reason::Segment(i) => (Some(u16::try_from(i).ok()?), route.segments.get(i)?.weight_bp),
            _ => return None,
        };
        if weight_bp == 0 || weight_bp >= crate::routing::BUCKETS {
            return None;
        }
        let b = d.bucket?;
        let per_user = matches!(b.source, BucketSource::Key(_) | BucketSource::Cookie);
        Some(Unit { stratum: Stratum { segment, per_user }, weight_bp, user: if per_user { b.user } else { 0 } })
    }
}

/// A Bloom filter every worker writes without a lock: a probe is one
/// `fetch_or`. Two workers counting the same new user at the same instant
/// may both see it as new (it then counts twice, for the version it was
/// routed to); that race needs two of one player's requests to finish
/// together, on two threads, on that player's first event.
struct Filter {
    words: Box<[AtomicU64]>,
}

fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: probes independent of the bucket (h % 10000).
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Filter {
    fn new() -> Self {
        Self { words: (0..FILTER_WORDS).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Insert; true if the entry was not there before.
    fn insert(&self, user: u64, tag: u64, segment: u64) -> bool {
        let a = mix(user ^ mix(tag.wrapping_add(segment << 8).wrapping_add(0x9e37_79b9_7f4a_7c15)));
        let b = mix(a);
        let mut fresh = false;
        for h in [a, a >> 32, b, b >> 32] {
            let bit = (h as usize) & (FILTER_BITS - 1);
            let (w, m) = (bit / 64, 1u64 << (bit % 64));
            if let Some(word) = self.words.get(w) {
                fresh |= word.fetch_or(m, Ordering::Relaxed) & m == 0;
            }
        }
        fresh
    }

    fn clear(&self) {
        self.words.iter().for_each(|w| w.store(0, Ordering::Relaxed));
    }
}

/// One shard's counts, and the thresholds it classifies with.
#[derive(Default)]
struct Counts {
    frozen: Frozen,
    strata: Vec<StratumCounts>,
    requests: Cell,
    /// Since this recorder began (or the revision changed): never taken,
    /// exported as counters so a fleet can sum them (`crate::fleet`).
    totals: Vec<StratumCounts>,
    total_requests: Cell,
}

fn stratum_in(list: &mut Vec<StratumCounts>, s: Stratum) -> Option<&mut StratumCounts> {
    let i = match list.iter().position(|c| c.stratum == Some(s)) {
        Some(i) => i,
        None => {
            list.push(StratumCounts { stratum: Some(s), ..StratumCounts::default() });
            list.len() - 1
        }
    };
    list.get_mut(i)
}

/// Add `from` into `into`, stratum by stratum.
fn merge(into: &mut Vec<StratumCounts>, from: &[StratumCounts]) {
    for f in from {
        let Some(s) = f.stratum else { continue };
        if let Some(sc) = stratum_in(into, s) {
            if f.weight_bp > 0 {
                let (lo, hi) = (if f.weight_min_bp == 0 { f.weight_bp } else { f.weight_min_bp }, f.weight_bp);
                sc.saw_weight(lo);
                sc.saw_weight(hi);
            }
            sc.revision.add(&f.revision);
            sc.epoch.add(&f.epoch);
        }
    }
}

impl Counts {
    /// `filters`: [since the revision, this epoch], for per-user units;
    /// `rank`: the request's rank bin (test R), if it has one. Counts are
    /// bumped in place (a cell is 400 bytes: no temporaries).
    fn add(
        &mut self,
        filters: Option<&[Filter; 2]>,
        unit: &Unit,
        version: Version,
        classes: (u16, u16),
        rank: Option<usize>,
    ) {
        let v = usize::from(version == Version::Canary);
        bump(&mut self.requests, v, classes, rank);
        bump(&mut self.total_requests, v, classes, rank);
        // What this unit adds per scope [revision, epoch]: per request all
        // of it; per user only what is new to that scope's filter.
        let mut scope = [(classes, rank); 2];
        if let Some(filters) = filters {
            let seg = unit.stratum.segment.map_or(0, |s| u64::from(s) + 1);
            for (add, f) in scope.iter_mut().zip(filters) {
                let (eligible, bad) = classes;
                let first = f.insert(unit.user, SEEN, seg);
                let mut new_bad = 0u16;
                for e in Event::ALL {
                    let bit = 1u16 << e.idx();
                    if eligible & bad & bit != 0 && f.insert(unit.user, e.idx() as u64, seg) {
                        new_bad |= bit;
                    }
                }
                let rank = rank.filter(|_| f.insert(unit.user, RANKED, seg));
                *add = ((if first { eligible } else { 0 }, new_bad), rank);
            }
        }
        for list in [&mut self.strata, &mut self.totals] {
            if let Some(sc) = stratum_in(list, unit.stratum) {
                sc.saw_weight(unit.weight_bp);
                bump(&mut sc.revision, v, scope[0].0, scope[0].1);
                bump(&mut sc.epoch, v, scope[1].0, scope[1].1);
            }
        }
    }
}

/// Count one unit of version `v` in `c`: units for the `units` events, bad
/// units for the `bad` ones (apart: a user counted before can have their
/// first bad event now), and its rank bin.
fn bump(c: &mut Cell, v: usize, (units, bad): (u16, u16), rank: Option<usize>) {
    for e in Event::ALL {
        let bit = 1u16 << e.idx();
        if let (Some(n), Some(x)) = (c.n.get_mut(e.idx()), c.x.get_mut(e.idx())) {
            n[v] += u64::from(units & bit != 0);
            x[v] += u64::from(bad & bit != 0);
        }
    }
    if let Some(b) = rank.and_then(|b| c.rank.get_mut(b)) {
        b[v] += 1;
    }
}

/// One route's recorder: counts sharded per worker thread (a request takes
/// only its own thread's lock), counted-user filters shared and lock-free.
/// Every shard holds the same thresholds; the controller's calls walk all
/// shards, so each request is classified by the thresholds of the
/// interval it is counted in.
pub struct Evidence {
    /// Made on first use: a route without analysis never records, and a
    /// config may have thousands of routes.
    shards: OnceLock<Box<[Padded<Mutex<Counts>>]>>,
    /// How many shards to make.
    n: usize,
    /// [since the revision started, this epoch]; allocated on first use.
    filters: OnceLock<[Filter; 2]>,
    /// The filters hold something worth saving (a sticky unit since the
    /// last reset, or filters restored from disk).
    sticky: AtomicBool,
}

impl Default for Evidence {
    fn default() -> Self {
        Self::with_shards(shards::count())
    }
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Counters only: a panic elsewhere leaves them usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Evidence {
    fn with_shards(n: usize) -> Self {
        Self { shards: OnceLock::new(), n: n.max(1), filters: OnceLock::new(), sticky: AtomicBool::new(false) }
    }

    fn shards(&self) -> &[Padded<Mutex<Counts>>] {
        self.shards.get_or_init(|| (0..self.n).map(|_| Padded(Mutex::new(Counts::default()))).collect())
    }

    /// This thread's shard.
    fn mine(&self) -> Option<MutexGuard<'_, Counts>> {
        let all = self.shards();
        all.get(shards::mine(all.len())).map(|s| lock(&s.0))
    }

    /// Every shard in turn (made first if need be).
    fn each(&self, mut f: impl FnMut(&mut Counts)) {
        for s in self.shards() {
            f(&mut lock(&s.0));
        }
    }

    /// Every shard there is, without making them.
    fn each_made(&self, mut f: impl FnMut(&Counts)) {
        for s in self.shards.get().into_iter().flatten() {
            f(&lock(&s.0));
        }
    }

    fn filters_for(&self, unit: &Unit) -> Option<&[Filter; 2]> {
        if !unit.stratum.per_user {
            return None;
        }
        if !self.sticky.load(Ordering::Relaxed) {
            self.sticky.store(true, Ordering::Relaxed);
        }
        Some(self.filters.get_or_init(|| [Filter::new(), Filter::new()]))
    }

    fn clear_filters(&self) {
        if let Some(f) = self.filters.get() {
            f.iter().for_each(Filter::clear);
        }
        self.sticky.store(false, Ordering::Relaxed);
    }

    /// A finished request (or a WebSocket session's end, with no latency).
    pub fn record(&self, unit: &Unit, version: Version, error: bool, latency: Option<Duration>) {
        let filters = self.filters_for(unit);
        let Some(mut c) = self.mine() else { return };
        let us = latency.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        let canary = version == Version::Canary;
        let classes = c.frozen.classify_request(error, us);
        let rank = c.frozen.rank_bin(canary, us);
        c.add(filters, unit, version, classes, rank);
    }

    /// One ping round trip of a WebSocket session.
    pub fn record_rtt(&self, unit: &Unit, version: Version, rtt: Duration) {
        let filters = self.filters_for(unit);
        let Some(mut c) = self.mine() else { return };
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let (eligible, bad) = c.frozen.classify_rtt(version == Version::Canary, us);
        if eligible != 0 {
            c.add(filters, unit, version, (eligible, bad), None);
        }
    }

    /// The thresholds in force now.
    pub fn frozen(&self) -> Frozen {
        self.shards.get().and_then(|all| all.first()).map(|s| lock(&s.0).frozen).unwrap_or_default()
    }

    /// Classify with `frozen` from now on (restoring saved lines at start).
    pub fn set_frozen(&self, frozen: Frozen) {
        self.each(|c| c.frozen = frozen);
    }

    /// End the interval: return its counts and install `next` thresholds.
    pub fn take(&self, next: Frozen) -> Interval {
        let mut iv = Interval { frozen: self.frozen(), user_multiplicity: 0, ..Interval::default() };
        self.each(|c| {
            iv.frozen = std::mem::replace(&mut c.frozen, next);
            merge(&mut iv.strata, &std::mem::take(&mut c.strata));
            iv.requests.add(&std::mem::take(&mut c.requests));
        });
        iv.strata.sort_by_key(|s| s.stratum);
        iv
    }

    /// A new epoch begins now: forget who counted in the old one, and drop
    /// the epoch counts gathered since the last `take` (they were deduped
    /// against the old epoch). `frozen`: thresholds to use from now on
    /// (a new step starts its latency warm-up).
    pub fn new_epoch(&self, frozen: Option<Frozen>) {
        if let Some(f) = self.filters.get().and_then(|f| f.get(1)) {
            f.clear();
        }
        self.each(|c| {
            for s in &mut c.strata {
                s.epoch = Cell::default();
            }
            if let Some(f) = frozen {
                c.frozen = f;
            }
        });
    }

    /// Start over (a new canary revision, or a resumed rollback).
    pub fn reset(&self, frozen: Frozen) {
        self.clear_filters();
        self.each(|c| *c = Counts { frozen, ..Counts::default() });
    }

    /// Forget counted users and the interval's counts (a resumed canary in
    /// fleet mode) but keep the exported totals: counters never go down.
    pub fn forget_users(&self, frozen: Frozen) {
        self.clear_filters();
        self.each(|c| {
            let totals = std::mem::take(&mut c.totals);
            *c = Counts { frozen, totals, total_requests: c.total_requests, ..Counts::default() };
        });
    }

    /// Everything counted since the recorder began: per stratum, and the
    /// request-level cell.
    pub fn totals(&self) -> (Vec<StratumCounts>, Cell) {
        let (mut strata, mut requests) = (Vec::new(), Cell::default());
        self.each_made(|c| {
            merge(&mut strata, &c.totals);
            requests.add(&c.total_requests);
        });
        strata.sort_by_key(|s| s.stratum);
        (strata, requests)
    }

    /// The counted-user filters as bytes, for `state_dir` (None: this route
    /// has seen no sticky user).
    pub fn export_filters(&self) -> Option<Vec<u8>> {
        if !self.sticky.load(Ordering::Relaxed) {
            return None;
        }
        let f = self.filters.get()?;
        let mut bytes = Vec::with_capacity(FILTER_WORDS * 16);
        for w in f.iter().flat_map(|f| f.words.iter()) {
            bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        Some(bytes)
    }

    /// Restore filters saved by `export_filters`; false (and nothing
    /// changed) when the bytes are not such filters.
    pub fn import_filters(&self, bytes: &[u8]) -> bool {
        if bytes.len() != FILTER_WORDS * 16 {
            return false;
        }
        let filters = self.filters.get_or_init(|| [Filter::new(), Filter::new()]);
        let words = filters.iter().flat_map(|f| f.words.iter());
        for (w, c) in words.zip(bytes.chunks_exact(8)) {
            w.store(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]), Ordering::Relaxed);
        }
        self.sticky.store(true, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{CANARY, STABLE};

    /// Stable's lines at the rank levels p10 … p99.9, µs.
    const LINES: [u64; crate::analysis::rank::EDGES] =
        [1_000, 2_000, 3_000, 4_000, 4_500, 5_000, 6_000, 8_000, 12_000, 20_000, 30_000, 40_000, 60_000, 80_000];

    fn per_request() -> Unit {
        Unit { stratum: Stratum { segment: None, per_user: false }, weight_bp: 1000, user: 0 }
    }

    fn user(id: u64) -> Unit {
        Unit { stratum: Stratum { segment: None, per_user: true }, weight_bp: 1000, user: id }
    }

    #[test]
    fn requests_count_per_request_and_thresholds_apply_from_the_next_interval() {
        let ev = Evidence::default();
        ev.record(&per_request(), Version::Canary, true, Some(Duration::from_millis(50)));
        let iv = ev.take(Frozen { rank_us: Some(LINES), ..Frozen::default() });
        assert_eq!(iv.requests.n(Event::Error, CANARY), 1);
        assert_eq!(iv.requests.ranked(CANARY), 0, "no lines in the first interval");
        ev.record(&per_request(), Version::Stable, false, Some(Duration::from_millis(30)));
        ev.record(&per_request(), Version::Canary, false, Some(Duration::from_micros(5_500)));
        let iv = ev.take(Frozen::default());
        let c = &iv.strata[0].revision;
        assert_eq!(c.rank[10][STABLE], 1, "30 ms: above stable's p95 (20 ms), not its p98");
        assert_eq!(c.rank[6][CANARY], 1, "5.5 ms: above p60 (5 ms), not p70");
        assert_eq!(iv.frozen.rank_us, Some(LINES), "the interval says what it used");
    }

    #[test]
    fn a_user_counts_once_per_event_per_scope() {
        let ev = Evidence::default();
        for _ in 0..50 {
            ev.record(&user(7), Version::Canary, true, None);
        }
        ev.record(&user(8), Version::Canary, false, None);
        let iv = ev.take(Frozen::default());
        let c = &iv.strata[0].revision;
        assert_eq!((c.n(Event::Error, CANARY), c.x(Event::Error, CANARY)), (2, 1));
        assert_eq!(iv.requests.x(Event::Error, CANARY), 50, "request-level counts keep every request");
        assert_eq!(iv.strata[0].weight_bp, 1000);
        // A user seen before whose first error comes now counts as bad now.
        ev.record(&user(8), Version::Canary, true, None);
        let c = ev.take(Frozen::default()).strata[0].revision;
        assert_eq!((c.n(Event::Error, CANARY), c.x(Event::Error, CANARY)), (0, 1), "no new unit, one new bad one");
        // Next interval: user 7 already counted in both scopes.
        ev.record(&user(7), Version::Canary, true, None);
        let iv = ev.take(Frozen::default());
        assert_eq!(iv.strata[0].revision.x(Event::Error, CANARY), 0);
        // A new epoch: counted again there, not since the revision started.
        ev.new_epoch(None);
        ev.record(&user(7), Version::Canary, true, None);
        let iv = ev.take(Frozen::default());
        assert_eq!((iv.strata[0].revision.x(Event::Error, CANARY), iv.strata[0].epoch.x(Event::Error, CANARY)), (0, 1));
    }

    #[test]
    fn a_user_gives_one_rank_per_scope_and_weights_are_a_range() {
        let ev = Evidence::default();
        ev.set_frozen(Frozen { rank_us: Some(LINES), ..Frozen::default() });
        for ms in [1, 50, 90, 90] {
            ev.record(&user(7), Version::Canary, false, Some(Duration::from_millis(ms)));
        }
        let stepped = Unit { weight_bp: 2000, ..user(8) };
        ev.record(&stepped, Version::Stable, false, Some(Duration::from_millis(90)));
        let iv = ev.take(Frozen { rank_us: Some(LINES), ..Frozen::default() });
        let sc = &iv.strata[0];
        assert_eq!(sc.revision.ranked(CANARY), 1, "the first timed request only");
        assert_eq!(sc.revision.rank[0][CANARY], 1, "1 ms: below p10");
        assert_eq!((sc.epoch.ranked(CANARY), sc.epoch.ranked(STABLE)), (1, 1));
        assert_eq!(iv.requests.ranked(CANARY), 4, "request-level counts keep every request");
        assert_eq!(sc.weights(), (0.1, 0.2), "units routed at 10 % and at 20 %");
        ev.new_epoch(None);
        ev.record(&user(7), Version::Canary, false, Some(Duration::from_millis(90)));
        let sc = ev.take(Frozen::default()).strata[0];
        assert_eq!(
            (sc.revision.ranked(CANARY), sc.epoch.rank[14][CANARY]),
            (0, 1),
            "counted again in the new epoch only"
        );
    }

    #[test]
    fn filters_survive_export_and_import() {
        let ev = Evidence::default();
        ev.record(&user(7), Version::Stable, true, None);
        let saved = ev.export_filters().unwrap();
        let again = Evidence::default();
        assert!(again.import_filters(&saved));
        again.record(&user(7), Version::Stable, true, None);
        assert_eq!(again.take(Frozen::default()).strata[0].revision.x(Event::Error, STABLE), 0);
        assert!(!again.import_filters(b"too short"));
        assert!(Evidence::default().export_filters().is_none());
    }

    #[test]
    fn only_randomised_traffic_is_evidence_and_segments_are_their_own_strata() {
        let text = "listen: [{address: \"127.0.0.1:0\"}]\nupstreams:\n  a: {endpoints: [\"127.0.0.1:1\"]}\n\
            routes:\n  - name: r\n    stable: {upstream: a}\n    canary: {upstream: a}\n    weight: 10\n\
            \x20   sticky: {keys: [\"header:x-player-id\"]}\n    override: {header: x-force}\n\
            \x20   segments:\n      - {name: staff, match: {header: {x-staff: \"1\"}}, weight: 100}\n\
            \x20     - {name: se, match: {header: {x-market: SE}}, weight: 50}\n    analysis: {}\n";
        let snap = crate::config::parse(text.as_bytes(), std::path::Path::new("t.yaml")).unwrap();
        let route = &snap.table.routes[0];
        let unit = |headers: &[(&'static str, &'static str)], draw: u16| {
            let mut h = http::HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, http::HeaderValue::from_static(v));
            }
            let facts = crate::routing::Facts {
                host: "x",
                path: "/",
                query: None,
                headers: &h,
                client_cert: None,
                method: &http::Method::GET,
                https: false,
            };
            let d = crate::routing::decide(&snap.table, &facts, draw).unwrap();
            Unit::of(route, &d)
        };
        let anon = unit(&[], 42).unwrap();
        assert_eq!((anon.stratum, anon.weight_bp, anon.user), (Stratum { segment: None, per_user: false }, 1000, 0));
        let player = unit(&[("x-player-id", "p1")], 42).unwrap();
        assert!(player.stratum.per_user && player.user != 0);
        let se = unit(&[("x-market", "SE"), ("x-player-id", "p1")], 42).unwrap();
        assert_eq!((se.stratum.segment, se.weight_bp), (Some(1), 5000));
        assert_eq!(unit(&[("x-staff", "1")], 42), None, "a 100 % segment has no stable to compare with");
        assert_eq!(unit(&[("x-force", "canary")], 42), None, "forced traffic is not evidence");
    }

    #[test]
    fn shards_add_up_to_what_one_recorder_counts_and_a_user_counts_once_across_threads() {
        let ev = Evidence::with_shards(4);
        let one = Evidence::with_shards(1);
        assert!(ev.shards.get().is_none() && ev.totals() == (Vec::new(), Cell::default()), "made on first use");
        let seg = |i: u64| Stratum { segment: i.is_multiple_of(3).then_some(1), per_user: i.is_multiple_of(2) };
        let unit_of =
            |i: u64| Unit { stratum: seg(i), weight_bp: 1000, user: if i.is_multiple_of(2) { i % 50 } else { 0 } };
        let record = |ev: &Evidence, t: u64, i: u64| {
            let v = if (i + t).is_multiple_of(5) { Version::Canary } else { Version::Stable };
            ev.record(&unit_of(i), v, (i * 7 + t).is_multiple_of(11), Some(Duration::from_millis(i % 40)));
        };
        // Threads one after another, so the per-user dedup race cannot
        // happen; each thread lands on its own shard.
        for t in 0..8u64 {
            std::thread::scope(|sc| sc.spawn(|| (0..500).for_each(|i| record(&ev, t, i))).join().unwrap());
            (0..500).for_each(|i| record(&one, t, i));
        }
        let per_shard: Vec<u64> =
            ev.shards().iter().map(|s| lock(&s.0).total_requests.n(Event::Error, STABLE)).collect();
        assert!(per_shard.iter().filter(|&&n| n > 0).count() > 1, "one shard took everything: {per_shard:?}");
        let (a, b) = (ev.take(Frozen::default()), one.take(Frozen::default()));
        assert_eq!(a.requests, b.requests);
        assert_eq!(a.strata, b.strata);
        assert_eq!(ev.totals(), one.totals());
        // 25 users (even ids below 50), seen from every thread in two strata
        // (segment or none): each counts once per stratum.
        let users = a.strata.iter().filter(|s| s.stratum.is_some_and(|s| s.per_user));
        assert_eq!(
            users.map(|s| s.revision.n(Event::Error, CANARY) + s.revision.n(Event::Error, STABLE)).sum::<u64>(),
            50
        );
        // The controller's calls reach every shard.
        ev.new_epoch(Some(Frozen { rank_us: Some(LINES), ..Frozen::default() }));
        assert!(ev.shards().iter().all(|s| lock(&s.0).frozen.rank_us == Some(LINES)));
        ev.reset(Frozen::default());
        assert_eq!(ev.totals(), (Vec::new(), Cell::default()));
        assert!(ev.export_filters().is_none());
    }

    #[test]
    fn the_filter_rarely_mistakes_new_users_for_counted_ones() {
        let f = Filter::new();
        for u in 0..100_000u64 {
            f.insert(mix(u), 1, 0);
        }
        let false_pos = (100_000..110_000u64).filter(|u| !f.insert(mix(*u), 1, 0)).count();
        assert!(false_pos < 100, "{false_pos} of 10,000 new users taken as counted");
    }
}
