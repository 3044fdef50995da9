//! While stable is out of an SLO (a guard's detector is hot for stable) the
//! route holds: nothing rolls back, and the tests that roll back take no
//! evidence from an interval that began in that state, for at most
//! `SIT_OUT_MAX_MS` per episode. Which intervals sit out is chosen on what
//! was known as they began (the detectors after the previous interval, and
//! the clock), so every e-process stays valid: some of its factors are
//! replaced by 1. It only stops a shared outage spending α by chance.

use super::{JudgeState, STABLE, Test};
use serde::{Deserialize, Serialize};

/// Is stable out of an SLO of a guard in use (a shared outage, or stable's
/// own trouble)?
pub(super) fn stable_out(st: &JudgeState, tests: &[Test]) -> bool {
    st.detectors.iter().any(|(t, d)| tests.contains(t) && d[STABLE].hot)
}

/// The longest the tests sit out while stable breaks an SLO. An outage is
/// minutes; a stable out for longer has an SLO set too tight for it, or
/// trouble that must not leave a bad canary unjudged.
pub const SIT_OUT_MAX_MS: u64 = 10 * 60 * 1000;

/// One episode of stable out of an SLO: from the evaluation that first saw
/// it out until it has been back for `SIT_OUT_MAX_MS`. A stable that flaps
/// in and out stays in one episode, so the tests sit out at most that long
/// per episode, not per stretch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub since_ms: u64,
    pub last_out_ms: u64,
}

/// After an interval's counts: begin, extend or end the episode.
pub(super) fn note(st: &mut JudgeState, tests: &[Test], now_ms: u64) {
    let ongoing = st.outage.filter(|o| now_ms.saturating_sub(o.last_out_ms) < SIT_OUT_MAX_MS);
    st.outage = match (stable_out(st, tests), ongoing) {
        (true, Some(o)) => Some(Outage { last_out_ms: now_ms, ..o }),
        (true, None) => Some(Outage { since_ms: now_ms, last_out_ms: now_ms }),
        (false, o) => o,
    };
}

/// Do the tests sit out (no evidence, no rollback) at `now_ms`?
pub(super) fn sitting_out(st: &JudgeState, tests: &[Test], now_ms: u64) -> bool {
    stable_out(st, tests) && st.outage.is_some_and(|o| now_ms.saturating_sub(o.since_ms) < SIT_OUT_MAX_MS)
}
