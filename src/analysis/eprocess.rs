//! E-processes: likelihood ratios mixed over a grid of effect sizes and
//! multiplied up interval by interval (judgement.md, "Formulas").
//!
//! Each grid point keeps its log-likelihood ratio against the null; the
//! e-value is the equally weighted mean of their exponentials. Under the null
//! every update has expectation ≤ 1 given the past, so the e-value is a
//! non-negative supermartingale starting at 1 and, by Ville's inequality, a
//! healthy canary crosses `1/α` with probability at most `α`, however long it
//! runs and however often it is looked at.
//!
//! Everything is in logs and plain arithmetic: no special functions, no
//! allocation, identical results on every replica for identical inputs.

use serde::{Deserialize, Serialize};

/// Effect sizes the mixture bets on, as multiples of the null: odds ratios
/// for two-sample tests, tail-share ratios for one-sample tests.
pub const GRID: [f64; 8] = [1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0];

/// One e-process: a log-likelihood ratio per grid point, all 0 at the start.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EProcess {
    pub log: [f64; GRID.len()],
}

/// ln of the mean of `exp(l)` over `logs`, without overflow (a mixture's
/// value from its components' log-values; −∞ for none).
pub fn log_mean_exp(logs: &[f64]) -> f64 {
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    max + sum.ln() - (logs.len() as f64).ln()
}

/// Share of bad events that fall on canary when canary's rate is `psi` times
/// stable's and canary has share `q` of the units.
fn share(q: f64, psi: f64) -> f64 {
    q * psi / (q * psi + 1.0 - q)
}

impl EProcess {
    /// ln of the e-value: ln(mean_g exp(L_g)), computed without overflow.
    pub fn log_value(&self) -> f64 {
        log_mean_exp(&self.log)
    }

    /// The e-value itself (saturates at f64::MAX rather than overflowing).
    pub fn value(&self) -> f64 {
        self.log_value().exp().min(f64::MAX)
    }

    /// Two-sample update (binomial form): of `x_c + x_s` bad units, `x_c`
    /// were canary, where canary holds share `q` of the units. The null is
    /// "canary's rate ≤ `psi0` × stable's"; grid points bet on `psi0 × GRID`.
    /// Conditionally on the bad-unit total the exact law is hypergeometric,
    /// which is dominated by this binomial in convex order, so the update's
    /// null expectation stays ≤ 1 (slightly conservative).
    pub fn two_sample(&mut self, q: f64, psi0: f64, x_c: u64, x_s: u64) {
        self.two_sample_weighted(q, psi0, x_c, x_s, 1.0);
    }

    /// The same with each unit weighing `w` ∈ (0, 1]: for units that up
    /// to 1/w recorders may each have counted once (fleet mode).
    pub fn two_sample_weighted(&mut self, q: f64, psi0: f64, x_c: u64, x_s: u64, w: f64) {
        if x_c + x_s == 0 || !(q > 0.0 && q < 1.0) || psi0.is_nan() || psi0 <= 0.0 || !(w > 0.0 && w <= 1.0) {
            return;
        }
        let theta0 = share(q, psi0);
        let (xc, xs) = (x_c as f64 * w, x_s as f64 * w);
        for (l, r) in self.log.iter_mut().zip(GRID) {
            let theta = share(q, psi0 * r);
            *l += xc * (theta / theta0).ln() + xs * ((1.0 - theta) / (1.0 - theta0)).ln();
        }
    }

    /// Two-sample update, exact form: with `n_c`, `n_s` units and
    /// `x_c + x_s` bad ones, `x_c` given the total is Fisher's noncentral
    /// hypergeometric in the odds ratio ψ. The null is "canary's odds ≤
    /// `psi0` × stable's"; grid points bet on `psi0 × GRID`. Unlike the
    /// binomial form it uses the units that were *not* bad, so common events
    /// (half of all requests are over stable's p50) carry their full weight.
    pub fn two_sample_exact(&mut self, n_c: u64, n_s: u64, x_c: u64, x_s: u64, psi0: f64) {
        let e = x_c + x_s;
        if e == 0 || n_c == 0 || n_s == 0 || x_c > n_c || x_s > n_s || psi0.is_nan() || psi0 <= 0.0 {
            return;
        }
        let (lo, hi) = (e.saturating_sub(n_s), n_c.min(e));
        // ln h(x) up to a constant, by the ratio h(x+1)/h(x).
        let mut log_h = Vec::with_capacity((hi - lo + 1) as usize);
        let mut acc = 0.0f64;
        log_h.push(acc);
        for x in lo..hi {
            let num = ((n_c - x) as f64) * ((e - x) as f64);
            let den = ((x + 1) as f64) * ((n_s + x + 1 - e) as f64);
            acc += (num / den).ln();
            log_h.push(acc);
        }
        let log_f = |psi: f64| {
            let lp = psi.ln();
            let terms = log_h.iter().enumerate().map(|(i, h)| h + (lo + i as u64) as f64 * lp);
            let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = terms.map(|t| (t - max).exp()).sum();
            x_c as f64 * lp - (max + sum.ln())
        };
        let base = log_f(psi0);
        for (l, r) in self.log.iter_mut().zip(GRID) {
            *l += log_f(psi0 * r) - base;
        }
    }

    /// One-sample update: `x` of `n` units were bad; the null is "the tail
    /// share is ≤ `pi0`"; grid points bet on `pi0 × GRID`, kept below 1.
    pub fn one_sample(&mut self, pi0: f64, x: u64, n: u64) {
        if n == 0 || !(pi0 > 0.0 && pi0 < 1.0) {
            return;
        }
        let (x, rest) = (x.min(n) as f64, (n - x.min(n)) as f64);
        for (l, r) in self.log.iter_mut().zip(GRID) {
            let pi = one_sample_alt(pi0, r);
            *l += x * (pi / pi0).ln() + rest * ((1.0 - pi) / (1.0 - pi0)).ln();
        }
    }
}

/// Alternative tail share for grid ratio `r`, kept strictly between `pi0` and 1.
fn one_sample_alt(pi0: f64, r: f64) -> f64 {
    (pi0 * r).min(0.5 + pi0 / 2.0)
}

/// A change detector (CUSUM of log-likelihood ratios, floored at 0) for
/// "this version breaks its SLO now". It rises while a version is out of its
/// SLO and falls back once it recovers, which is what `hold` needs: it says
/// whether the service as a whole is broken, never who to blame, so it does
/// not spend the rollback α.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Detector {
    pub log: f64,
    pub hot: bool,
}

/// ln 100: a detector is hot above this.
pub const DETECTOR_HOT: f64 = 4.605_170_185_988_091;
/// ln 10: a hot detector cools below this.
const DETECTOR_COOL: f64 = std::f64::consts::LN_10;
/// ln 1000: the most a detector remembers.
const DETECTOR_CAP: f64 = 6.907_755_278_982_137;

impl Detector {
    /// `x` of `n` units were over the SLO whose tail share is `pi0`; the
    /// detector bets on twice that.
    pub fn update(&mut self, pi0: f64, x: u64, n: u64) {
        if n == 0 || !(pi0 > 0.0 && pi0 < 1.0) {
            return;
        }
        let pi = one_sample_alt(pi0, 2.0);
        let (x, rest) = (x.min(n) as f64, (n - x.min(n)) as f64);
        // Capped, so a long breach does not take as long to forget.
        self.log = (self.log + x * (pi / pi0).ln() + rest * ((1.0 - pi) / (1.0 - pi0)).ln()).clamp(0.0, DETECTOR_CAP);
        // Hysteresis: hot from the threshold up, cold again below ln 10.
        self.hot = self.log >= DETECTOR_HOT || (self.hot && self.log > DETECTOR_COOL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| rng.random::<f64>() < p).count() as u64
    }

    #[test]
    fn starts_at_one_and_ignores_empty_intervals() {
        let mut e = EProcess::default();
        assert!((e.value() - 1.0).abs() < 1e-12);
        e.two_sample(0.1, 1.0, 0, 0);
        e.two_sample(0.0, 1.0, 5, 5);
        e.two_sample(1.0, 1.0, 5, 5);
        e.one_sample(0.05, 0, 0);
        assert_eq!(e, EProcess::default());
    }

    #[test]
    fn evidence_against_the_canary_raises_it_and_for_it_lowers_it() {
        let mut bad = EProcess::default();
        bad.two_sample(0.1, 1.0, 8, 2); // 80 % of bad events on a 10 % canary
        assert!(bad.value() > 100.0, "{}", bad.value());
        let mut good = EProcess::default();
        good.two_sample(0.1, 1.0, 0, 30);
        assert!(good.value() < 0.2, "{}", good.value());
    }

    #[test]
    fn a_tolerance_makes_the_same_data_weaker_evidence() {
        let (mut strict, mut tolerant) = (EProcess::default(), EProcess::default());
        strict.two_sample(0.1, 1.0, 4, 10);
        tolerant.two_sample(0.1, 2.0, 4, 10);
        assert!(tolerant.value() < strict.value());
    }

    #[test]
    fn splitting_an_interval_in_two_changes_nothing() {
        // The binomial form is additive in counts for a fixed q.
        let (mut one, mut two) = (EProcess::default(), EProcess::default());
        one.two_sample(0.2, 1.0, 7, 11);
        two.two_sample(0.2, 1.0, 3, 5);
        two.two_sample(0.2, 1.0, 4, 6);
        for (a, b) in one.log.iter().zip(two.log) {
            assert!((a - b).abs() < 1e-9);
        }
    }

    #[test]
    fn the_exact_form_agrees_with_the_binomial_for_rare_events_and_beats_it_for_common_ones() {
        let (mut exact, mut binom) = (EProcess::default(), EProcess::default());
        exact.two_sample_exact(1000, 9000, 12, 18, 1.0);
        binom.two_sample(0.1, 1.0, 12, 18);
        assert!((exact.log_value() - binom.log_value()).abs() < 0.5, "{} {}", exact.log_value(), binom.log_value());
        // 67 % vs 50 % of requests over the line: the exact form sees it.
        let (mut exact, mut binom) = (EProcess::default(), EProcess::default());
        exact.two_sample_exact(100, 900, 67, 450, 1.0);
        binom.two_sample(0.1, 1.0, 67, 450);
        assert!(exact.log_value() > binom.log_value() + 1.0, "{} {}", exact.log_value(), binom.log_value());
        // Degenerate tables change nothing.
        let mut e = EProcess::default();
        e.two_sample_exact(0, 10, 0, 3, 1.0);
        e.two_sample_exact(10, 10, 10, 10, 1.0);
        e.two_sample_exact(10, 10, 11, 0, 1.0);
        assert!(e.log.iter().all(|l| l.abs() < 1e-9), "{e:?}");
    }

    #[test]
    fn huge_evidence_does_not_overflow() {
        let mut e = EProcess::default();
        e.two_sample(0.01, 1.0, 100_000, 0);
        assert!(e.log_value().is_finite());
        assert_eq!(e.value(), f64::MAX);
    }

    /// Ville: over many null runs the share that ever crosses 1/α stays ≤ α.
    /// Seeded; 1,000 runs of 200 intervals each, α = 5 % (checked against twice α, two tests).
    #[test]
    fn null_runs_cross_one_over_alpha_at_most_alpha_of_the_time() {
        let mut rng = StdRng::seed_from_u64(17);
        let (runs, alpha) = (1000, 0.05);
        let mut crossed = 0;
        for _ in 0..runs {
            let mut e = EProcess::default();
            let mut g = EProcess::default();
            for _ in 0..200 {
                let (n_c, n_s) = (5 + rng.random_range(0..5u64), 45 + rng.random_range(0..10u64));
                let (x_c, x_s) = (binomial(&mut rng, n_c, 0.03), binomial(&mut rng, n_s, 0.03));
                e.two_sample_exact(n_c, n_s, x_c, x_s, 1.0);
                g.one_sample(0.05, binomial(&mut rng, n_c, 0.05), n_c);
                if e.value() >= 1.0 / alpha || g.value() >= 1.0 / alpha {
                    crossed += 1;
                    break;
                }
            }
        }
        let rate = f64::from(crossed) / f64::from(runs);
        assert!(rate <= 2.0 * alpha, "crossed in {rate} of runs (two tests, α each)");
    }

    #[test]
    fn the_detector_heats_during_a_breach_and_cools_after() {
        let mut d = Detector::default();
        for _ in 0..5 {
            d.update(0.01, 0, 100);
        }
        assert!(!d.hot && d.log == 0.0);
        for _ in 0..10 {
            d.update(0.01, 4, 100);
        }
        assert!(d.hot);
        for _ in 0..1000 {
            d.update(0.01, 10, 100);
        }
        assert!(d.hot && d.log <= DETECTOR_CAP, "a long breach is remembered only so much");
        let mut healthy = 0;
        while d.hot {
            d.update(0.01, 0, 100);
            healthy += 100;
        }
        assert!(healthy <= 500, "cools after {healthy} healthy requests");
    }
}
