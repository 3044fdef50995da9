//! The judge: one interval's counts plus the persisted state in, a verdict
//! with its explanation out. Pure: time is passed in, nothing is read or
//! written elsewhere, so every branch is unit-tested and the simulation bench
//! drives exactly this code.
//!
//! Per test, two e-processes run: one since the canary revision started
//! (share ½ of the test's α) and one for the current epoch (a fresh one at
//! every progression step and every `analysis.epoch` within a step, epoch
//! `s` getting ½ · 1/(s(s+1)) of it), so a regression that starts late is not
//! buried under an hour of healthy evidence, and the shares sum to the
//! test's α over any number of epochs.

use super::counts::{CANARY, Cell, Event, Interval, STABLE};
use super::eprocess::{Detector, EProcess};
use crate::config::Analysis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Canary requests a step needs before its verdict can be `pass`.
pub const PASS_FLOOR: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Stable breaks an SLO guard too: no step, no rollback.
    Hold,
    Insufficient,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Pass, Verdict::Fail, Verdict::Hold, Verdict::Insufficient];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Hold => "hold",
            Verdict::Insufficient => "insufficient",
        }
    }
}

/// The evidence tests (judgement.md, "Tests").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Test {
    /// Errors, canary against stable.
    E,
    L50,
    L95,
    L99,
    /// WebSocket ping round trip above stable's p95.
    W95,
    /// Guard: `max_error_rate`.
    GErr,
    /// Guard: `max_p95`.
    G95,
    /// Guard: `max_p99`.
    G99,
    /// Guard: `max_ws_rtt_p95`.
    GRtt,
}

impl Test {
    pub const ALL: [Test; 9] =
        [Test::E, Test::L50, Test::L95, Test::L99, Test::W95, Test::GErr, Test::G95, Test::G99, Test::GRtt];

    pub fn as_str(self) -> &'static str {
        match self {
            Test::E => "E",
            Test::L50 => "L50",
            Test::L95 => "L95",
            Test::L99 => "L99",
            Test::W95 => "W95",
            Test::GErr => "G_error",
            Test::G95 => "G_p95",
            Test::G99 => "G_p99",
            Test::GRtt => "G_ws_rtt",
        }
    }

    pub fn event(self) -> Event {
        match self {
            Test::E | Test::GErr => Event::Error,
            Test::L50 => Event::Over50,
            Test::L95 => Event::Over95,
            Test::L99 => Event::Over99,
            Test::W95 => Event::Rtt95,
            Test::G95 => Event::Slo95,
            Test::G99 => Event::Slo99,
            Test::GRtt => Event::SloRtt,
        }
    }

    pub fn is_guard(self) -> bool {
        matches!(self, Test::GErr | Test::G95 | Test::G99 | Test::GRtt)
    }

    /// Null odds ratio of the two-sample part.
    fn psi0(self, p: &Analysis) -> f64 {
        if self == Test::E { p.error_tolerance } else { 1.0 }
    }

    /// Tail share the SLO allows (guards only).
    fn pi0(self, p: &Analysis) -> Option<f64> {
        match self {
            Test::GErr => p.max_error_rate.map(|r| r / 100.0),
            Test::G95 => p.max_p95.map(|_| 0.05),
            Test::G99 => p.max_p99.map(|_| 0.01),
            Test::GRtt => p.max_ws_rtt_p95.map(|_| 0.05),
            _ => None,
        }
    }
}

/// The tests a route runs: the α budget is split over exactly these.
pub fn tests_in_use(p: &Analysis, ws_rtt: bool) -> Vec<Test> {
    Test::ALL
        .into_iter()
        .filter(|t| match t {
            Test::W95 => ws_rtt,
            t if t.is_guard() => t.pi0(p).is_some(),
            _ => true,
        })
        .collect()
}

/// The e-processes of one test.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Processes {
    /// Canary against stable, since the revision started.
    pub revision: EProcess,
    /// Canary against stable, this epoch.
    pub epoch: EProcess,
    /// Guards: canary's tail share against the SLO, per scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<[EProcess; 2]>,
    /// Guards: is each version (stable, canary) out of the SLO right now?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectors: Option<[Detector; 2]>,
}

/// What the judge remembers; persisted with the rollout state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeState {
    /// Epoch number s ≥ 1 (0 only before the first interval).
    pub epoch: u32,
    pub epoch_since_ms: u64,
    pub tests: BTreeMap<Test, Processes>,
    /// Request-level totals since the revision started, this epoch, this step.
    pub revision_totals: Cell,
    pub epoch_totals: Cell,
    pub step_totals: Cell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Revision,
    Epoch,
}

/// One test's standing after an interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub test: Test,
    pub e_revision: f64,
    pub threshold_revision: f64,
    pub e_epoch: f64,
    pub threshold_epoch: f64,
    /// Guards: canary's one-sample e-values (revision, epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e_slo: Option<[f64; 2]>,
    /// Guards: stable / canary out of the SLO now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaking: Option<[bool; 2]>,
}

impl Standing {
    /// How close the test is to firing, 0–1 (log scale).
    pub fn progress(&self) -> f64 {
        let f = |e: f64, t: f64| if e <= 1.0 { 0.0 } else { (e.ln() / t.ln()).min(1.0) };
        f(self.e_revision, self.threshold_revision).max(f(self.e_epoch, self.threshold_epoch))
    }
}

/// The test that fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fired {
    pub test: Test,
    pub scope: Scope,
    pub e_value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired: Option<Fired>,
    /// Guards stable breaks (the reason for `hold`).
    pub held_by: Vec<Test>,
    pub standings: Vec<Standing>,
    /// One sentence a human reads.
    pub reason: String,
}

impl JudgeState {
    /// Start the next epoch: fresh epoch processes and totals.
    pub fn new_epoch(&mut self, now_ms: u64) {
        self.epoch = self.epoch.max(1) + 1;
        self.epoch_since_ms = now_ms;
        self.epoch_totals = Cell::default();
        for p in self.tests.values_mut() {
            p.epoch = EProcess::default();
            if let Some(slo) = p.slo.as_mut() {
                slo[1] = EProcess::default();
            }
        }
    }

    /// A progression step began: a new epoch, and the step's totals restart.
    pub fn new_step(&mut self, now_ms: u64) {
        self.new_epoch(now_ms);
        self.step_totals = Cell::default();
    }

    /// Is a time-based epoch change due?
    pub fn epoch_due(&self, p: &Analysis, now_ms: u64) -> bool {
        self.epoch >= 1 && now_ms.saturating_sub(self.epoch_since_ms) >= crate::rollout::machine::duration_ms(p.epoch)
    }

    fn thresholds(&self, p: &Analysis, k: usize) -> (f64, f64) {
        let alpha_k = p.alpha / k.max(1) as f64;
        let s = f64::from(self.epoch.max(1));
        (2.0 / alpha_k, 2.0 * s * (s + 1.0) / alpha_k)
    }
}

/// Judge one interval. `ws_rtt`: the route measures WebSocket round trips
/// (the W95 test is in the budget).
pub fn judge(p: &Analysis, st: &mut JudgeState, iv: &Interval, ws_rtt: bool, now_ms: u64) -> Judgement {
    if st.epoch == 0 {
        st.epoch = 1;
        st.epoch_since_ms = now_ms;
    }
    let tests = tests_in_use(p, ws_rtt);
    st.revision_totals.add(&iv.requests);
    st.epoch_totals.add(&iv.requests);
    st.step_totals.add(&iv.requests);
    for t in &tests {
        update(p, *t, st.tests.entry(*t).or_default(), iv);
    }
    let (thr_rev, thr_epoch) = st.thresholds(p, tests.len());
    let mut standings = Vec::with_capacity(tests.len());
    let mut fired: Option<Fired> = None;
    let mut held_by = Vec::new();
    for t in &tests {
        let Some(pr) = st.tests.get(t) else { continue };
        let breaking = pr.detectors.map(|d| [d[0].hot, d[1].hot]);
        if breaking.is_some_and(|b| b[STABLE]) {
            held_by.push(*t);
        }
        let s = Standing {
            test: *t,
            e_revision: pr.revision.value(),
            threshold_revision: thr_rev,
            e_epoch: pr.epoch.value(),
            threshold_epoch: thr_epoch,
            e_slo: pr.slo.map(|s| [s[0].value(), s[1].value()]),
            breaking,
        };
        for (scope, e, thr, totals) in [
            (Scope::Revision, s.e_revision, thr_rev, &st.revision_totals),
            (Scope::Epoch, s.e_epoch, thr_epoch, &st.epoch_totals),
        ] {
            if fires(p, &s, scope, e, thr, totals) && fired.as_ref().is_none_or(|f| e / thr > f.e_value / f.threshold) {
                fired = Some(Fired { test: *t, scope, e_value: e, threshold: thr });
            }
        }
        standings.push(s);
    }
    let canary_in_step = st.step_totals.n(Event::Error, CANARY);
    let verdict = match (&fired, held_by.is_empty()) {
        (Some(_), _) => Verdict::Fail,
        (None, false) => Verdict::Hold,
        (None, true) if canary_in_step >= PASS_FLOOR => Verdict::Pass,
        (None, true) => Verdict::Insufficient,
    };
    let reason = explain(p, st, verdict, fired.as_ref(), &held_by, &standings, canary_in_step, iv.frozen.latency_us);
    Judgement { verdict, fired, held_by, standings, reason }
}

/// Add one interval's evidence to a test's processes.
fn update(p: &Analysis, t: Test, pr: &mut Processes, iv: &Interval) {
    let e = t.event();
    let psi0 = t.psi0(p);
    for sc in &iv.strata {
        let Some(stratum) = sc.stratum else { continue };
        for (proc_, cell) in [(&mut pr.revision, &sc.revision), (&mut pr.epoch, &sc.epoch)] {
            let (n_s, n_c) = (cell.n(e, STABLE), cell.n(e, CANARY));
            // Per user: a bad user is canary with the bucket weight's chance.
            // Per request: with the interval's canary share of requests
            // (fixed by routing, independently of outcomes).
            let q = if stratum.per_user {
                f64::from(sc.weight_bp) / 10_000.0
            } else if n_c + n_s > 0 {
                n_c as f64 / (n_c + n_s) as f64
            } else {
                continue;
            };
            proc_.two_sample(q, psi0, cell.x(e, CANARY), cell.x(e, STABLE));
        }
    }
    if let Some(pi0) = t.pi0(p) {
        let r = &iv.requests;
        let slo = pr.slo.get_or_insert_with(Default::default);
        for s in slo.iter_mut() {
            s.one_sample(pi0, r.x(e, CANARY), r.n(e, CANARY));
        }
        let d = pr.detectors.get_or_insert_with(Default::default);
        d[STABLE].update(pi0, r.x(e, STABLE), r.n(e, STABLE));
        d[CANARY].update(pi0, r.x(e, CANARY), r.n(e, CANARY));
    }
}

fn rate(c: &Cell, e: Event, v: usize) -> f64 {
    let n = c.n(e, v);
    if n == 0 { 0.0 } else { c.x(e, v) as f64 / n as f64 }
}

/// Does test `s` fire in `scope`? The e-value must reach the threshold, and
/// the test's practical gate must hold.
fn fires(p: &Analysis, s: &Standing, scope: Scope, e: f64, thr: f64, totals: &Cell) -> bool {
    if e < thr {
        return false;
    }
    match s.test {
        // A difference too small to matter is not a regression.
        Test::E => {
            (rate(totals, Event::Error, CANARY) - rate(totals, Event::Error, STABLE)) * 100.0 >= p.min_error_delta
        }
        // The canary breaks the SLO (one-sample), is worse than stable on
        // the same line (two-sample, above), and stable is within it.
        g if g.is_guard() => {
            let i = usize::from(scope == Scope::Epoch);
            s.e_slo.is_some_and(|v| v[i] >= thr) && !s.breaking.is_some_and(|b| b[STABLE])
        }
        _ => true,
    }
}

fn pct(x: f64) -> String {
    if x < 0.1 && x > 0.0 { format!("{x:.2} %") } else { format!("{x:.1} %") }
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn num(e: f64) -> String {
    if e >= 1e6 {
        format!("{e:.2e}")
    } else if e >= 10.0 {
        count(e.round() as u64)
    } else {
        format!("{e:.2}")
    }
}

fn ms(us: u64) -> String {
    let m = us as f64 / 1000.0;
    if m >= 10.0 { format!("{m:.0} ms") } else { format!("{m:.1} ms") }
}

/// What "bad" means for a test, in words.
fn line(p: &Analysis, t: Test, iv_frozen: Option<[u64; 3]>) -> String {
    let quant = |i: usize, name: &str| match iv_frozen {
        Some(q) => format!("over stable's {name} ({})", ms(q[i])),
        None => format!("over stable's {name}"),
    };
    let dur = |d: Option<std::time::Duration>| d.map_or_else(String::new, |d| format!(" {} ms", d.as_millis()));
    match t {
        Test::E | Test::GErr => "errors".into(),
        Test::L50 => quant(0, "p50"),
        Test::L95 => quant(1, "p95"),
        Test::L99 => quant(2, "p99"),
        Test::W95 => "WebSocket round trips over stable's p95".into(),
        Test::G95 => format!("requests over max_p95{}", dur(p.max_p95)),
        Test::G99 => format!("requests over max_p99{}", dur(p.max_p99)),
        Test::GRtt => format!("round trips over max_ws_rtt_p95{}", dur(p.max_ws_rtt_p95)),
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    p: &Analysis,
    st: &JudgeState,
    verdict: Verdict,
    fired: Option<&Fired>,
    held_by: &[Test],
    standings: &[Standing],
    canary_in_step: u64,
    frozen: Option<[u64; 3]>,
) -> String {
    match verdict {
        Verdict::Fail => {
            let Some(f) = fired else { return "fail".into() };
            let totals = if f.scope == Scope::Revision { &st.revision_totals } else { &st.epoch_totals };
            let e = f.test.event();
            let unit = if e.is_rtt() { "round trips" } else { "requests" };
            let scope = match f.scope {
                Scope::Revision => "since the revision started".to_string(),
                Scope::Epoch => format!("in epoch {}", st.epoch.max(1)),
            };
            let what = line(p, f.test, frozen);
            let tol = if matches!(f.test, Test::L50 | Test::L95 | Test::L99 | Test::W95) && p.latency_tolerance > 0.0 {
                format!(" (canary's line × {:.2})", 1.0 + p.latency_tolerance)
            } else {
                String::new()
            };
            format!(
                "test {} fired {scope}: canary {what}{tol} {} vs stable {} over {} vs {} {unit}; evidence {} ≥ {}",
                f.test.as_str(),
                pct(rate(totals, e, CANARY) * 100.0),
                pct(rate(totals, e, STABLE) * 100.0),
                count(totals.n(e, CANARY)),
                count(totals.n(e, STABLE)),
                num(f.e_value),
                num(f.threshold),
            )
        }
        Verdict::Hold => {
            let parts: Vec<String> = held_by
                .iter()
                .map(|t| {
                    let e = t.event();
                    let c = &st.epoch_totals;
                    format!(
                        "{} ({}: stable {}, canary {})",
                        t.as_str(),
                        line(p, *t, None),
                        pct(rate(c, e, STABLE) * 100.0),
                        pct(rate(c, e, CANARY) * 100.0)
                    )
                })
                .collect();
            format!(
                "hold: stable breaks the SLO too, so the canary is not blamed; no step, no rollback: {}",
                parts.join("; ")
            )
        }
        Verdict::Pass | Verdict::Insufficient => {
            let top = standings.iter().max_by(|a, b| a.progress().total_cmp(&b.progress()));
            let lead = top.map_or(String::new(), |s| {
                let (e, t) = if s.e_revision / s.threshold_revision >= s.e_epoch / s.threshold_epoch {
                    (s.e_revision, s.threshold_revision)
                } else {
                    (s.e_epoch, s.threshold_epoch)
                };
                format!("; strongest evidence {} {} of {}", s.test.as_str(), num(e), num(t))
            });
            if verdict == Verdict::Pass {
                format!("no test crossed over {} canary requests this step{lead}", count(canary_in_step))
            } else {
                format!(
                    "no test crossed; {} canary requests this step (a pass needs {PASS_FLOOR}){lead}",
                    count(canary_in_step)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
