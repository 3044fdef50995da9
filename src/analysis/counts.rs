//! What the judge consumes: per-interval counts of units and bad units, per
//! kind of bad event, per version, per evidence stratum; and the thresholds
//! that define "bad", frozen before the interval began.
//!
//! The judge does not care where counts come from: this replica's recorder
//! (`crate::evidence`) or a fleet-wide sum. Counts add up.

use super::rank::{self, Bins, EDGES, LEVELS};
use serde::{Deserialize, Serialize};

/// Kinds of bad event. Each has its own units (`n`) and bad units (`x`):
/// round-trip events count ping samples. Latency against stable is not an
/// event but a rank (`Cell::rank`, test R).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An error (design §6): 5xx, proxy-made 502/503/504, truncation, an
    /// abnormal WebSocket close caused by the upstream.
    Error,
    /// WebSocket ping round trip above stable's frozen p95 (× tolerance).
    Rtt95,
    /// Latency above the absolute `max_p95` (same line for both versions).
    Slo95,
    /// Latency above `max_p99`.
    Slo99,
    /// Round trip above `max_ws_rtt_p95`.
    SloRtt,
}

pub const EVENTS: usize = 5;

impl Event {
    pub const ALL: [Event; EVENTS] = [Event::Error, Event::Rtt95, Event::Slo95, Event::Slo99, Event::SloRtt];

    pub const fn idx(self) -> usize {
        self as usize
    }

    /// Label value in the exported evidence counters.
    pub fn label(self) -> &'static str {
        match self {
            Event::Error => "error",
            Event::Rtt95 => "rtt_over_p95",
            Event::Slo95 => "over_max_p95",
            Event::Slo99 => "over_max_p99",
            Event::SloRtt => "rtt_over_max",
        }
    }

    pub fn from_label(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.label() == s)
    }

    /// Round-trip samples rather than requests.
    pub const fn is_rtt(self) -> bool {
        matches!(self, Event::Rtt95 | Event::SloRtt)
    }
}

/// Index of a version in count arrays.
pub const STABLE: usize = 0;
pub const CANARY: usize = 1;

/// Units and bad units per event kind and version (`[event][version]`),
/// and timed units per rank bin and version (`[bin][version]`, test R).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cell {
    pub n: [[u64; 2]; EVENTS],
    pub x: [[u64; 2]; EVENTS],
    #[serde(default)]
    pub rank: Bins,
}

impl Cell {
    pub fn add(&mut self, o: &Cell) {
        for e in 0..EVENTS {
            for v in 0..2 {
                self.n[e][v] += o.n[e][v];
                self.x[e][v] += o.x[e][v];
            }
        }
        for (a, b) in self.rank.iter_mut().zip(&o.rank) {
            a[0] += b[0];
            a[1] += b[1];
        }
    }

    /// Timed units of version `v` (those with a rank).
    pub fn ranked(&self, v: usize) -> u64 {
        self.rank.iter().map(|b| b[v]).sum()
    }

    pub fn n(&self, e: Event, v: usize) -> u64 {
        self.n[e.idx()][v]
    }

    pub fn x(&self, e: Event, v: usize) -> u64 {
        self.x[e.idx()][v]
    }

    pub fn is_empty(&self) -> bool {
        self.n.iter().all(|r| r.iter().all(|n| *n == 0)) && self.rank.iter().all(|b| b[0] + b[1] == 0)
    }
}

/// Where a unit's evidence is compared: canary with stable traffic of the
/// same segment (or of no segment), counted per request or per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stratum {
    /// Index of the segment that decided, None for the route's weight.
    pub segment: Option<u16>,
    /// Units are users (a sticky key was present): each counts once per
    /// event kind per scope, at its first bad event.
    pub per_user: bool,
}

/// One stratum's counts for one interval, in both scopes. For per-request
/// strata the two cells are equal; per-user strata dedupe users separately
/// in the scope since the revision started and in the current epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StratumCounts {
    pub stratum: Option<Stratum>,
    /// Highest canary weight (basis points) any unit of the interval was
    /// routed with: the null share for per-user strata. Weights only rise
    /// within a run, so the highest is the conservative choice.
    pub weight_bp: u16,
    /// Lowest canary weight (basis points) any unit of the interval was
    /// routed with, 0 if unknown (then `weight_bp`): test R judges a low
    /// score with it (`rank`, "Weights").
    #[serde(default)]
    pub weight_min_bp: u16,
    pub revision: Cell,
    pub epoch: Cell,
}

/// Everything one interval gathered for one route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Interval {
    pub strata: Vec<StratumCounts>,
    /// Request-level counts over all evidence traffic (one-sample guards,
    /// cumulative rates, the human sentence).
    pub requests: Cell,
    /// The thresholds these counts were classified with.
    pub frozen: Frozen,
    /// Fleet mode: how many recorders (replica processes) may each have
    /// counted the same user once. Each per-user bad unit then weighs
    /// 1/this in the e-processes, which keeps them valid (a power ≤ 1 of a
    /// likelihood ratio is still an e-value). 0 and 1 mean one recorder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub user_multiplicity: u32,
}

fn is_zero(x: &u32) -> bool {
    *x == 0
}

impl StratumCounts {
    /// The canary weights this interval's units were routed with, 0–1.
    pub fn weights(&self) -> (f64, f64) {
        let hi = f64::from(self.weight_bp) / 10_000.0;
        let lo =
            if self.weight_min_bp == 0 { hi } else { f64::from(self.weight_min_bp.min(self.weight_bp)) / 10_000.0 };
        (lo, hi)
    }

    /// Note one unit's weight.
    pub fn saw_weight(&mut self, bp: u16) {
        self.weight_min_bp = if self.weight_min_bp == 0 { bp } else { self.weight_min_bp.min(bp) };
        self.weight_bp = self.weight_bp.max(bp);
    }
}

/// Thresholds in force for one interval, fixed before it began.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Frozen {
    /// Stable's latency at each rank level (`rank::LEVELS`) over the
    /// previous window, µs; None during a warm-up or while stable has too
    /// little data.
    pub rank_us: Option<[u64; EDGES]>,
    /// Stable's p95 ping round trip over the previous window, µs.
    pub rtt95_us: Option<u64>,
    /// Canary is "bad" only above `(1 + tolerance) ×` stable's threshold.
    pub tolerance: f64,
    pub slo_p95_us: Option<u64>,
    pub slo_p99_us: Option<u64>,
    pub slo_rtt_us: Option<u64>,
}

impl Frozen {
    fn over(&self, canary: bool, value_us: u64, threshold_us: u64) -> bool {
        if canary { value_us as f64 > threshold_us as f64 * (1.0 + self.tolerance) } else { value_us > threshold_us }
    }

    /// Which events a finished request takes part in, and which it is bad
    /// for: `(eligible, bad)` bitmasks by `Event::idx`. `latency_us` is None
    /// for events without a meaningful latency (a WebSocket session's end).
    pub fn classify_request(&self, error: bool, latency_us: Option<u64>) -> (u16, u16) {
        let mut eligible = 1u16 << Event::Error.idx();
        let mut bad = u16::from(error) << Event::Error.idx();
        if let Some(us) = latency_us {
            for (e, slo) in [(Event::Slo95, self.slo_p95_us), (Event::Slo99, self.slo_p99_us)] {
                if let Some(slo) = slo {
                    eligible |= 1 << e.idx();
                    bad |= u16::from(us > slo) << e.idx();
                }
            }
        }
        (eligible, bad)
    }

    /// The rank bin of a finished request's latency, if lines are set
    /// (canary's latency is divided by `1 + tolerance` first).
    pub fn rank_bin(&self, canary: bool, latency_us: Option<u64>) -> Option<usize> {
        let (edges, us) = (self.rank_us.as_ref()?, latency_us? as f64);
        Some(rank::bin_of(edges, if canary { us / (1.0 + self.tolerance) } else { us }))
    }

    /// Stable's latency at rank level `level` (one of `rank::LEVELS`).
    pub fn stable_at(&self, level: f64) -> Option<u64> {
        let i = LEVELS.iter().position(|l| (l - level).abs() < 1e-9)?;
        self.rank_us.and_then(|e| e.get(i).copied())
    }

    /// The same for one ping round trip.
    pub fn classify_rtt(&self, canary: bool, rtt_us: u64) -> (u16, u16) {
        let (mut eligible, mut bad) = (0u16, 0u16);
        if let Some(t) = self.rtt95_us {
            eligible |= 1 << Event::Rtt95.idx();
            bad |= u16::from(self.over(canary, rtt_us, t)) << Event::Rtt95.idx();
        }
        if let Some(slo) = self.slo_rtt_us {
            eligible |= 1 << Event::SloRtt.idx();
            bad |= u16::from(rtt_us > slo) << Event::SloRtt.idx();
        }
        (eligible, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_ranks_below_its_latency_by_the_tolerance() {
        let edges = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 100, 110];
        let f = Frozen { rank_us: Some(edges), tolerance: 0.1, ..Frozen::default() };
        assert_eq!(f.rank_bin(false, Some(5)), Some(0), "below stable's p10");
        assert_eq!(f.rank_bin(false, Some(50)), Some(4), "at p50 exactly: not above it");
        assert_eq!(f.rank_bin(false, Some(55)), Some(5));
        assert_eq!(f.rank_bin(true, Some(55)), Some(4), "55 / 1.1 = 50");
        assert_eq!(f.rank_bin(false, Some(1_000)), Some(14), "past p99.9");
        assert_eq!(f.rank_bin(false, None), None, "no latency, no rank");
        assert_eq!(Frozen::default().rank_bin(true, Some(5)), None, "no lines, no rank");
        assert_eq!((f.stable_at(0.5), f.stable_at(0.999), f.stable_at(0.42)), (Some(50), Some(110), None));
        assert_eq!(f.classify_request(true, Some(1_000)), (1, 1), "latency is not an event");
    }

    #[test]
    fn without_thresholds_only_errors_are_eligible() {
        let f = Frozen::default();
        assert_eq!(f.classify_request(true, Some(1_000_000)), (1, 1));
        assert_eq!(f.classify_rtt(true, 5), (0, 0));
        let f = Frozen { slo_rtt_us: Some(120_000), rtt95_us: Some(50_000), ..Frozen::default() };
        let (elig, bad) = f.classify_rtt(true, 130_000);
        assert_eq!((elig, bad), (0b1_0010, 0b1_0010));
    }
}
