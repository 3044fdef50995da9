//! One route's fleet judgement, pure: the rollout state every replica
//! computes from the same evaluation steps, and how a replica's served
//! state follows it.
//!
//! The fold is the replicated state machine: it changes only at evaluation
//! times, only from what Prometheus said about those times (evidence,
//! steering, position), so a replica that restarts and replays the history
//! since the revision began ends in the same state as one that never
//! stopped. What a replica *serves* may run ahead of the fold: a latch or a
//! resume sent to it (or seen in the fleet a moment ago) applies at once,
//! and the fold catches up at the next evaluation time that shows it.

use super::control::{self, Control, KILLED, PAUSED, ROLLED_BACK};
use super::fold::{Baseline, Evaluation};
use crate::analysis::machine::RouteState;
use crate::analysis::machine::Transition;
use crate::analysis::{Interval, Judgement, Test, Verdict, judge};
use crate::labels::RollbackReason;
use crate::routing::policy::{Analysis, Progression};

#[derive(Debug, Clone, PartialEq)]
pub struct FleetFold {
    pub revision: String,
    /// Evaluation time before the first one with evidence: where a replica
    /// that joins later starts its replay (exported, the fleet takes the min).
    pub start_ms: Option<u64>,
    /// Latest evaluation time folded.
    pub through_ms: Option<u64>,
    pub base: Baseline,
    /// Steering epoch the state belongs to.
    pub epoch: u64,
    pub state: RouteState,
    /// The α budget this replica's saved state had for the revision (the
    /// smallest `alpha`, the tests sharing it): a replay after a restart
    /// judges with it, not with a larger `alpha` a reload brought since.
    pub budget: Option<(f64, Vec<Test>)>,
}

/// What one evaluation time did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub at_ms: u64,
    /// None while the canary is rolled back or killed (nothing judged).
    pub judgement: Option<Judgement>,
    pub transition: Transition,
    /// Steering the fleet applied at this time (`resume`, `rollback`, …).
    pub steered: Vec<&'static str>,
    pub interval: Interval,
    /// The route's state right after this time was folded: what the
    /// journal line for this time describes (not the state at the end of
    /// a catch-up batch).
    pub state: RouteState,
}

impl FleetFold {
    pub fn new(revision: &str, progression: Option<&Progression>) -> Self {
        Self {
            revision: revision.to_owned(),
            start_ms: None,
            through_ms: None,
            base: Baseline::default(),
            epoch: 0,
            state: RouteState::fresh(revision, progression, 0),
            budget: None,
        }
    }

    /// Replay with the α budget a saved state had (see `budget`).
    pub fn with_budget(mut self, saved: &RouteState) -> Self {
        if saved.revision == self.revision && saved.judge.alpha_floor > 0.0 {
            self.budget = Some((saved.judge.alpha_floor, saved.judge.budgeted.clone()));
        }
        self
    }

    pub fn began(&self) -> bool {
        self.start_ms.is_some()
    }

    pub fn control(&self) -> Control {
        Control { epoch: self.epoch, rank: Control::rank_of(&self.state) }
    }

    pub fn position(&self) -> u64 {
        control::position(self.epoch, self.state.step)
    }

    /// Fold one evaluation time. `prev_ms`: the evaluation time before it.
    /// Returns None before the revision's first evidence.
    pub fn apply(
        &mut self,
        a: &Analysis,
        progression: Option<&Progression>,
        ws_rtt: bool,
        step: &Evaluation,
        prev_ms: u64,
    ) -> Option<Outcome> {
        let at = step.at_ms;
        self.through_ms = Some(at);
        if !self.began() {
            if !step.has_evidence() {
                return None;
            }
            self.start_ms = Some(prev_ms);
            self.state = RouteState::fresh(&self.revision, progression, prev_ms);
            if let Some((alpha, tests)) = &self.budget {
                self.state.judge.alpha_floor = *alpha;
                self.state.judge.budgeted = tests.clone();
            }
        }
        let mut steered = Vec::new();
        if let Some(c) = step.control {
            steered.extend(self.steer(c, progression, at));
        }
        if let Some(p) = step.position {
            steered.extend(self.promote_to(p, progression, at));
        }
        let st = &mut self.state;
        if st.rolled_back.is_some() || st.killed {
            return Some(Outcome {
                at_ms: at,
                judgement: None,
                transition: Transition::None,
                steered,
                interval: step.interval.clone(),
                state: st.clone(),
            });
        }
        let mut j = judge(a, &mut st.judge, &step.interval, ws_rtt, at);
        if j.verdict == Verdict::Pass && !step.has_evidence() {
            // A time with no evidence of its own (the source had none, e.g.
            // while Prometheus was down) does not step the canary forward on
            // what came before it.
            j.verdict = Verdict::Insufficient;
            j.reason = format!("no evidence at this time; a step waits for its own: {}", j.reason);
        }
        let t = st.on_verdict(&j, a.mode, progression, at);
        match t {
            Transition::Advanced { .. } | Transition::Promoted => st.judge.new_step(at),
            Transition::None if st.judge.epoch_due(a, at) => st.judge.new_epoch(at),
            _ => {}
        }
        let state = st.clone();
        Some(Outcome { at_ms: at, judgement: Some(j), transition: t, steered, interval: step.interval.clone(), state })
    }

    /// Follow the fleet's steering as of an evaluation time.
    fn steer(&mut self, c: Control, progression: Option<&Progression>, at: u64) -> Vec<&'static str> {
        let mut done = Vec::new();
        if c.epoch > self.epoch {
            lift(&mut self.state, &self.revision, progression, at);
            self.epoch = c.epoch;
            done.push("resume");
        }
        if c.epoch == self.epoch {
            done.extend(latch(&mut self.state, c.rank, RollbackReason::Admin, progression, at));
        }
        done
    }

    /// An admin `promote` somewhere in the fleet: walk to its step.
    fn promote_to(&mut self, p: u64, progression: Option<&Progression>, at: u64) -> Vec<&'static str> {
        let (epoch, step) = control::decode_position(p);
        let mut done = Vec::new();
        if epoch != self.epoch {
            return done;
        }
        while self.state.step.is_some_and(|s| s < step) {
            match self.state.promote(progression, at) {
                Ok(Transition::Advanced { .. } | Transition::Promoted) => {
                    self.state.judge.new_step(at);
                    done.push("promote");
                    if self.state.promoted {
                        break;
                    }
                }
                _ => break,
            }
        }
        done
    }

    /// What this replica serves: the fold, with steering it knows of that
    /// the fold has not reached yet (`ctl`: the highest of its own admin
    /// calls, the fleet's latest and the fold's). A rollback served ahead
    /// of the fold is labelled `ahead`: `Admin` when it is this replica's
    /// own admin call, `Fleet` when another replica latched first (by
    /// judgement or by admin there). Once the fold reaches that evaluation
    /// time, its own reason replaces it.
    pub fn served(&self, ctl: Control, ahead: RollbackReason, progression: Option<&Progression>) -> RouteState {
        let mut s = self.state.clone();
        let at = self.through_ms.unwrap_or(0);
        if ctl.epoch > self.epoch {
            lift(&mut s, &self.revision, progression, at);
        }
        if ctl.epoch >= self.epoch {
            latch(&mut s, ctl.rank, ahead, progression, at);
        }
        s
    }
}

/// A new epoch: a rolled-back canary starts over (first step, judged
/// afresh); a killed or paused one carries on where it was.
fn lift(st: &mut RouteState, revision: &str, progression: Option<&Progression>, at: u64) {
    if st.rolled_back.is_some() {
        *st = RouteState::fresh(revision, progression, at);
    } else {
        st.paused = false;
        st.killed = false;
    }
}

fn latch(
    st: &mut RouteState,
    rank: u8,
    reason: RollbackReason,
    progression: Option<&Progression>,
    at: u64,
) -> Option<&'static str> {
    match rank {
        ROLLED_BACK if st.rolled_back.is_none() => {
            st.rollback(reason, at);
            Some("rollback")
        }
        KILLED if !st.killed && st.rolled_back.is_none() => {
            st.killed = true;
            Some("kill")
        }
        PAUSED if !st.paused && progression.is_some() && st.rolled_back.is_none() => {
            st.paused = true;
            Some("pause")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{CANARY, Cell, Event, STABLE, Verdict};
    use crate::fleet::control::RUNNING;
    use std::time::Duration;

    fn prog() -> Progression {
        Progression { steps: vec![1000, 5000, 10000], hold: Duration::from_secs(20) }
    }

    fn step(at: u64, errors: [u64; 2], control: Option<Control>) -> Evaluation {
        let mut c = Cell::default();
        c.n[Event::Error.idx()][STABLE] = 900;
        c.n[Event::Error.idx()][CANARY] = 100;
        c.x[Event::Error.idx()] = errors;
        let stratum = crate::analysis::Stratum { segment: None, per_user: false };
        let iv = Interval {
            strata: vec![crate::analysis::StratumCounts {
                stratum: Some(stratum),
                weight_bp: 1000,
                weight_min_bp: 0,
                revision: c,
                epoch: c,
            }],
            requests: c,
            ..Interval::default()
        };
        Evaluation { at_ms: at, interval: iv, control, position: None }
    }

    #[test]
    fn nothing_happens_before_the_first_evidence_and_then_it_begins() {
        let a = Analysis::default();
        let p = prog();
        let mut f = FleetFold::new("2", Some(&p));
        let empty = Evaluation { at_ms: 10, interval: Interval::default(), control: None, position: None };
        assert!(f.apply(&a, Some(&p), false, &empty, 0).is_none());
        assert!(!f.began());
        let o = f.apply(&a, Some(&p), false, &step(20, [1, 0], None), 10).unwrap();
        assert_eq!(f.start_ms, Some(10));
        assert_eq!(o.judgement.unwrap().verdict, Verdict::Pass);
    }

    /// Catching up after a source outage: a missed time with no evidence
    /// of its own does not step the canary on what came before, and each
    /// time's outcome carries the state at that time, not the state after
    /// the batch (whose last time rolled the canary back).
    #[test]
    fn a_catch_up_steps_only_on_evidence_of_its_own_time_and_each_time_keeps_its_state() {
        let a = Analysis::default();
        let p = prog();
        let mut f = FleetFold::new("2", Some(&p));
        // Healthy evidence up to 10 s before the hold would end.
        f.apply(&a, Some(&p), false, &step(10_000, [1, 0], None), 0);
        let mut prev = 10_000;
        assert_eq!(f.state.step, Some(0));
        // The outage: two times with nothing (the hold ends meanwhile), then
        // the evidence gathered during it, bad.
        let empty = |t| Evaluation { at_ms: t, interval: Interval::default(), control: None, position: None };
        let mut outcomes = Vec::new();
        for (t, s) in [(20_000, empty(20_000)), (30_000, empty(30_000)), (40_000, empty(40_000))] {
            outcomes.push(f.apply(&a, Some(&p), false, &s, prev).unwrap());
            prev = t;
        }
        for o in &outcomes {
            assert_eq!(o.transition, Transition::None, "no step on a time without evidence");
            assert_eq!(o.judgement.as_ref().map(|j| j.verdict), Some(Verdict::Insufficient));
            assert_eq!(o.state.step, Some(0));
        }
        let mut t = 40_000;
        let rolled_at = loop {
            t += 10_000;
            let o = f.apply(&a, Some(&p), false, &step(t, [0, 30], None), t - 10_000).unwrap();
            outcomes.push(o);
            if matches!(outcomes.last().map(|o| o.transition), Some(Transition::RolledBack(_))) {
                break outcomes.len() - 1;
            }
            assert!(t < 1_000_000);
        };
        assert!(f.state.rolled_back.is_some());
        for o in &outcomes[..rolled_at] {
            assert!(o.state.rolled_back.is_none(), "a time before the rollback is journaled as it was then");
        }
        assert!(outcomes[rolled_at].state.rolled_back.is_some());
    }

    /// A replica that restarts replays with the α budget its saved state
    /// had, not with a larger `alpha` a reload brought since (which would be
    /// a fresh, looser budget for the same revision).
    #[test]
    fn a_replay_after_a_restart_keeps_the_saved_alpha_budget() {
        let p = prog();
        let strict = Analysis::default();
        let mut before = FleetFold::new("2", Some(&p));
        before.apply(&strict, Some(&p), false, &step(10_000, [1, 0], None), 0);
        let saved = before.state.clone();
        assert_eq!(saved.judge.alpha_floor, strict.alpha);
        let looser = Analysis { alpha: 0.05, ..Analysis::default() };
        let mut again = FleetFold::new("2", Some(&p)).with_budget(&saved);
        let o = again.apply(&looser, Some(&p), false, &step(10_000, [1, 0], None), 0).unwrap();
        let k = saved.judge.budgeted.len() as f64;
        assert_eq!(o.judgement.unwrap().standings[0].threshold, k / strict.alpha);
        // Without a saved state (a replica that never saw the revision) the
        // config's alpha applies: documented as a fleet limit.
        let mut fresh = FleetFold::new("2", Some(&p));
        let o = fresh.apply(&looser, Some(&p), false, &step(10_000, [1, 0], None), 0).unwrap();
        assert_eq!(o.judgement.unwrap().standings[0].threshold, k / looser.alpha);
        // Another revision's saved state is not used.
        assert_eq!(FleetFold::new("3", Some(&p)).with_budget(&saved).budget, None);
    }

    #[test]
    fn a_bad_canary_is_rolled_back_and_a_fleet_resume_starts_it_over() {
        let a = Analysis::default();
        let p = prog();
        let mut f = FleetFold::new("2", Some(&p));
        let mut t = 0;
        let rolled = loop {
            t += 10_000;
            let o = f.apply(&a, Some(&p), false, &step(t, [0, 8], None), t - 10_000).unwrap();
            if let Transition::RolledBack(r) = o.transition {
                break r;
            }
            assert!(t < 1_000_000);
        };
        assert_eq!(rolled, RollbackReason::ErrorRate);
        assert_eq!(f.control(), Control { epoch: 0, rank: ROLLED_BACK });
        // Nothing is judged while latched, whatever arrives.
        let o = f.apply(&a, Some(&p), false, &step(t + 10_000, [0, 50], Some(f.control())), t).unwrap();
        assert!(o.judgement.is_none());
        // A resume elsewhere (epoch 1) reaches the fold: step 0, fresh judge.
        let o = f
            .apply(&a, Some(&p), false, &step(t + 20_000, [0, 0], Some(Control { epoch: 1, rank: RUNNING })), t)
            .unwrap();
        assert_eq!(o.steered, vec!["resume"]);
        assert_eq!(f.state.rolled_back, None);
        assert_eq!(f.state.step, Some(0));
        assert_eq!(f.state.judge.revision().map(|s| s.totals.n(Event::Error, CANARY)), Some(100));
    }

    #[test]
    fn served_runs_ahead_of_the_fold_and_never_behind() {
        let p = prog();
        let mut f = FleetFold::new("2", Some(&p));
        f.state.step = Some(1);
        // An admin rollback here, before the fold has seen it.
        let s = f.served(Control { epoch: 0, rank: ROLLED_BACK }, RollbackReason::Fleet, Some(&p));
        assert_eq!(s.rolled_back.map(|l| l.reason), Some(RollbackReason::Fleet));
        // A stale lower value changes nothing.
        f.epoch = 2;
        let s = f.served(Control { epoch: 1, rank: ROLLED_BACK }, RollbackReason::Admin, Some(&p));
        assert!(s.rolled_back.is_none());
        // Pause then resume keeps the step.
        f.state.paused = true;
        let s = f.served(Control { epoch: 3, rank: RUNNING }, RollbackReason::Admin, Some(&p));
        assert!(!s.paused);
        assert_eq!(s.step, Some(1));
    }

    #[test]
    fn a_promote_anywhere_moves_every_fold_to_that_step() {
        let a = Analysis::default();
        let p = prog();
        let mut f = FleetFold::new("2", Some(&p));
        f.apply(&a, Some(&p), false, &step(10, [0, 0], None), 0);
        let mut s = step(20, [0, 0], None);
        s.position = Some(control::position(0, Some(1)));
        let o = f.apply(&a, Some(&p), false, &s, 10).unwrap();
        assert_eq!(o.steered, vec!["promote"]);
        assert_eq!(f.state.step, Some(1));
        // From another epoch: ignored.
        let mut s = step(30, [0, 0], None);
        s.position = Some(control::position(5, Some(2)));
        f.apply(&a, Some(&p), false, &s, 20);
        assert_eq!(f.state.step, Some(1));
    }

    mod laws {
        use super::*;
        use crate::fleet::fold::{Baseline, Series, steps};
        use crate::metrics::{EVIDENCE_BAD, EVIDENCE_UNITS, PROCESS_START};
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// Counter series for three replicas: per time, (stable n, canary
        /// n, canary errors) increments, a gap flag and a restart flag.
        fn answer(ticks: &[(u8, u8, u8, bool, bool, u8)]) -> (Vec<Series>, Vec<u64>) {
            let times: Vec<u64> = (0..=ticks.len() as u64).map(|i| 1_000_000 + i * 10_000).collect();
            let mut out = Vec::new();
            for inst in 0..3u8 {
                let mut totals = [0f64; 3];
                let mut start = 1.0;
                let mut pts: [Vec<(u64, f64)>; 3] = Default::default();
                let mut starts = Vec::new();
                for (i, (s, c, e, gap, restart, who)) in ticks.iter().enumerate() {
                    let t = times[i + 1];
                    if *restart && who % 3 == inst {
                        totals = [0.0; 3];
                        start += 1.0;
                    }
                    totals[0] += f64::from(*s);
                    totals[1] += f64::from(*c);
                    totals[2] += f64::from((*e).min(*c));
                    if *gap {
                        continue; // Prometheus missed this time
                    }
                    for k in 0..3 {
                        pts[k].push((t, totals[k]));
                    }
                    starts.push((t, start));
                }
                let name = format!("10.0.0.{inst}:9901");
                let mk = |metric: &str, version: &str, p: Vec<(u64, f64)>| {
                    let mut labels = BTreeMap::new();
                    for (k, v) in [
                        ("__name__", metric),
                        ("job", "weir"),
                        ("instance", name.as_str()),
                        ("version", version),
                        ("event", "error"),
                        ("stratum", "weight"),
                        ("unit", "request"),
                        ("scope", "revision"),
                    ] {
                        labels.insert(k.to_owned(), v.to_owned());
                    }
                    Series { labels, points: p }
                };
                let [a, b, c] = pts;
                out.push(mk(EVIDENCE_UNITS, "stable", a));
                out.push(mk(EVIDENCE_UNITS, "canary", b));
                out.push(mk(EVIDENCE_BAD, "canary", c));
                let mut labels = BTreeMap::new();
                labels.insert("__name__".to_owned(), PROCESS_START.to_owned());
                labels.insert("job".to_owned(), "weir".to_owned());
                labels.insert("instance".to_owned(), name.clone());
                out.push(Series { labels, points: starts });
            }
            (out, times)
        }

        fn fold_in(series: &[Series], times: &[u64], cuts: &[usize]) -> FleetFold {
            let a = Analysis::default();
            let p = prog();
            let mut f = FleetFold::new("2", Some(&p));
            let mut base = Baseline::default();
            let mut from = 0;
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % times.len()).filter(|c| *c > 0).collect();
            bounds.push(times.len() - 1);
            bounds.sort_unstable();
            bounds.dedup();
            for to in bounds {
                let batch = &times[from..=to];
                let mut prev = batch[0];
                for s in steps(series, batch, &[], &mut base) {
                    f.apply(&a, Some(&p), false, &s, prev);
                    prev = s.at_ms;
                }
                from = to;
            }
            f.base = base;
            f
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// A replica that folds every evaluation time as it comes, one
            /// that catches up after an outage, and one that replays the
            /// whole history after a restart end in the same state.
            #[test]
            fn the_same_history_folds_to_the_same_state_however_it_is_split(
                ticks in proptest::collection::vec((0u8..60, 0u8..12, 0u8..3, any::<bool>(), any::<bool>(), any::<u8>()), 1..40),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ) {
                let ticks: Vec<_> = ticks.into_iter().map(|(s, c, e, gap, restart, who)| (s, c, e, gap && who % 4 == 0, restart && who % 5 == 0, who)).collect();
                let (series, times) = answer(&ticks);
                let whole = fold_in(&series, &times, &[]);
                let split = fold_in(&series, &times, &cuts);
                let one_by_one = fold_in(&series, &times, &(1..times.len()).collect::<Vec<_>>());
                prop_assert_eq!(&whole, &split);
                prop_assert_eq!(&whole, &one_by_one);
            }

            /// Nothing is lost or counted twice: the canary units folded
            /// equal the increments the replicas made, gaps included, as
            /// long as each replica's last values were scraped.
            #[test]
            fn every_increment_is_counted_once(
                ticks in proptest::collection::vec((0u8..60, 0u8..12, 0u8..3, any::<bool>(), any::<u8>()), 1..40),
            ) {
                let mut ticks: Vec<_> = ticks.into_iter().map(|(s, c, e, gap, who)| (s, c, e, gap && who % 3 == 0, false, who)).collect();
                if let Some(last) = ticks.last_mut() {
                    last.3 = false;
                }
                let (series, times) = answer(&ticks);
                let rev: u64 = steps(&series, &times, &[], &mut Baseline::default()).iter().map(|s| {
                    s.interval.strata.iter().map(|c| c.revision.n(Event::Error, CANARY)).sum::<u64>()
                }).sum();
                let made: u64 = ticks.iter().map(|t| u64::from(t.1)).sum::<u64>() * 3;
                prop_assert_eq!(rev, made);
            }
        }
    }
}
