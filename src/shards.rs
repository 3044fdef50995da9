//! Per-thread shards for state that every request touches (the sliding
//! windows, the upstream idle stacks). Each worker thread takes its own
//! shard's lock, so workers neither queue on one mutex nor bounce one cache
//! line between cores; readers merge the shards.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many shards: the cores weir may run on, at most 16.
pub fn count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16))
}

/// This thread's shard among `n`: threads are numbered on first use.
pub fn mine(n: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id) % n.max(1)
}

/// Keeps neighbouring shards on separate cache lines.
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_threads_spread() {
        let n = 4;
        let here = mine(n);
        assert_eq!(mine(n), here);
        let others: Vec<usize> =
            (0..8).map(|_| std::thread::spawn(move || mine(n))).map(|h| h.join().unwrap_or(0)).collect();
        assert!(others.iter().all(|&s| s < n));
        // Consecutive new threads take consecutive numbers: more than one shard is used.
        assert!(others.iter().any(|&s| s != others[0]));
        assert!(count() >= 1 && count() <= 16);
    }
}
