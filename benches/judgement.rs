#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Question: does the judge keep its promises? How often is a healthy canary
//! rolled back (per rollout, with the number of runs), does a shared outage
//! hold instead of blaming the canary, and how many canary requests does it
//! take to catch a bad one?
//!
//! A seeded Monte Carlo that drives weir's real code: requests go through the
//! real evidence recorder (`weir::evidence`) and the real stable window
//! (`weir::stats`), and every 10 s of simulated time the real controller step
//! (`weir::rollout::judging::take_verdict`: thresholds frozen, counts taken,
//! `weir::analysis::judge`, the state machine) decides. Only the traffic is
//! simulated: Poisson arrivals, lognormal latency (median 20 ms), 0.2 %
//! baseline errors, 10 % canary; sticky scenarios route by the real key hash.
//!
//! Run: `cargo bench --bench judgement` (all scenarios, ~10 min on 2 cores),
//! `-- --quick` (a tenth of the runs), `-- --only NAME` (scenarios whose
//! name contains NAME), `-- --cell 50/0.8` (one rate and σ), `-- --times
//! 10` (ten times the runs); `WHY=1` prints each rollback's seed, time and
//! sentence on stderr. Output: a
//! Markdown table (docs/judgement.md).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};
use weir::analysis::Stratum;
use weir::analysis::machine::{RouteState, Transition};
use weir::config::Snapshot;
use weir::evidence::Unit;
use weir::metrics::Registry;
use weir::rollout::judging::take_verdict;
use weir::routing::{Version, key_hash};

const INTERVAL_S: u64 = 10;
const MEDIAN_MS: f64 = 20.0;
const BASE_ERRORS: f64 = 0.002;
const CANARY_BP: u16 = 1000;
const Z95: f64 = 1.644_853_6;
const Z99: f64 = 2.326_347_9;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Healthy,
    /// Six-hour healthy rollouts.
    HealthyLong,
    /// Sticky users, heavy-tailed activity, 0.5 % of users on bad networks.
    HealthySticky,
    /// Sticky; the most active player is on canary and every request fails.
    OneBadPlayer,
    /// Both versions 3 % errors for 2 minutes (minutes 4–6 of 10).
    SharedErrors,
    /// Both versions ×3 slower for 2 minutes.
    SharedSlow,
    CanaryErrors,
    CanarySlow,
    P99Only,
    MedianOnly,
    /// Canary 5 % errors starting after 50 healthy minutes.
    LateErrors,
    LateSlow,
    /// ×1.2 on every request.
    Slow12,
    /// A wider spread: σ + ln 1.5 / z99, so p95 +33 %, p99 +50 %, the
    /// median unchanged and the fast half faster.
    SigmaWider,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Healthy => "healthy",
            Kind::HealthyLong => "healthy-6h",
            Kind::HealthySticky => "healthy-sticky",
            Kind::OneBadPlayer => "one-bad-player",
            Kind::SharedErrors => "shared-errors",
            Kind::SharedSlow => "shared-slow",
            Kind::CanaryErrors => "canary-5pct-errors",
            Kind::CanarySlow => "canary-x1.5-latency",
            Kind::P99Only => "canary-p99+50pct",
            Kind::MedianOnly => "canary-median+20pct",
            Kind::LateErrors => "late-5pct-errors",
            Kind::LateSlow => "late-x1.5-latency",
            Kind::Slow12 => "canary-x1.2-latency",
            Kind::SigmaWider => "canary-sigma-wider",
        }
    }

    /// What the scenario changes, in words (printed as the table's legend).
    fn shape(self) -> &'static str {
        match self {
            Kind::Healthy => "canary = stable, one-hour rollouts",
            Kind::HealthyLong => "canary = stable, six-hour rollouts",
            Kind::HealthySticky => {
                "canary = stable; 10,000 sticky players, Pareto(1.2) activity, 0.5 % on bad networks"
            }
            Kind::OneBadPlayer => "canary = stable; the heaviest canary player (~2 % of traffic) fails every request",
            Kind::SharedErrors => "both versions 3 % errors for minutes 4-6",
            Kind::SharedSlow => "both versions x3 slower for minutes 4-6",
            Kind::CanaryErrors => "canary 5 % errors from the start",
            Kind::CanarySlow => "canary x1.5 on every request",
            Kind::P99Only => "only the top 5 % slower: +0 % at p95 rising to +50 % at p99 and above",
            Kind::MedianOnly => "the body +20 % up to p80, back to unchanged by p95 (tail unchanged)",
            Kind::LateErrors => "canary 5 % errors from a random moment in minutes 50-55",
            Kind::LateSlow => "canary x1.5 from a random moment in minutes 50-55",
            Kind::Slow12 => "canary x1.2 on every request (median +20 %, tail +20 %)",
            Kind::SigmaWider => "canary's spread wider: median unchanged, p95 +33 %, p99 +50 %",
        }
    }

    fn sticky(self) -> bool {
        matches!(self, Kind::HealthySticky | Kind::OneBadPlayer)
    }

    /// Seconds simulated per run, and when the regression starts (if any).
    fn timeline(self) -> (u64, Option<u64>) {
        match self {
            Kind::Healthy | Kind::HealthySticky | Kind::OneBadPlayer => (3600, None),
            Kind::HealthyLong => (6 * 3600, None),
            Kind::SharedErrors | Kind::SharedSlow => (600, Some(240)),
            Kind::CanaryErrors
            | Kind::CanarySlow
            | Kind::P99Only
            | Kind::MedianOnly
            | Kind::Slow12
            | Kind::SigmaWider => (7200, Some(0)),
            Kind::LateErrors | Kind::LateSlow => (3000 + 7200, Some(3000)),
        }
    }

    fn detection(self) -> bool {
        matches!(
            self,
            Kind::CanaryErrors
                | Kind::CanarySlow
                | Kind::P99Only
                | Kind::MedianOnly
                | Kind::LateErrors
                | Kind::LateSlow
                | Kind::Slow12
                | Kind::SigmaWider
        )
    }
}

fn config(sigma: f64) -> Snapshot {
    // Guards on: max_error_rate 1 %, max_p95 at 2.5 × stable's true p95.
    let p95_ms = (MEDIAN_MS * (Z95 * sigma).exp() * 2.5).round() as u64;
    let text = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nupstreams:\n  a: {{endpoints: [\"127.0.0.1:1\"]}}\n  b: {{endpoints: [\"127.0.0.1:2\"]}}\n\
         routes:\n  - name: app\n    stable: {{upstream: a}}\n    canary: {{upstream: b, revision: \"2\"}}\n    weight: 10\n\
         \x20   analysis: {{interval: {INTERVAL_S}s, window: 60s, alpha: 1%, max_error_rate: 1, max_p95: {p95_ms}ms}}\n"
    );
    weir::config::parse(text.as_bytes(), Path::new("sim.yaml")).unwrap_or_else(|e| panic!("{:?}", e.problems()))
}

fn normal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Latency multiplier of a regressed canary at standard-normal quantile z.
fn canary_factor(kind: Kind, z: f64) -> f64 {
    match kind {
        Kind::CanarySlow | Kind::LateSlow => 1.5,
        Kind::Slow12 => 1.2,
        Kind::SigmaWider => ((1.5f64).ln() / Z99 * z).exp(),
        // Only the tail beyond p95 moves, reaching +50 % at p99 and above.
        Kind::P99Only => 1.0 + 0.5 * ((z - Z95) / (Z99 - Z95)).clamp(0.0, 1.0),
        // The body +20 % up to p80, back to unchanged by p95.
        Kind::MedianOnly => 1.2 - 0.2 * ((z - 0.841_621) / (Z95 - 0.841_621)).clamp(0.0, 1.0),
        _ => 1.0,
    }
}

/// Sticky population: activity weights (Pareto, shape 1.2) and who is on a
/// bad network.
struct Users {
    cumulative: Vec<f64>,
    hash: Vec<u64>,
    bad_network: Vec<bool>,
    /// The failing player (OneBadPlayer): most active canary user.
    failing: Option<usize>,
}

impl Users {
    fn new(rng: &mut StdRng, n: usize, kind: Kind) -> Self {
        let salt = b"app\x1f";
        let hash: Vec<u64> =
            (0..n).map(|i| key_hash(salt, format!("player-{}", rng.random::<u64>() ^ i as u64).as_bytes())).collect();
        let mut weights: Vec<f64> = (0..n).map(|_| rng.random::<f64>().max(1e-9).powf(-1.0 / 1.2)).collect();
        let bad_network = (0..n).map(|_| rng.random::<f64>() < 0.005).collect();
        let failing = (kind == Kind::OneBadPlayer).then(|| {
            let on_canary = |i: &usize| (hash[*i] % 10_000) < u64::from(CANARY_BP);
            let i = (0..n).find(on_canary).unwrap();
            // Make them the heaviest player: ~2 % of all traffic.
            let total: f64 = weights.iter().sum();
            weights[i] = total * 0.02;
            i
        });
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        Self { cumulative, hash, bad_network, failing }
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let total = *self.cumulative.last().unwrap();
        let x = rng.random::<f64>() * total;
        self.cumulative.partition_point(|c| *c < x).min(self.cumulative.len() - 1)
    }
}

#[derive(Default, Clone, Copy)]
struct Outcome {
    rolled_back: bool,
    /// Canary requests from the regression's start to the rollback.
    to_rollback: Option<u64>,
    held_in_outage: bool,
    /// Rolled back before the shared outage began (chance, not the outage).
    before_outage: bool,
    held_after_outage_s: u64,
}

fn run(kind: Kind, rate: f64, sigma: f64, seed: u64) -> Outcome {
    let cfg = config(sigma);
    let r = &cfg.table.routes[0];
    let a = r.analysis.as_deref().unwrap();
    let reg = Registry::default();
    let m = reg.route(&r.name);
    let mut st = RouteState::fresh("2", None, 0);
    let mut rng = StdRng::seed_from_u64(seed);
    let users = kind.sticky().then(|| Users::new(&mut rng, 10_000, kind));
    let (duration, start) = kind.timeline();
    // A late regression starts at a random moment (not on an epoch boundary).
    let start = match kind {
        Kind::LateErrors | Kind::LateSlow => start.map(|s| s + rng.random_range(0..300u64)),
        _ => start,
    };
    let t0 = Instant::now();
    m.stable.window.configure(a.window, t0);
    let mut out = Outcome::default();
    let mut canary_since_start = 0u64;
    let mut t = 0.0f64;
    for k in 0..duration / INTERVAL_S {
        let end = ((k + 1) * INTERVAL_S) as f64;
        loop {
            t += -rng.random::<f64>().max(1e-300).ln() / rate;
            if t >= end {
                t = end;
                break;
            }
            let regressed = start.is_some_and(|s| t >= s as f64);
            let outage = matches!(kind, Kind::SharedErrors | Kind::SharedSlow) && regressed && t < 360.0;
            let (version, unit, user) = match &users {
                Some(u) => {
                    let i = u.pick(&mut rng);
                    let h = u.hash[i];
                    let v = if h % 10_000 < u64::from(CANARY_BP) { Version::Canary } else { Version::Stable };
                    let unit =
                        Unit { stratum: Stratum { segment: None, per_user: true }, weight_bp: CANARY_BP, user: h };
                    (v, unit, Some(i))
                }
                None => {
                    let v = if rng.random_range(0..10_000u16) < CANARY_BP { Version::Canary } else { Version::Stable };
                    (
                        v,
                        Unit { stratum: Stratum { segment: None, per_user: false }, weight_bp: CANARY_BP, user: 0 },
                        None,
                    )
                }
            };
            let z = normal(&mut rng);
            let mut ms = MEDIAN_MS * (sigma * z).exp();
            let mut p_err = BASE_ERRORS;
            if let (Some(u), Some(i)) = (&users, user)
                && u.bad_network[i]
            {
                ms *= 5.0;
                p_err = 0.05;
            }
            if outage {
                if kind == Kind::SharedErrors {
                    p_err = 0.03;
                } else {
                    ms *= 3.0;
                }
            }
            if version == Version::Canary && regressed && kind.detection() {
                ms *= canary_factor(kind, z);
                if matches!(kind, Kind::CanaryErrors | Kind::LateErrors) {
                    p_err = 0.05;
                }
            }
            let mut error = rng.random::<f64>() < p_err;
            if let (Some(u), Some(i)) = (&users, user)
                && u.failing == Some(i)
            {
                error = true;
            }
            if version == Version::Canary && regressed {
                canary_since_start += 1;
            }
            let at = t0 + Duration::from_secs_f64(t);
            let latency = Duration::from_secs_f64(ms / 1000.0);
            if version == Version::Stable {
                m.stable.window.record(at, latency, error);
            }
            m.evidence.record(&unit, version, error, Some(latency));
        }
        let now_ms = (k + 1) * INTERVAL_S * 1000;
        let (j, tr, _) = take_verdict(r, a, &mut st, &m, t0 + Duration::from_millis(now_ms), now_ms);
        if j.verdict == weir::analysis::Verdict::Hold {
            let now_s = now_ms / 1000;
            if (240..=360).contains(&now_s) {
                out.held_in_outage = true;
            } else if now_s > 360 {
                out.held_after_outage_s = now_s - 360;
            }
        }
        if let Transition::RolledBack(_) = tr {
            if std::env::var_os("WHY").is_some() {
                eprintln!("seed {seed} {} at {} s: {:?} {}", kind.name(), now_ms / 1000, j.fired, j.reason);
            }
            out.rolled_back = true;
            out.before_outage = now_ms < 240_000;
            out.to_rollback = start.map(|_| canary_since_start);
            break;
        }
    }
    out
}

struct Cell {
    kind: Kind,
    rate: f64,
    sigma: f64,
    runs: u64,
}

fn quantile(v: &mut [u64], q: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[((v.len() as f64 - 1.0) * q).round() as usize])
}

fn report(c: &Cell, outs: &[Outcome], took: Duration) -> String {
    let n = outs.len() as u64;
    let rb = outs.iter().filter(|o| o.rolled_back).count() as u64;
    let detail = if c.kind.detection() {
        let mut d: Vec<u64> = outs.iter().filter_map(|o| o.to_rollback).collect();
        let caught = d.len();
        let (med, p90) = (quantile(&mut d, 0.5), quantile(&mut d, 0.9));
        format!(
            "caught {caught}/{n}; canary requests to rollback: median {}, p90 {}",
            med.map_or("-".into(), |v| v.to_string()),
            p90.map_or("-".into(), |v| v.to_string())
        )
    } else {
        // 95 % upper bound on the rate: exact for 0 events (rule of three),
        // a normal approximation otherwise.
        let p = rb as f64 / n as f64;
        let upper = if rb == 0 { 3.0 / n as f64 } else { p + 1.96 * (p * (1.0 - p) / n as f64).sqrt() };
        let mut s = format!("rolled back {rb}/{n} ({:.2} %, 95 % upper bound {:.2} %)", p * 100.0, upper * 100.0);
        if matches!(c.kind, Kind::SharedErrors | Kind::SharedSlow) {
            let before = outs.iter().filter(|o| o.before_outage).count();
            s.push_str(&format!(" ({before} before the outage began)"));
            let held = outs.iter().filter(|o| o.held_in_outage).count();
            let tail = outs.iter().map(|o| o.held_after_outage_s).max().unwrap_or(0);
            s.push_str(&format!("; hold during the outage in {held}/{n}, last hold ≤ {tail} s after it"));
        }
        s
    };
    format!("| {} | {} | {} | {} | {} | {:.0} s |", c.kind.name(), c.rate, c.sigma, n, detail, took.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    // `--times K`: K times the runs (a rare event's rate, bounded tighter).
    let times: u64 = args.iter().position(|a| a == "--times").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(1);
    let scale = |n: u64| if quick { (n / 10).max(10) } else { n * times };
    // `--cell 50/0.8`: one traffic rate and σ only.
    let cell = args.iter().position(|a| a == "--cell").and_then(|i| args.get(i + 1)).cloned();
    let wanted = |rate: f64, sigma: f64| cell.as_ref().is_none_or(|c| *c == format!("{rate}/{sigma}"));
    let mut cells = Vec::new();
    for rate in [50.0, 10.0] {
        for sigma in [0.5, 0.8, 1.2] {
            for (kind, runs) in [
                (Kind::Healthy, 2000),
                (Kind::HealthyLong, 200),
                (Kind::HealthySticky, 500),
                (Kind::OneBadPlayer, 200),
                (Kind::SharedErrors, 200),
                (Kind::SharedSlow, 200),
                (Kind::CanaryErrors, 200),
                (Kind::CanarySlow, 200),
                (Kind::P99Only, 200),
                (Kind::MedianOnly, 200),
                (Kind::LateErrors, 100),
                (Kind::LateSlow, 100),
                (Kind::Slow12, 200),
                (Kind::SigmaWider, 200),
            ] {
                if only.as_ref().is_some_and(|o| !kind.name().contains(o.as_str())) || !wanted(rate, sigma) {
                    continue;
                }
                cells.push(Cell { kind, rate, sigma, runs: scale(runs) });
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("seeded simulation of weir's judge: alpha 1 %, interval 10 s, 10 % canary, {threads} threads");
    let mut seen = Vec::new();
    for c in &cells {
        if !seen.contains(&c.kind) {
            seen.push(c.kind);
            println!("- {}: {}", c.kind.name(), c.kind.shape());
        }
    }
    println!();
    println!("| scenario | req/s | σ | runs | result | took |");
    println!("|---|---|---|---|---|---|");
    for c in &cells {
        let started = Instant::now();
        let base = (c.rate as u64) * 1_000_000 + (c.sigma * 10.0) as u64 * 10_000 + c.kind as u64 * 1_000_000_000;
        let outs: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    s.spawn(move || {
                        (t..c.runs).step_by(threads).map(|i| run(c.kind, c.rate, c.sigma, base + i)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        println!("{}", report(c, &outs, started.elapsed()));
    }
}
