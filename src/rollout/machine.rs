//! The rollout state machine for one route (design §4), pure: the caller
//! passes the policy, the verdict and the wall-clock time (ms since the Unix
//! epoch; wall time because `hold` must survive a restart), and gets back
//! what changed. Persisting and journaling are the caller's job.

use super::verdict::{Breach, Judgement, Verdict};
use crate::config::{Analysis, Progression};
use serde::{Deserialize, Serialize};

/// What `GET /routes` calls `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Fixed config weight, no progression.
    #[default]
    Steady,
    Progressing,
    Paused,
    /// Progression walked every step.
    Promoted,
    RolledBack,
    Killed,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Steady, Phase::Progressing, Phase::Paused, Phase::Promoted, Phase::RolledBack, Phase::Killed];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Killed => "killed",
        }
    }
}

/// Why a route was rolled back (label of `weir_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackReason {
    ErrorRate,
    Latency,
    LatencyRatio,
    Admin,
    /// The persisted state could not be read: start with the canary off.
    StateUnreadable,
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 5] = [
        RollbackReason::ErrorRate,
        RollbackReason::Latency,
        RollbackReason::LatencyRatio,
        RollbackReason::Admin,
        RollbackReason::StateUnreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RollbackReason::ErrorRate => "error_rate",
            RollbackReason::Latency => "latency",
            RollbackReason::LatencyRatio => "latency_ratio",
            RollbackReason::Admin => "admin",
            RollbackReason::StateUnreadable => "state_unreadable",
        }
    }

    fn from_breach(b: Breach) -> Self {
        match b {
            Breach::ErrorRate => RollbackReason::ErrorRate,
            Breach::Latency => RollbackReason::Latency,
            Breach::LatencyRatio => RollbackReason::LatencyRatio,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latch {
    pub reason: RollbackReason,
    pub at_ms: u64,
}

/// Persisted per route, for the canary revision named in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Consecutive `fail` verdicts.
    #[serde(default)]
    pub streak: u32,
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
    /// canary gets no traffic), so the caller should not call this then.
    pub fn on_verdict(
        &mut self,
        j: &Judgement,
        analysis: &Analysis,
        progression: Option<&Progression>,
        now_ms: u64,
    ) -> Transition {
        if self.killed || self.rolled_back.is_some() {
            return Transition::None;
        }
        match j.verdict {
            Verdict::Insufficient => Transition::None,
            Verdict::Fail => {
                self.streak = self.streak.saturating_add(1);
                if self.streak < analysis.failures {
                    return Transition::None;
                }
                let reason = j.breaches.first().copied().map_or(RollbackReason::ErrorRate, RollbackReason::from_breach);
                self.rollback(reason, now_ms);
                Transition::RolledBack(reason)
            }
            Verdict::Pass => {
                self.streak = 0;
                match progression {
                    Some(p) if !self.paused && !self.promoted => {
                        if now_ms.saturating_sub(self.step_since_ms) < duration_ms(p.hold) {
                            Transition::None
                        } else {
                            self.advance(p, now_ms)
                        }
                    }
                    _ => Transition::None,
                }
            }
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
        Transition::Advanced { from, to: from + 1 }
    }

    pub fn rollback(&mut self, reason: RollbackReason, now_ms: u64) {
        self.rolled_back = Some(Latch { reason, at_ms: now_ms });
        self.streak = 0;
    }

    /// Lift a rollback latch (progression starts over at the first step) or a
    /// pause. Returns whether anything changed.
    pub fn resume(&mut self, progression: Option<&Progression>, now_ms: u64) -> bool {
        if self.rolled_back.take().is_some() {
            self.streak = 0;
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

pub fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: u64 = 60_000;

    fn analysis() -> Analysis {
        Analysis {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            min_requests: 100,
            max_error_rate: 1.0,
            max_p99: None,
            max_p99_ratio: None,
            failures: 3,
        }
    }

    fn progression() -> Progression {
        Progression { steps: vec![100, 500, 2500, 10000], hold: Duration::from_secs(300) }
    }

    fn pass() -> Judgement {
        Judgement { verdict: Verdict::Pass, breaches: vec![] }
    }
    fn fail(b: Breach) -> Judgement {
        Judgement { verdict: Verdict::Fail, breaches: vec![b] }
    }
    fn insufficient() -> Judgement {
        Judgement { verdict: Verdict::Insufficient, breaches: vec![] }
    }

    #[test]
    fn consecutive_failures_roll_back_with_the_breach_as_reason() {
        let a = analysis();
        let mut s = RouteState::fresh("2", None, 0);
        assert_eq!(s.on_verdict(&fail(Breach::LatencyRatio), &a, None, 1), Transition::None);
        assert_eq!(s.on_verdict(&fail(Breach::LatencyRatio), &a, None, 2), Transition::None);
        assert_eq!(
            s.on_verdict(&fail(Breach::LatencyRatio), &a, None, 3),
            Transition::RolledBack(RollbackReason::LatencyRatio)
        );
        assert_eq!(s.phase(false), Phase::RolledBack);
        assert_eq!(s.rolled_back, Some(Latch { reason: RollbackReason::LatencyRatio, at_ms: 3 }));
    }

    #[test]
    fn pass_resets_the_streak_and_insufficient_leaves_it() {
        let a = analysis();
        let mut s = RouteState::fresh("2", None, 0);
        s.on_verdict(&fail(Breach::ErrorRate), &a, None, 1);
        s.on_verdict(&fail(Breach::ErrorRate), &a, None, 2);
        s.on_verdict(&insufficient(), &a, None, 3);
        assert_eq!(s.streak, 2, "insufficient leaves the streak");
        s.on_verdict(&pass(), &a, None, 4);
        assert_eq!(s.streak, 0, "pass resets it");
        s.on_verdict(&fail(Breach::ErrorRate), &a, None, 5);
        s.on_verdict(&fail(Breach::ErrorRate), &a, None, 6);
        assert!(s.rolled_back.is_none());
        s.on_verdict(&insufficient(), &a, None, 7);
        assert_eq!(
            s.on_verdict(&fail(Breach::ErrorRate), &a, None, 8),
            Transition::RolledBack(RollbackReason::ErrorRate),
            "fail, fail, insufficient, fail is three in a row"
        );
    }

    #[test]
    fn the_latch_holds_until_resume_or_a_new_revision() {
        let a = analysis();
        let mut s = RouteState::fresh("2", None, 0);
        s.rollback(RollbackReason::Admin, 10);
        assert_eq!(s.on_verdict(&pass(), &a, None, 11), Transition::None);
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
        let (a, p) = (analysis(), progression());
        let mut s = RouteState::fresh("2", Some(&p), 0);
        assert_eq!((s.step, s.weight_bp(0, Some(&p))), (Some(0), 100), "starts at the first step");
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 5 * MIN - 1), Transition::None, "hold not yet over");
        assert_eq!(s.on_verdict(&insufficient(), &a, Some(&p), 6 * MIN), Transition::None, "never on insufficient");
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 6 * MIN), Transition::Advanced { from: 0, to: 1 });
        assert_eq!(s.weight_bp(0, Some(&p)), 500);
        // The hold restarts on each step.
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 10 * MIN), Transition::None);
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 11 * MIN), Transition::Advanced { from: 1, to: 2 });
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 16 * MIN), Transition::Advanced { from: 2, to: 3 });
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 21 * MIN), Transition::Promoted);
        assert_eq!((s.phase(false), s.weight_bp(0, Some(&p))), (Phase::Promoted, 10000));
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 30 * MIN), Transition::None);
    }

    #[test]
    fn a_failing_step_rolls_back_and_progression_stops_there() {
        let (a, p) = (Analysis { failures: 1, ..analysis() }, progression());
        let mut s = RouteState::fresh("2", Some(&p), 0);
        s.on_verdict(&pass(), &a, Some(&p), 5 * MIN);
        assert_eq!(s.step, Some(1));
        assert_eq!(
            s.on_verdict(&fail(Breach::ErrorRate), &a, Some(&p), 6 * MIN),
            Transition::RolledBack(RollbackReason::ErrorRate)
        );
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 60 * MIN), Transition::None, "latched: no advance");
        assert_eq!(s.step, Some(1));
        assert!(s.resume(Some(&p), 61 * MIN));
        assert_eq!((s.step, s.step_since_ms, s.phase(false)), (Some(0), 61 * MIN, Phase::Progressing));
    }

    #[test]
    fn pause_holds_the_step_and_promote_skips_the_hold() {
        let (a, p) = (analysis(), progression());
        let mut s = RouteState::fresh("2", Some(&p), 0);
        assert_eq!(s.pause(Some(&p)), Ok(true));
        assert_eq!(s.phase(false), Phase::Paused);
        assert_eq!(s.on_verdict(&pass(), &a, Some(&p), 60 * MIN), Transition::None);
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
