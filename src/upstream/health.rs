//! Passive health (design §13): failed attempts in a row eject an endpoint
//! for a time that grows with each ejection; at most `max_ejected` of the
//! set is out at once, and never all of it. Ejection only moves traffic
//! between pods of one version: the failures themselves are still evidence
//! against the version (the proxy records every failed attempt).

use super::pool::{self, Endpoint};
use crate::config::Passive;
use std::sync::Arc;

/// A failed attempt on `ep`, one of `set`.
pub fn failed(policy: &Passive, set: &[Arc<Endpoint>], ep: &Endpoint) {
    let in_a_row = ep.failed();
    if policy.consecutive_failures == 0 || in_a_row < policy.consecutive_failures {
        return;
    }
    let now = pool::clock_ms();
    if ep.is_ejected(now) {
        return;
    }
    let n = set.len();
    let allowed = (n * policy.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
    let ejected = set.iter().filter(|e| e.is_ejected(now)).count();
    if ejected < allowed {
        ep.eject(now, policy.eject);
    }
}

/// An attempt that got an answer: a status in `statuses` is a failure,
/// anything else ends the run of failures.
pub fn answered(policy: &Passive, set: &[Arc<Endpoint>], ep: &Endpoint, status: u16) {
    if policy.statuses.contains(&status) {
        failed(policy, set, ep);
    } else {
        ep.succeeded();
    }
}
