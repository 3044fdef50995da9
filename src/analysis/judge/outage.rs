//! While stable breaks an SLO: the route holds, and for a while the tests
//! that roll back sit out (no evidence, no rollback).

use super::{JudgeState, STABLE, Test};

/// Is stable out of an SLO of a guard in use (a shared outage, or stable's
/// own trouble)?
pub(super) fn stable_out(st: &JudgeState, tests: &[Test]) -> bool {
    st.detectors.iter().any(|(t, d)| tests.contains(t) && d[STABLE].hot)
}

/// The longest the tests sit out while stable breaks an SLO. An outage is
/// minutes; a stable out for longer has an SLO set too tight for it, or
/// trouble that must not leave a bad canary unjudged.
pub const SIT_OUT_MAX_MS: u64 = 10 * 60 * 1000;

/// Do the tests sit out (no evidence, no rollback) at `now_ms`?
pub(super) fn sitting_out(st: &JudgeState, tests: &[Test], now_ms: u64) -> bool {
    stable_out(st, tests) && st.stable_out_since_ms.is_some_and(|t| now_ms.saturating_sub(t) < SIT_OUT_MAX_MS)
}
