//! Which endpoint of a version takes an attempt (design §13): the fewer in
//! flight of two drawn at random (p2c, the default), or each in turn.
//! Ejected endpoints and those this request already tried are skipped; a
//! first attempt takes an ejected one only when nothing else is left.

use super::pool::Endpoint;
use super::retry::TriedSet;
use crate::config::Balance;
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The index in `set` of the endpoint to try, or None when every endpoint
/// was tried already (or, on a retry, every untried one is ejected).
pub fn pick(balance: Balance, next: &AtomicUsize, set: &[Arc<Endpoint>], tried: &TriedSet, now: u64) -> Option<usize> {
    let n = set.len();
    let open = |i: usize| set.get(i).is_some_and(|e| !e.is_ejected(now) && !tried.contains(e));
    if n == 1 && tried.is_empty() {
        return Some(0); // the only one, ejected or not
    }
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
    // Few open (both draws missed): two among the open ones, by rank.
    let c = (0..n).filter(|&i| open(i)).count();
    let nth = |k: usize| (0..n).filter(|&i| open(i)).nth(k);
    match c {
        0 => None,
        1 => nth(0),
        c => {
            let a = rng.random_range(0..c);
            let b = (a + 1 + rng.random_range(0..c - 1)) % c;
            let (a, b) = (nth(a)?, nth(b)?);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(Arc::from("u"), format!("127.0.0.1:{}", 1000 + i), 1, Duration::from_secs(1)))
            })
            .collect()
    }

    #[test]
    fn a_pick_skips_what_was_tried_and_what_is_ejected() {
        for balance in [Balance::P2c, Balance::RoundRobin] {
            let eps = set(4);
            let next = AtomicUsize::new(0);
            let mut tried = TriedSet::default();
            let now = super::super::pool::clock_ms();
            eps[1].eject(now, Duration::from_secs(60));
            let mut seen = Vec::new();
            // Three open endpoints: three distinct picks, then none.
            for _ in 0..3 {
                let i = pick(balance, &next, &eps, &tried, now).unwrap();
                assert!(i != 1 && !seen.contains(&i), "{balance:?}: {i} in {seen:?}");
                seen.push(i);
                tried.push(&eps[i]);
            }
            assert_eq!(pick(balance, &next, &eps, &tried, now), None, "{balance:?}");
        }
    }

    #[test]
    fn a_first_attempt_finds_an_endpoint_even_when_all_are_out() {
        let eps = set(2);
        let now = super::super::pool::clock_ms();
        for e in &eps {
            e.eject(now, Duration::from_secs(60));
        }
        let next = AtomicUsize::new(0);
        for balance in [Balance::P2c, Balance::RoundRobin] {
            assert!(pick(balance, &next, &eps, &TriedSet::default(), now).is_some());
            let mut tried = TriedSet::default();
            tried.push(&eps[0]);
            assert_eq!(pick(balance, &next, &eps, &tried, now), None, "a retry never goes to an ejected one");
        }
        assert_eq!(pick(Balance::P2c, &next, &[], &TriedSet::default(), now), None);
    }

    #[test]
    fn p2c_prefers_the_less_busy_of_two() {
        let eps = set(2);
        let _busy: Vec<_> = (0..3).map(|_| super::super::pool::Busy::new(&eps[0])).collect();
        let next = AtomicUsize::new(0);
        let now = super::super::pool::clock_ms();
        for _ in 0..50 {
            assert_eq!(pick(Balance::P2c, &next, &eps, &TriedSet::default(), now), Some(1));
        }
    }
}
