//! Which endpoint of a version takes an attempt (design §13): the fewer in
//! flight of two drawn at random (p2c, the default), or each in turn.
//! Ejected endpoints and those this request already tried are skipped; a
//! first attempt takes an ejected one only when nothing else is left.

use super::pool::Endpoint;
use crate::config::Balance;
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The index in `set` of the endpoint to try, or None when every endpoint
/// was tried already (or, on a retry, every untried one is ejected).
pub fn pick(
    balance: Balance,
    next: &AtomicUsize,
    set: &[Arc<Endpoint>],
    tried: &[Arc<Endpoint>],
    now: u64,
) -> Option<usize> {
    let n = set.len();
    let open = |i: usize| set.get(i).is_some_and(|e| !e.is_ejected(now) && !tried.iter().any(|t| Arc::ptr_eq(t, e)));
    let found = match balance {
        Balance::RoundRobin => {
            let start = next.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|k| (start + k) % n).find(|&i| open(i))
        }
        Balance::P2c => p2c(set, &open),
    };
    if found.is_some() || !tried.is_empty() {
        return found;
    }
    // A first attempt with every endpoint ejected (the set changed under
    // ejection): better an ejected pod than none.
    (n > 0).then(|| next.fetch_add(1, Ordering::Relaxed) % n)
}

/// Power of two choices among the open endpoints.
fn p2c(set: &[Arc<Endpoint>], open: &impl Fn(usize) -> bool) -> Option<usize> {
    let n = set.len();
    let load = |i: usize| set.get(i).map_or(usize::MAX, |e| e.in_flight());
    let mut rng = rand::rng();
    if n >= 2 {
        let a = rng.random_range(0..n);
        // A second, different endpoint: one of the other n - 1.
        let b = (a + 1 + rng.random_range(0..n - 1)) % n;
        match (open(a), open(b)) {
            (true, true) => return Some(if load(b) < load(a) { b } else { a }),
            (true, false) => return Some(a),
            (false, true) => return Some(b),
            (false, false) => {}
        }
    }
    // Few open: draw among them.
    let candidates: Vec<usize> = (0..n).filter(|&i| open(i)).collect();
    match candidates.len() {
        0 => None,
        1 => candidates.first().copied(),
        c => {
            let a = rng.random_range(0..c);
            let b = (a + 1 + rng.random_range(0..c - 1)) % c;
            let (a, b) = (candidates.get(a).copied()?, candidates.get(b).copied()?);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}
