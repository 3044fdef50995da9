//! The judge: one interval's counts plus the persisted state in, a verdict
//! with its explanation out. Pure: time is passed in, nothing is read or
//! written elsewhere, so every branch is unit-tested and the simulation bench
//! drives exactly this code.
//!
//! Per test, one e-process runs since the canary revision started and one
//! per epoch (a fresh one at every progression step and every
//! `analysis.epoch` within a step). The test's α/K is shared over these
//! start times: ¾ to the revision's start, the rest flat over the first
//! `FLAT_STARTS` epochs (an hour at the default 60 s) and thinning after, so
//! a regression that starts at any moment in the first hour costs the same
//! fixed amount of extra evidence and is not buried under the healthy hour
//! before it. A start s fires when w_s·e_s reaches K/α (a union bound: each
//! process need only be valid on its own counts, which per-user epoch
//! counts are, while a sum of them would need one history for all).
//!
//! The α budget is split over the tests that can roll back (E, the latency
//! tests, W95): SLO guards only ever hold, so they spend none. Within a
//! revision a threshold never falls: the budget remembers the smallest
//! `alpha` and the most tests it was ever split over.
//!
//! While stable is out of an SLO the tests that roll back sit out (`outage`).

use super::counts::{CANARY, Cell, Event, Interval, STABLE};
use super::eprocess::{Detector, EProcess};
use super::rank::RankProcess;
use crate::routing::policy::Analysis;
use sentence::{Found, explain};
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
    /// Latency: each request's rank in stable's distribution (`rank`).
    R,
    /// WebSocket ping round trip above stable's p95.
    W95,
    /// Guard: `max_error_rate`.
    #[serde(rename = "G_error")]
    GErr,
    /// Guard: `max_p95`.
    #[serde(rename = "G_p95")]
    G95,
    /// Guard: `max_p99`.
    #[serde(rename = "G_p99")]
    G99,
    /// Guard: `max_ws_rtt_p95`.
    #[serde(rename = "G_ws_rtt")]
    GRtt,
}

impl Test {
    pub const ALL: [Test; 7] = [Test::E, Test::R, Test::W95, Test::GErr, Test::G95, Test::G99, Test::GRtt];

    /// The name in journals, views and metric labels (also its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Test::E => "E",
            Test::R => "R",
            Test::W95 => "W95",
            Test::GErr => "G_error",
            Test::G95 => "G_p95",
            Test::G99 => "G_p99",
            Test::GRtt => "G_ws_rtt",
        }
    }

    /// A name from a journal or state file; None for a retired test
    /// (L50/L95/L99/L999, replaced by R).
    pub fn from_name(s: &str) -> Option<Test> {
        Test::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The event whose counts the test reads (R reads the rank bins and,
    /// for its totals, the error event's units).
    pub fn event(self) -> Event {
        match self {
            Test::E | Test::GErr | Test::R => Event::Error,
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

/// The tests a route runs (guards included; the α budget is split over
/// those that are not guards, see `budget_tests`).
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

/// How many tests share α: those in use that can roll back.
pub fn budget_tests(tests: &[Test]) -> usize {
    tests.iter().filter(|t| !t.is_guard()).count()
}

/// One test's e-processes in one scope.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TestRun {
    /// Canary against stable (all tests but R).
    pub two: EProcess,
    /// R: canary's ranks against stable's distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<RankProcess>,
    /// Guards: canary's tail share against the SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<EProcess>,
}

impl TestRun {
    /// The test's e-value in this scope.
    pub fn value(&self) -> f64 {
        self.rank.map_or_else(|| self.two.value(), |r| r.value())
    }

    pub fn log_value(&self) -> f64 {
        self.rank.map_or_else(|| self.two.log_value(), |r| r.log_value())
    }
}

/// Reads a test map, leaving out tests this version no longer has (a state
/// saved by a version with L50–L999 still loads, latch and all).
fn known_tests<'de, D: serde::Deserializer<'de>, V: Deserialize<'de>>(d: D) -> Result<BTreeMap<Test, V>, D::Error> {
    let all = BTreeMap::<String, V>::deserialize(d)?;
    Ok(all.into_iter().filter_map(|(k, v)| Some((Test::from_name(&k)?, v))).collect())
}

fn known_test_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Test>, D::Error> {
    let all = Vec::<String>::deserialize(d)?;
    Ok(all.iter().filter_map(|k| Test::from_name(k)).collect())
}

/// A stretch of the rollout with its own e-processes: the whole revision
/// (epoch 0), or one epoch s ≥ 1 (a step, or `analysis.epoch` of one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScopeState {
    pub epoch: u32,
    pub since_ms: u64,
    /// Request-level totals over the scope (rates, the E gate, sentences).
    pub totals: Cell,
    #[serde(deserialize_with = "known_tests")]
    pub tests: BTreeMap<Test, TestRun>,
}

/// Epoch processes kept alive at once. An epoch's process keeps running
/// after the next one starts, so evidence that straddles an epoch boundary
/// is not thrown away; past this many, the weakest old one is dropped
/// (stopping a test early never raises its false-alarm chance).
pub const LIVE_EPOCHS: usize = 8;

/// What the judge remembers; persisted with the rollout state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JudgeState {
    /// Number of the newest epoch, s ≥ 1 (0 only before the first interval).
    pub epoch: u32,
    /// `scopes[0]`: since the revision started; then live epochs, oldest first.
    pub scopes: Vec<ScopeState>,
    /// Request-level totals of the current progression step.
    pub step_totals: Cell,
    /// Guards: is each version (stable, canary) out of the SLO right now?
    #[serde(deserialize_with = "known_tests")]
    pub detectors: BTreeMap<Test, [Detector; 2]>,
    /// The lines the interval after the latest verdict is classified with
    /// (kept so a restart classifies with them too).
    pub frozen: super::counts::Frozen,
    /// Scopes of an epoch below this are closed: they take no more
    /// evidence (their counted-user filters were lost) and so can no longer
    /// fire. 0: none closed.
    pub closed_below: u32,
    /// The smallest `alpha` this revision was judged with (0: not yet).
    pub alpha_floor: f64,
    /// The most tests this revision's α was ever split over.
    pub k_ceiling: usize,
    /// The tests that share α, fixed when the revision was first judged: a
    /// test that joins later (a reload turns on WebSocket round trips) has
    /// no share and is shown but never fires until the next revision.
    #[serde(deserialize_with = "known_test_list")]
    pub budgeted: Vec<Test>,
    /// The episode of stable being out of an SLO, if one is on.
    pub outage: Option<Outage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Revision,
    Epoch(u32),
}

/// One test's standing after an interval: the revision scope, and the live
/// epoch closest to firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub test: Test,
    /// The mixture over start times the test is judged on, and the value
    /// at which it fires (K/α).
    pub e_weighted: f64,
    pub threshold: f64,
    pub e_revision: f64,
    pub threshold_revision: f64,
    pub epoch: u32,
    pub e_epoch: f64,
    pub threshold_epoch: f64,
    /// Guards: canary's one-sample e-values (revision, that epoch).
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
        f(self.e_weighted, self.threshold)
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
    /// The tests that roll back did not take this interval: stable was out
    /// of an SLO when it began.
    pub sat_out: bool,
}

impl JudgeState {
    fn start(&mut self, now_ms: u64) {
        if self.epoch == 0 || self.scopes.is_empty() {
            self.epoch = 1;
            self.scopes = vec![
                ScopeState { epoch: 0, since_ms: now_ms, ..ScopeState::default() },
                ScopeState { epoch: 1, since_ms: now_ms, ..ScopeState::default() },
            ];
        }
    }

    /// Start the next epoch: a fresh process per test; older epochs live on
    /// (up to `LIVE_EPOCHS`).
    pub fn new_epoch(&mut self, now_ms: u64) {
        self.start(now_ms);
        self.epoch += 1;
        self.scopes.push(ScopeState { epoch: self.epoch, since_ms: now_ms, ..ScopeState::default() });
        while self.scopes.len() > LIVE_EPOCHS + 1 {
            // Drop the old epoch (never the revision, never the newest) whose
            // strongest test is weakest.
            let strength = |s: &ScopeState| s.tests.values().map(TestRun::log_value).fold(f64::NEG_INFINITY, f64::max);
            let last = self.scopes.len() - 1;
            let weakest = (1..last).min_by(|a, b| strength(&self.scopes[*a]).total_cmp(&strength(&self.scopes[*b])));
            match weakest {
                Some(i) => {
                    self.scopes.remove(i);
                }
                None => break,
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
        let since = self.scopes.last().map_or(now_ms, |s| s.since_ms);
        self.epoch >= 1 && now_ms.saturating_sub(since) >= crate::units::duration_ms(p.epoch)
    }

    /// Since the revision started.
    pub fn revision(&self) -> Option<&ScopeState> {
        self.scopes.first()
    }

    /// The counted-user filters were lost (unreadable after a restart):
    /// users already counted could be counted again by every live scope,
    /// so those scopes take no more per-user evidence (α they spent stays
    /// spent; per-request evidence, which needs no filter, goes on) and
    /// per-user evidence goes on in a new epoch that counts users afresh.
    pub fn filters_lost(&mut self, now_ms: u64) {
        if self.epoch == 0 {
            return; // nothing judged yet: nothing to close
        }
        self.new_epoch(now_ms);
        self.closed_below = self.epoch;
    }

    /// `alpha` and the number of tests for this interval's thresholds: the
    /// smallest α seen in this revision and the tests that shared it from
    /// its start, so a reload that raises `alpha` or drops a test never
    /// lowers a running threshold, and one that adds a test gives it no α.
    fn budget(&mut self, alpha: f64, tests: &[Test]) -> (f64, usize) {
        if self.alpha_floor <= 0.0 || alpha < self.alpha_floor {
            self.alpha_floor = alpha;
        }
        if self.budgeted.is_empty() {
            self.budgeted = tests.iter().copied().filter(|t| !t.is_guard()).collect();
        }
        self.k_ceiling = self.k_ceiling.max(self.budgeted.len());
        (self.alpha_floor, self.k_ceiling)
    }
}

/// Judge one interval. `ws_rtt`: the route measures WebSocket round trips
/// (the W95 test is in the budget).
pub fn judge(p: &Analysis, st: &mut JudgeState, iv: &Interval, ws_rtt: bool, now_ms: u64) -> Judgement {
    st.start(now_ms);
    let tests = tests_in_use(p, ws_rtt);
    // Decided before this interval's counts: the tests sit out an interval
    // only on what was known when it began, so each e-process stays valid.
    let paused = sitting_out(st, &tests, now_ms);
    add_interval(p, st, iv, &tests, paused);
    outage::note(st, &tests, now_ms);
    let (alpha, k) = st.budget(p.alpha, &tests);
    let mut standings = Vec::with_capacity(tests.len());
    let mut fired: Option<Fired> = None;
    let mut held_by = Vec::new();
    for t in &tests {
        let (standing, lead) = stand(p, st, *t, alpha, k);
        // A guard holds when either version is out of its SLO: with stable
        // out too the canary is not to blame; with canary alone out it is
        // for E and the latency tests to say, against stable.
        if standing.breaking.is_some_and(|b| b[STABLE] || b[CANARY]) {
            held_by.push(*t);
        }
        if let Some(lead) = lead
            && fired.as_ref().is_none_or(|f| lead.e_value / lead.threshold > f.e_value / f.threshold)
        {
            fired = Some(lead);
        }
        standings.push(standing);
    }
    // While stable breaks an SLO nothing is rolled back: the service is in
    // trouble, and what the canary does then is not a verdict on it.
    let sits_out = sitting_out(st, &tests, now_ms);
    if sits_out {
        fired = None;
    }
    let canary_in_step = st.step_totals.n(Event::Error, CANARY);
    // A step passes only on an interval the tests took.
    let passable = !paused && canary_in_step >= PASS_FLOOR;
    let verdict = verdict_of(fired.is_some(), !held_by.is_empty(), passable);
    let found = Found { verdict, fired: fired.as_ref(), held_by: &held_by, standings: &standings, sits_out, paused };
    let reason = explain(p, st, &found, canary_in_step);
    Judgement { verdict, fired, held_by, standings, reason, sat_out: paused }
}

/// Add one interval's counts to the step's totals, to every live scope's
/// processes, and to the guards' SLO detectors. `paused`: stable was out of
/// an SLO when the interval began, so the tests that roll back take none of
/// it (the guards still do, to see the outage end).
fn add_interval(p: &Analysis, st: &mut JudgeState, iv: &Interval, tests: &[Test], paused: bool) {
    // The step's totals are what a pass stands on: judged requests only.
    if !paused {
        st.step_totals.add(&iv.requests);
    }
    let newest = st.epoch;
    let closed_below = st.closed_below;
    for scope in &mut st.scopes {
        scope.totals.add(&iv.requests);
        // Closed: its users can no longer be told apart from new ones.
        let users = scope.epoch >= closed_below;
        // Per-user strata: the newest epoch dedupes users within itself;
        // the revision and older epochs take users counted once per
        // revision (a subset of their own first events: still valid).
        let use_epoch_cells = scope.epoch == newest;
        for t in tests.iter().filter(|t| t.is_guard() || !paused) {
            update(p, *t, scope.tests.entry(*t).or_default(), iv, (use_epoch_cells, users));
        }
    }
    for t in tests.iter().filter(|t| t.is_guard()) {
        if let Some(pi0) = t.pi0(p) {
            let e = t.event();
            let d = st.detectors.entry(*t).or_default();
            d[STABLE].update(pi0, iv.requests.x(e, STABLE), iv.requests.n(e, STABLE));
            d[CANARY].update(pi0, iv.requests.x(e, CANARY), iv.requests.n(e, CANARY));
        }
    }
}

/// Test `t`'s standing over the live scopes, and the start that fires it
/// (the strongest of those that fire), if any.
fn stand(p: &Analysis, st: &JudgeState, t: Test, alpha: f64, k: usize) -> (Standing, Option<Fired>) {
    let breaking = st.detectors.get(&t).map(|d| [d[0].hot, d[1].hot]);
    let mut best_epoch: Option<(u32, f64, f64, Option<f64>)> = None;
    let mut rev = (1.0, threshold(alpha, k, 0), None);
    // The strongest start, weighted by its share: it fires at K/α.
    let budgeted = st.budgeted.contains(&t);
    let mut lead: Option<(&ScopeState, f64)> = None;
    let mut best_part = 0.0f64;
    for scope in &st.scopes {
        let Some(run) = scope.tests.get(&t) else { continue };
        let thr = threshold(alpha, k, scope.epoch);
        let (e, e_slo) = (run.value(), run.slo.map(|s| s.value()));
        if scope.epoch == 0 {
            rev = (e, thr, e_slo);
        } else if best_epoch.is_none_or(|b| e / thr > b.1 / b.2) {
            best_epoch = Some((scope.epoch, e, thr, e_slo));
        }
        let part = start_weight(scope.epoch) * e;
        if budgeted && fires(p, t, part, weighted_threshold(alpha, k), &scope.totals) {
            // Of the starts that fire, the strongest names the scope.
            if lead.is_none_or(|(_, p)| part > p) {
                lead = Some((scope, part));
            }
        }
        best_part = best_part.max(part);
    }
    let limit = weighted_threshold(alpha, k);
    let fired = lead.map(|(scope, e_weighted)| {
        let which = if scope.epoch == 0 { Scope::Revision } else { Scope::Epoch(scope.epoch) };
        Fired { test: t, scope: which, e_value: e_weighted, threshold: limit }
    });
    let (epoch, e_epoch, threshold_epoch, slo_epoch) =
        best_epoch.unwrap_or((st.epoch, 1.0, threshold(alpha, k, st.epoch), None));
    let standing = Standing {
        test: t,
        e_weighted: best_part,
        threshold: limit,
        e_revision: rev.0,
        threshold_revision: rev.1,
        epoch,
        e_epoch,
        threshold_epoch,
        e_slo: t.is_guard().then(|| [rev.2.unwrap_or(1.0), slo_epoch.unwrap_or(1.0)]),
        breaking,
    };
    (standing, fired)
}

/// The verdict: a fired test fails; else a guard holds; else a pass once
/// the step has `PASS_FLOOR` judged canary requests and the tests took this
/// interval.
fn verdict_of(fired: bool, held: bool, passable: bool) -> Verdict {
    match (fired, held) {
        (true, _) => Verdict::Fail,
        (false, true) => Verdict::Hold,
        (false, false) if passable => Verdict::Pass,
        (false, false) => Verdict::Insufficient,
    }
}

/// Add one interval's evidence to a test's processes in one scope.
/// `(use_epoch_cells, users)`: which per-user counts this scope takes, and
/// whether it takes any (not once its filters were lost).
fn update(p: &Analysis, t: Test, run: &mut TestRun, iv: &Interval, (use_epoch_cells, users): (bool, bool)) {
    if t == Test::R {
        return update_rank(run, iv, (use_epoch_cells, users));
    }
    let e = t.event();
    let psi0 = t.psi0(p);
    for sc in &iv.strata {
        let Some(stratum) = sc.stratum else { continue };
        let cell = if use_epoch_cells { &sc.epoch } else { &sc.revision };
        let (n_s, n_c, x_s, x_c) = (cell.n(e, STABLE), cell.n(e, CANARY), cell.x(e, STABLE), cell.x(e, CANARY));
        if stratum.per_user {
            if !users {
                continue;
            }
            // A bad user is canary with the bucket weight's chance.
            let w = 1.0 / f64::from(iv.user_multiplicity.max(1));
            run.two.two_sample_weighted(f64::from(sc.weight_bp) / 10_000.0, psi0, x_c, x_s, w);
        } else {
            // Requests: exact, conditional on the interval's split (fixed by
            // routing independently of outcomes) and its bad total.
            run.two.two_sample_exact(n_c, n_s, x_c, x_s, psi0);
        }
    }
    if let Some(pi0) = t.pi0(p) {
        let r = &iv.requests;
        run.slo.get_or_insert_with(EProcess::default).one_sample(pi0, r.x(e, CANARY), r.n(e, CANARY));
    }
}

/// Test R: each stratum's rank counts, at the weights they were routed with.
fn update_rank(run: &mut TestRun, iv: &Interval, (use_epoch_cells, users): (bool, bool)) {
    let r = run.rank.get_or_insert_with(RankProcess::default);
    for sc in &iv.strata {
        let Some(stratum) = sc.stratum else { continue };
        let cell = if use_epoch_cells { &sc.epoch } else { &sc.revision };
        let (lo, hi) = sc.weights();
        let unit = if stratum.per_user {
            if !users {
                continue;
            }
            1.0 / f64::from(iv.user_multiplicity.max(1))
        } else {
            1.0
        };
        r.update(&cell.rank, lo, hi, unit);
    }
}

fn rate(c: &Cell, e: Event, v: usize) -> f64 {
    let n = c.n(e, v);
    if n == 0 { 0.0 } else { c.x(e, v) as f64 / n as f64 }
}

/// Does test `t` fire in a scope? The e-value must reach the threshold, and
/// the test's practical gate must hold. Guards never fire: they hold.
fn fires(p: &Analysis, t: Test, e: f64, thr: f64, totals: &Cell) -> bool {
    if e < thr || t.is_guard() {
        return false;
    }
    match t {
        // A difference too small to matter is not a regression.
        Test::E => {
            (rate(totals, Event::Error, CANARY) - rate(totals, Event::Error, STABLE)) * 100.0 >= p.min_error_delta
        }
        _ => true,
    }
}

mod outage;
mod sentence;
mod starts;
use outage::sitting_out;
pub use outage::{Outage, SIT_OUT_MAX_MS};
pub use starts::{FLAT_STARTS, start_weight, threshold, weighted_threshold};
#[cfg(test)]
mod tests;
