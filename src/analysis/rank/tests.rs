use super::*;
use crate::analysis::counts::{CANARY, Frozen, STABLE};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

#[test]
fn bins_are_bounded_by_the_levels_and_scores_rise_with_the_bin() {
    let edges = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 100, 110];
    assert_eq!(bin_of(&edges, 1.0), 0);
    assert_eq!(bin_of(&edges, 10.0), 0, "at a line is not above it");
    assert_eq!(bin_of(&edges, 10.5), 1);
    assert_eq!(bin_of(&edges, 1e9), BINS - 1);
    assert!((mid(0) - 0.05).abs() < 1e-12 && (mid(BINS - 1) - 0.9995).abs() < 1e-12);
    for c in 0..COMPONENTS {
        let scores: Vec<f64> = (0..BINS).map(|b| component(c, b).1).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "component {c}: {scores:?}");
        // Centred under stable's own distribution (bins weighted by width).
        let mean: f64 = (0..BINS).map(|b| component(c, b).1 * width(b)).sum();
        assert!(mean.abs() < 0.05, "component {c}: mean score {mean}");
    }
    assert_eq!(
        (label(7), from_label("rank_07"), from_label("rank_15"), from_label("over_p50")),
        ("rank_07".into(), Some(7), None, None)
    );
}

fn width(b: usize) -> f64 {
    let lo = if b == 0 { 0.0 } else { LEVELS[b - 1] };
    LEVELS.get(b).copied().unwrap_or(1.0) - lo
}

#[test]
fn slow_canary_raises_it_fast_canary_lowers_it_and_nothing_changes_nothing() {
    let mut slow = RankProcess::default();
    let mut bins: Bins = [[0; 2]; BINS];
    for (b, n) in bins.iter_mut().enumerate() {
        *n = [90, if b >= 9 { 30 } else { 2 }]; // canary crowds stable's tail
    }
    slow.update(&bins, 0.1, 0.1, 1.0);
    assert!(slow.value() > 100.0, "{}", slow.value());
    let mut fast = RankProcess::default();
    for (b, n) in bins.iter_mut().enumerate() {
        *n = [90, if b < 5 { 20 } else { 1 }];
    }
    fast.update(&bins, 0.1, 0.1, 1.0);
    assert!(fast.value() < 1.0, "{}", fast.value());
    let mut none = RankProcess::default();
    none.update(&[[0; 2]; BINS], 0.1, 0.1, 1.0);
    none.update(&bins, 0.0, 0.1, 1.0);
    none.update(&bins, 0.2, 0.1, 1.0);
    none.update(&bins, 0.1, 1.0, 1.0);
    assert_eq!(none, RankProcess::default());
}

/// One simulated rollout's latency for a request (µs), lognormal around 20 ms.
fn lognormal(rng: &mut StdRng, sigma: f64) -> f64 {
    let (a, b): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    20_000.0 * (sigma * (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()).exp()
}

/// How a scenario bends a request: `(interval, canary, u, latency)` to the
/// latency it is observed with.
type Shape = fn(usize, bool, f64, f64) -> f64;

/// Share of seeded null runs whose R value ever reaches `c` (for each c),
/// driving `Frozen::rank_bin` with lines from stable's previous interval and
/// `RankProcess::update` at the routing weight, as the recorder and judge do.
fn crossing_rates(seed: u64, runs: usize, per_interval: usize, shape: Shape, marks: &[f64]) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut crossed = vec![0usize; marks.len()];
    for _ in 0..runs {
        let mut r = RankProcess::default();
        let mut lines: Option<[u64; EDGES]> = None;
        let mut sup = 0.0f64;
        for i in 0..60 {
            let frozen = Frozen { rank_us: lines, tolerance: 0.05, ..Frozen::default() };
            let mut bins: Bins = [[0; 2]; BINS];
            let mut stable = Vec::with_capacity(per_interval);
            for _ in 0..per_interval {
                let canary = rng.random::<f64>() < 0.1;
                let u: f64 = rng.random();
                let us = shape(i, canary, u, lognormal(&mut rng, 0.8));
                if !canary {
                    stable.push(us as u64);
                }
                if let Some(b) = frozen.rank_bin(canary, Some(us as u64)) {
                    bins[b][usize::from(canary)] += 1;
                }
            }
            r.update(&bins, 0.1, 0.1, 1.0);
            sup = sup.max(r.value());
            stable.sort_unstable();
            lines = (stable.len() >= 20)
                .then(|| LEVELS.map(|l| stable[((l * stable.len() as f64) as usize).min(stable.len() - 1)]));
        }
        for (n, c) in crossed.iter_mut().zip(marks) {
            *n += usize::from(sup >= *c);
        }
    }
    crossed.iter().map(|n| *n as f64 / runs as f64).collect()
}

/// Ville: P(sup R ≥ c) ≤ 1/c under the null. Checked at the null's worst
/// point (canary exactly at the tolerance), under a shared ×3 slowdown,
/// with a canary faster in the body, and at 10 req/s; seeded, 300 runs of
/// 60 intervals each. The bound allows sampling noise of about two
/// standard deviations at c = 20.
#[test]
fn null_runs_cross_c_at_most_one_in_c_of_the_time() {
    let at_tolerance: Shape = |_, canary, _, us| if canary { us * 1.05 } else { us };
    let shared_slowdown: Shape = |i, canary, _, us| {
        let us = if (20..32).contains(&i) { us * 3.0 } else { us };
        if canary { us * 1.05 } else { us }
    };
    // Four in five of its requests 20 % faster, the rest at the tolerance.
    let faster_body: Shape = |_, canary, u, us| if canary { if u < 0.8 { us * 0.8 } else { us * 1.05 } } else { us };
    let marks = [20.0, 100.0];
    for (name, seed, per_interval, shape) in [
        ("at the tolerance, 50 req/s", 1, 500, at_tolerance),
        ("shared x3 slowdown", 2, 500, shared_slowdown),
        ("canary faster in the body", 3, 500, faster_body),
        ("at the tolerance, 10 req/s", 4, 100, at_tolerance),
    ] {
        let rates = crossing_rates(seed, 300, per_interval, shape, &marks);
        eprintln!("{name}: sup R reached 20 in {:.3}, 100 in {:.3} of 300 runs", rates[0], rates[1]);
        assert!(
            rates[0] <= 0.05 + 0.025 && rates[1] <= 0.01 + 0.012,
            "{name}: crossed 20 in {}, 100 in {}",
            rates[0],
            rates[1]
        );
    }
}

/// A step inside an interval: units routed at 10 % and at 20 %, judged
/// with the range, stay valid; judged at the higher weight alone they
/// would not be (low scores then count as evidence).
#[test]
fn a_step_inside_an_interval_is_judged_with_the_weight_range() {
    let mut rng = StdRng::seed_from_u64(9);
    let (runs, mut crossed) = (300, 0);
    for _ in 0..runs {
        let mut r = RankProcess::default();
        for _ in 0..60 {
            let mut bins: Bins = [[0; 2]; BINS];
            for k in 0..500 {
                let w = if k < 250 { 0.1 } else { 0.2 };
                let canary = rng.random::<f64>() < w;
                let u: f64 = rng.random();
                let b = LEVELS.iter().take_while(|l| u > **l).count();
                bins[b][usize::from(canary)] += 1;
            }
            r.update(&bins, 0.1, 0.2, 1.0);
            if r.value() >= 20.0 {
                crossed += 1;
                break;
            }
        }
    }
    assert!(crossed as f64 / runs as f64 <= 0.05, "crossed in {crossed} of {runs}");
}

#[test]
fn a_slower_canary_is_found_and_its_mean_rank_says_where_it_sits() {
    let mut rng = StdRng::seed_from_u64(5);
    let edges = LEVELS.map(|l| {
        // Stable's true lognormal quantiles (σ 0.8, median 20 ms).
        let z = probit(l);
        (20_000.0 * (0.8 * z).exp()) as u64
    });
    let frozen = Frozen { rank_us: Some(edges), tolerance: 0.05, ..Frozen::default() };
    let (mut r, mut total): (RankProcess, Bins) = (RankProcess::default(), [[0; 2]; BINS]);
    let mut intervals = 0;
    while r.value() < 200.0 && intervals < 100 {
        let mut bins: Bins = [[0; 2]; BINS];
        for _ in 0..500 {
            let canary = rng.random::<f64>() < 0.1;
            let us = lognormal(&mut rng, 0.8) * if canary { 1.5 } else { 1.0 };
            if let Some(b) = frozen.rank_bin(canary, Some(us as u64)) {
                bins[b][usize::from(canary)] += 1;
                total[b][usize::from(canary)] += 1;
            }
        }
        r.update(&bins, 0.1, 0.1, 1.0);
        intervals += 1;
    }
    assert!(intervals <= 12, "×1.5 took {intervals} intervals of 50 canary requests");
    let (c, s) = (mean_rank(&total, CANARY).unwrap_or(0.0), mean_rank(&total, STABLE).unwrap_or(0.0));
    assert!(c > 0.6 && (s - 0.5).abs() < 0.03, "canary at {c}, stable at {s}");
    assert_eq!(mean_rank(&[[0; 2]; BINS], CANARY), None);
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1e-8).
fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A state saved by the first R (14 components) loads with its value kept
/// in every component: not restarted at 1, which would spend α again.
#[test]
fn a_state_from_another_grid_keeps_its_value() {
    let old: Vec<f64> = (0..14).map(|i| f64::from(i) * 0.5).collect();
    let json = serde_json::json!({ "log": old });
    let loaded: RankProcess = serde_json::from_value(json).unwrap_or_default();
    let want = crate::analysis::eprocess::log_mean_exp(&old);
    assert!(loaded.log.iter().all(|l| (l - want).abs() < 1e-12), "{:?} against {want}", loaded.log);
    assert!((loaded.log_value() - want).abs() < 1e-12);
    let same: RankProcess =
        serde_json::from_value(serde_json::json!({ "log": [0.1, 0.2, 0.3, 0.4, 0.5] })).unwrap_or_default();
    assert_eq!(same.log, [0.1, 0.2, 0.3, 0.4, 0.5]);
}
