//! The rank test R (judgement.md, "Revision 2"): every timed request is
//! scored by where its latency sits in stable's frozen distribution, so a
//! shift of the median, of the tail or of both all count as evidence in one
//! test, instead of four exceedance tests that each see one line.
//!
//! Stable's previous window gives the latency at fixed rank levels
//! (`LEVELS`); a request falls in the bin between two of them (a canary's
//! latency is divided by `1 + tolerance` first). Every bin has a score per
//! component: a Wilcoxon score `u − ½` and two tail log-scores (above p95
//! and above p99), each at a few bet sizes λ. For request i routed to canary
//! with probability w_i, a component multiplies its value by
//!
//! ```text
//! exp(λ·s_i·1{i canary}) / (1 − w_i + w_i·exp(λ·s_i))
//! ```
//!
//! Under the null (canary's scaled latency no worse than stable's) the
//! version of a request with score s is canary with probability ≤ w_i for
//! high scores and ≥ w_i for low ones, so each factor has expectation ≤ 1
//! given the past, whatever the two versions suffer together. The value is
//! the mean over components. Everything the factor needs is a count per bin
//! and version, so intervals and replicas add up.
//!
//! The components (`GRID`): Wilcoxon scores at two bet sizes and the tail
//! scores at three, chosen for the smallest regressions worth catching.
//!
//! Weights: a stratum's requests in one interval were routed with weights
//! between `w_lo` and `w_hi` (a step may fall inside the interval). A
//! positive score is judged with `w_hi` and a negative one with `w_lo`:
//! both make the factor's expectation ≤ 1 for any true weight in between.

use super::eprocess::log_mean_exp;
use serde::{Deserialize, Serialize};

/// Stable's rank levels whose latencies bound the bins.
pub const LEVELS: [f64; EDGES] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];
pub const EDGES: usize = 14;
pub const BINS: usize = EDGES + 1;

/// Counts per bin and version (`[bin][version]`).
pub type Bins = [[u64; 2]; BINS];

/// A component's score shape: Wilcoxon `u − ½`, or the tail log-score
/// `max(0, ln(q / (1 − u))) − q` above stable's `1 − q` level.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Wilcoxon,
    Tail(f64),
}

/// The components, each a score shape and a bet size λ, equally weighted.
///
/// Every choice is valid (each factor averages ≤ 1 under the null whatever
/// the bet); the grid only decides which regressions are caught fast. The
/// bet sizes sit where the expected log-growth per canary request peaks for
/// the smallest regressions worth catching (docs/judgement.md, "The rank
/// test's grid"): ×1.2 or a +20 % median shift (Wilcoxon λ 0.5), ×1.5
/// (Wilcoxon λ 1), a spread 50 % wider at p99 (p95 tail λ 0.3) and only
/// the top 5 % slower (p99 tail λ 0.3 and 0.6). Larger bets only speed up
/// regressions caught in a few dozen requests anyway, and each component
/// more costs every test its share of the mixture (ln 14 → ln 5 took up to
/// a fifth off the slowest shapes).
const GRID: [(Score, f64); COMPONENTS] = [
    (Score::Wilcoxon, 0.5),
    (Score::Wilcoxon, 1.0),
    (Score::Tail(0.05), 0.3),
    (Score::Tail(0.01), 0.3),
    (Score::Tail(0.01), 0.6),
];
pub const COMPONENTS: usize = 5;

/// The bin a latency falls in: how many edges it is above.
pub fn bin_of(edges: &[u64; EDGES], latency_us: f64) -> usize {
    edges.iter().take_while(|e| latency_us > **e as f64).count()
}

/// A bin's `event` label in the exported evidence counters.
pub fn label(bin: usize) -> String {
    format!("rank_{bin:02}")
}

/// The bin an `event` label names.
pub fn from_label(s: &str) -> Option<usize> {
    let b: usize = s.strip_prefix("rank_")?.parse().ok()?;
    (b < BINS).then_some(b)
}

/// A bin's mid-rank in stable's distribution.
pub fn mid(bin: usize) -> f64 {
    let lo = if bin == 0 { 0.0 } else { LEVELS.get(bin - 1).copied().unwrap_or(1.0) };
    let hi = LEVELS.get(bin).copied().unwrap_or(1.0);
    (lo + hi) / 2.0
}

/// Component `c`'s bet size and score for a bin.
fn component(c: usize, bin: usize) -> (f64, f64) {
    let u = mid(bin);
    match GRID.get(c) {
        Some(&(Score::Wilcoxon, lambda)) => (lambda, u - 0.5),
        Some(&(Score::Tail(q), lambda)) => (lambda, (q / (1.0 - u)).ln().max(0.0) - q),
        None => (0.0, 0.0),
    }
}

/// One rank e-process: a log-value per component, all 0 at the start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankProcess {
    #[serde(deserialize_with = "components")]
    pub log: [f64; COMPONENTS],
}

/// Reads the components' log-values. A state saved with another grid (the
/// first R had 14 components) carries its mixture's value into every new
/// component: the product of a value reached and fresh factors that each
/// average ≤ 1 is still an e-process, so the running value neither falls
/// nor restarts at 1 (which would spend α again).
fn components<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; COMPONENTS], D::Error> {
    let saved = Vec::<f64>::deserialize(d)?;
    Ok(<[f64; COMPONENTS]>::try_from(saved.as_slice()).unwrap_or([log_mean_exp(&saved); COMPONENTS]))
}

impl Default for RankProcess {
    fn default() -> Self {
        Self { log: [0.0; COMPONENTS] }
    }
}

impl RankProcess {
    /// ln of the mean of the components' values, without overflow.
    pub fn log_value(&self) -> f64 {
        log_mean_exp(&self.log)
    }

    pub fn value(&self) -> f64 {
        self.log_value().exp().min(f64::MAX)
    }

    /// Add one interval's counts per bin and version, routed with canary
    /// weights in `[w_lo, w_hi]`. Each unit weighs `unit` ∈ (0, 1] (fleet
    /// mode: a user up to 1/unit recorders may each have counted once).
    pub fn update(&mut self, bins: &Bins, w_lo: f64, w_hi: f64, unit: f64) {
        if !(w_lo > 0.0 && w_lo <= w_hi && w_hi < 1.0 && unit > 0.0 && unit <= 1.0) {
            return;
        }
        for (c, l) in self.log.iter_mut().enumerate() {
            let mut add = 0.0;
            for (b, [n_s, n_c]) in bins.iter().enumerate() {
                if n_s + n_c == 0 {
                    continue;
                }
                let (lambda, s) = component(c, b);
                let w = if s >= 0.0 { w_hi } else { w_lo };
                let tilt = lambda * s;
                add += *n_c as f64 * tilt - (n_s + n_c) as f64 * (1.0 - w + w * tilt.exp()).ln();
            }
            *l += unit * add;
        }
    }
}

/// Where a version's units sit in stable's distribution on average (0–1).
pub fn mean_rank(bins: &Bins, v: usize) -> Option<f64> {
    let n: u64 = bins.iter().map(|b| b[v]).sum();
    (n > 0).then(|| bins.iter().enumerate().map(|(i, b)| b[v] as f64 * mid(i)).sum::<f64>() / n as f64)
}

#[cfg(test)]
mod tests;
