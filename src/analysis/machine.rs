//! The rollout state machine for one route (design §4), pure: the caller
//! passes the policy, the verdict and the wall-clock time (ms since the Unix
//! epoch; wall time because `hold` must survive a restart), and gets back
//! what changed. Persisting and journaling are the caller's job.

use crate::analysis::{JudgeState, Judgement, Test, Verdict};
use crate::routing::policy::{AnalysisMode, Progression};
use serde::{Deserialize, Serialize};

use crate::routing::Phase;

use crate::labels::RollbackReason;

impl RollbackReason {
    /// The reason a fired test gives.
    pub fn of_test(t: Test) -> Self {
        match t {
            Test::E | Test::GErr => RollbackReason::ErrorRate,
            Test::R => RollbackReason::LatencyRatio,
            Test::G95 | Test::G99 => RollbackReason::Latency,
            Test::W95 | Test::GRtt => RollbackReason::WebsocketRtt,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latch {
    pub reason: RollbackReason,
    pub at_ms: u64,
}

/// Persisted per route, for the canary revision named in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteState {
    /// Canary revision this state belongs to; a new one starts over.
    pub revision: String,
    /// Index into the progression steps (None without progression).
    #[serde(default)]
    pub step: Option<usize>,
    /// When the current step began (ms since the epoch).
    #[serde(default)]
    pub step_since_ms: u64,
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub promoted: bool,
    #[serde(default)]
    pub rolled_back: Option<Latch>,
    /// Admin kill (the config's `kill_switch` is separate).
    #[serde(default)]
    pub killed: bool,
    /// Consecutive `fail` verdicts (more than one only in `observe` mode).
    #[serde(default)]
    pub streak: u32,
    /// The latest verdict was `hold`.
    #[serde(default)]
    pub held: bool,
    /// The judge's e-processes and totals for this revision.
    #[serde(default)]
    pub judge: JudgeState,
    /// Counted-user filters were saved with this state (in
    /// `state_dir/filters/`); without them the judge must start afresh.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub filters: bool,
    /// The judge holds per-user evidence, whose filters must come back
    /// after a restart (set even when saving them failed: then they are
    /// lost, never silently replaced by an older file).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub users_counted: bool,
    /// Steering epoch (fleet mode): `resume` and `unkill` raise it, and the
    /// fleet follows the highest (`crate::fleet::control`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub control: u64,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

/// A change worth journaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    RolledBack(RollbackReason),
    /// Moved from one step index to the next.
    Advanced {
        from: usize,
        to: usize,
    },
    Promoted,
}

/// Why an admin call cannot be applied (answered 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoProgression,
    RolledBack,
    Killed,
    AlreadyPromoted,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoProgression => "route has no progression",
            Refusal::RolledBack => "route is rolled back; resume it first",
            Refusal::Killed => "route is killed; unkill it first",
            Refusal::AlreadyPromoted => "route is already promoted",
        }
    }
}

impl RouteState {
    /// The state for a canary revision weir has not seen before.
    pub fn fresh(revision: &str, progression: Option<&Progression>, now_ms: u64) -> Self {
        Self {
            revision: revision.to_owned(),
            step: progression.map(|_| 0),
            step_since_ms: now_ms,
            paused: false,
            promoted: false,
            rolled_back: None,
            killed: false,
            streak: 0,
            held: false,
            judge: JudgeState::default(),
            filters: false,
            users_counted: false,
            control: 0,
        }
    }

    /// Fit the state to a (re)loaded config. A new canary revision starts
    /// over (keeping an admin kill: only `unkill` lifts that); the rollback
    /// latch survives everything else, including weight edits. Returns true
    /// when the revision changed.
    pub fn reconcile(&mut self, revision: &str, progression: Option<&Progression>, now_ms: u64) -> bool {
        if self.revision != revision {
            let killed = self.killed;
            *self = Self::fresh(revision, progression, now_ms);
            self.killed = killed;
            return true;
        }
        match (progression, self.step) {
            (Some(_), None) => {
                self.step = Some(0);
                self.step_since_ms = now_ms;
                self.promoted = false;
            }
            (Some(p), Some(s)) if s >= p.steps.len() => self.step = Some(p.steps.len().saturating_sub(1)),
            (None, Some(_)) => {
                self.step = None;
                self.promoted = false;
                self.paused = false;
            }
            _ => {}
        }
        false
    }

    pub fn phase(&self, config_killed: bool) -> Phase {
        if config_killed || self.killed {
            Phase::Killed
        } else if self.rolled_back.is_some() {
            Phase::RolledBack
        } else if self.held {
            Phase::Held
        } else if self.step.is_none() {
            Phase::Steady
        } else if self.paused {
            Phase::Paused
        } else if self.promoted {
            Phase::Promoted
        } else {
            Phase::Progressing
        }
    }

    /// Canary weight the route serves with (before kill/rollback, which the
    /// routing decision applies): the current step, or the config weight.
    pub fn weight_bp(&self, config_weight_bp: u16, progression: Option<&Progression>) -> u16 {
        match (progression, self.step) {
            (Some(p), Some(s)) => p.steps.get(s).or(p.steps.last()).copied().unwrap_or(0),
            _ => config_weight_bp,
        }
    }

    /// Apply one verdict. While killed or rolled back nothing is judged (the
    /// canary gets no traffic), so the caller should not call this then. In
    /// `observe` mode verdicts are recorded and never acted on.
    pub fn on_verdict(
        &mut self,
        j: &Judgement,
        mode: AnalysisMode,
        progression: Option<&Progression>,
        now_ms: u64,
    ) -> Transition {
        if self.killed || self.rolled_back.is_some() {
            return Transition::None;
        }
        self.held = j.verdict == Verdict::Hold;
        if j.verdict != Verdict::Fail {
            self.streak = 0;
        }
        let observe = mode == AnalysisMode::Observe;
        match j.verdict {
            Verdict::Insufficient | Verdict::Hold => Transition::None,
            Verdict::Fail => {
                self.streak = self.streak.saturating_add(1);
                if observe {
                    return Transition::None;
                }
                let reason = j.fired.as_ref().map_or(RollbackReason::ErrorRate, |f| RollbackReason::of_test(f.test));
                self.rollback(reason, now_ms);
                Transition::RolledBack(reason)
            }
            Verdict::Pass => match progression {
                Some(p) if !observe && !self.paused && !self.promoted => {
                    if now_ms.saturating_sub(self.step_since_ms) < duration_ms(p.hold) {
                        Transition::None
                    } else {
                        self.advance(p, now_ms)
                    }
                }
                _ => Transition::None,
            },
        }
    }

    fn advance(&mut self, p: &Progression, now_ms: u64) -> Transition {
        let from = self.step.unwrap_or(0);
        if from + 1 >= p.steps.len() {
            self.promoted = true;
            self.step = Some(from);
            return Transition::Promoted;
        }
        self.step = Some(from + 1);
        self.step_since_ms = now_ms;
        // A last step of 100 % leaves no stable traffic to compare with:
        // reaching it is the promotion.
        if from + 2 == p.steps.len() && p.steps.last().is_some_and(|w| *w >= 10_000) {
            self.promoted = true;
            return Transition::Promoted;
        }
        Transition::Advanced { from, to: from + 1 }
    }

    pub fn rollback(&mut self, reason: RollbackReason, now_ms: u64) {
        self.rolled_back = Some(Latch { reason, at_ms: now_ms });
        self.streak = 0;
        self.held = false;
    }

    /// Lift a rollback latch (progression starts over at the first step) or a
    /// pause. Returns whether anything changed.
    pub fn resume(&mut self, progression: Option<&Progression>, now_ms: u64) -> bool {
        if self.rolled_back.take().is_some() {
            self.streak = 0;
            self.held = false;
            // A resumed canary is judged afresh: new processes, new filters.
            self.judge = JudgeState::default();
            self.filters = false;
            self.users_counted = false;
            self.paused = false;
            self.promoted = false;
            self.step = progression.map(|_| 0);
            self.step_since_ms = now_ms;
            return true;
        }
        std::mem::replace(&mut self.paused, false)
    }

    pub fn pause(&mut self, progression: Option<&Progression>) -> Result<bool, Refusal> {
        if progression.is_none() {
            return Err(Refusal::NoProgression);
        }
        Ok(!std::mem::replace(&mut self.paused, true))
    }

    /// Admin `promote`: the next step now, whatever `hold` and the verdicts say.
    pub fn promote(&mut self, progression: Option<&Progression>, now_ms: u64) -> Result<Transition, Refusal> {
        let p = progression.ok_or(Refusal::NoProgression)?;
        if self.killed {
            return Err(Refusal::Killed);
        }
        if self.rolled_back.is_some() {
            return Err(Refusal::RolledBack);
        }
        if self.promoted {
            return Err(Refusal::AlreadyPromoted);
        }
        Ok(self.advance(p, now_ms))
    }
}

use crate::units::duration_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: u64 = 60_000;

    const ENFORCE: AnalysisMode = AnalysisMode::Enforce;

    fn progression() -> Progression {
        Progression { steps: vec![100, 500, 2500, 10000], hold: Duration::from_secs(300) }
    }

    fn verdict(verdict: Verdict, fired: Option<Test>) -> Judgement {
        Judgement {
            verdict,
            fired: fired.map(|test| crate::analysis::Fired {
                test,
                scope: crate::analysis::Scope::Revision,
                e_value: 900.0,
                threshold: 800.0,
            }),
            held_by: vec![],
            standings: vec![],
            reason: String::new(),
            sat_out: false,
        }
    }
    fn pass() -> Judgement {
        verdict(Verdict::Pass, None)
    }
    fn fail(t: Test) -> Judgement {
        verdict(Verdict::Fail, Some(t))
    }
    fn insufficient() -> Judgement {
        verdict(Verdict::Insufficient, None)
    }
    fn hold() -> Judgement {
        verdict(Verdict::Hold, None)
    }

    #[test]
    fn one_fail_rolls_back_at_once_with_the_test_as_reason() {
        let mut s = RouteState::fresh("2", None, 0);
        assert_eq!(
            s.on_verdict(&fail(Test::R), ENFORCE, None, 3),
            Transition::RolledBack(RollbackReason::LatencyRatio)
        );
        assert_eq!(s.phase(false), Phase::RolledBack);
        assert_eq!(s.rolled_back, Some(Latch { reason: RollbackReason::LatencyRatio, at_ms: 3 }));
        for (t, r) in [
            (Test::E, RollbackReason::ErrorRate),
            (Test::GErr, RollbackReason::ErrorRate),
            (Test::G99, RollbackReason::Latency),
            (Test::W95, RollbackReason::WebsocketRtt),
        ] {
            let mut s = RouteState::fresh("2", None, 0);
            assert_eq!(s.on_verdict(&fail(t), ENFORCE, None, 1), Transition::RolledBack(r));
        }
    }

    #[test]
    fn observe_mode_records_fails_and_never_acts() {
        let p = progression();
        let mut s = RouteState::fresh("2", Some(&p), 0);
        for i in 1..=3 {
            assert_eq!(s.on_verdict(&fail(Test::E), AnalysisMode::Observe, Some(&p), i), Transition::None);
        }
        assert_eq!((s.streak, s.rolled_back, s.phase(false)), (3, None, Phase::Progressing));
        assert_eq!(
            s.on_verdict(&pass(), AnalysisMode::Observe, Some(&p), 60 * MIN),
            Transition::None,
            "no step either"
        );
        assert_eq!((s.step, s.streak), (Some(0), 0));
    }

    #[test]
    fn hold_stops_progression_and_shows_until_the_next_verdict() {
        let p = progression();
        let mut s = RouteState::fresh("2", Some(&p), 0);
        assert_eq!(
            s.on_verdict(&hold(), ENFORCE, Some(&p), 6 * MIN),
            Transition::None,
            "hold time over, still no step"
        );
        assert_eq!(s.phase(false), Phase::Held);
        assert!(s.rolled_back.is_none());
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 7 * MIN), Transition::Advanced { from: 0, to: 1 });
        assert_eq!(s.phase(false), Phase::Progressing);
    }

    #[test]
    fn the_latch_holds_until_resume_or_a_new_revision() {
        let mut s = RouteState::fresh("2", None, 0);
        s.rollback(RollbackReason::Admin, 10);
        assert_eq!(s.on_verdict(&pass(), ENFORCE, None, 11), Transition::None);
        assert!(!s.reconcile("2", None, 12), "same revision (e.g. a weight edit) keeps the latch");
        assert!(s.rolled_back.is_some());
        assert!(s.reconcile("3", None, 13), "new revision");
        assert_eq!((s.rolled_back, s.phase(false)), (None, Phase::Steady));
        s.rollback(RollbackReason::ErrorRate, 14);
        assert!(s.resume(None, 15));
        assert_eq!(s.rolled_back, None);
    }

    #[test]
    fn a_new_revision_keeps_an_admin_kill() {
        let mut s = RouteState::fresh("2", None, 0);
        s.killed = true;
        s.reconcile("3", None, 1);
        assert_eq!(s.phase(false), Phase::Killed);
    }

    #[test]
    fn progression_advances_only_after_hold_and_a_pass() {
        let p = progression();
        let mut s = RouteState::fresh("2", Some(&p), 0);
        assert_eq!((s.step, s.weight_bp(0, Some(&p))), (Some(0), 100), "starts at the first step");
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 5 * MIN - 1), Transition::None, "hold not yet over");
        assert_eq!(
            s.on_verdict(&insufficient(), ENFORCE, Some(&p), 6 * MIN),
            Transition::None,
            "never on insufficient"
        );
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 6 * MIN), Transition::Advanced { from: 0, to: 1 });
        assert_eq!(s.weight_bp(0, Some(&p)), 500);
        // The hold restarts on each step.
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 10 * MIN), Transition::None);
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 11 * MIN), Transition::Advanced { from: 1, to: 2 });
        assert_eq!(
            s.on_verdict(&pass(), ENFORCE, Some(&p), 16 * MIN),
            Transition::Promoted,
            "a last step of 100 % leaves nothing to compare: reaching it promotes"
        );
        assert_eq!((s.phase(false), s.weight_bp(0, Some(&p))), (Phase::Promoted, 10000));
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 30 * MIN), Transition::None);
    }

    #[test]
    fn a_failing_step_rolls_back_and_progression_stops_there() {
        let p = progression();
        let mut s = RouteState::fresh("2", Some(&p), 0);
        s.on_verdict(&pass(), ENFORCE, Some(&p), 5 * MIN);
        assert_eq!(s.step, Some(1));
        assert_eq!(
            s.on_verdict(&fail(Test::E), ENFORCE, Some(&p), 6 * MIN),
            Transition::RolledBack(RollbackReason::ErrorRate)
        );
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 60 * MIN), Transition::None, "latched: no advance");
        assert_eq!(s.step, Some(1));
        assert!(s.resume(Some(&p), 61 * MIN));
        assert_eq!((s.step, s.step_since_ms, s.phase(false)), (Some(0), 61 * MIN, Phase::Progressing));
    }

    #[test]
    fn pause_holds_the_step_and_promote_skips_the_hold() {
        let p = progression();
        let mut s = RouteState::fresh("2", Some(&p), 0);
        assert_eq!(s.pause(Some(&p)), Ok(true));
        assert_eq!(s.phase(false), Phase::Paused);
        assert_eq!(s.on_verdict(&pass(), ENFORCE, Some(&p), 60 * MIN), Transition::None);
        assert_eq!(s.promote(Some(&p), 60 * MIN), Ok(Transition::Advanced { from: 0, to: 1 }));
        assert!(s.resume(Some(&p), 60 * MIN));
        assert_eq!(s.phase(false), Phase::Progressing);
        assert_eq!(s.pause(None), Err(Refusal::NoProgression));
        s.rollback(RollbackReason::Admin, 61 * MIN);
        assert_eq!(s.promote(Some(&p), 62 * MIN), Err(Refusal::RolledBack));
    }

    #[test]
    fn config_changes_to_progression_are_fitted() {
        let p = progression();
        let mut s = RouteState::fresh("2", None, 0);
        s.reconcile("2", Some(&p), 7);
        assert_eq!((s.step, s.step_since_ms), (Some(0), 7), "progression added: start at the first step");
        s.step = Some(3);
        let shorter = Progression { steps: vec![100, 5000], hold: Duration::ZERO };
        s.reconcile("2", Some(&shorter), 8);
        assert_eq!(s.step, Some(1), "a step past the end is clamped");
        s.reconcile("2", None, 9);
        assert_eq!((s.step, s.weight_bp(300, None)), (None, 300), "without progression the config weight rules");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = RouteState::fresh("1.5.0", Some(&progression()), 42);
        s.rollback(RollbackReason::LatencyRatio, 99);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RouteState>(&text).unwrap(), s);
    }
}
