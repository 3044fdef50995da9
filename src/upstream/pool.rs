//! One endpoint's connections: dialing (with timeout, TCP_NODELAY) and the
//! idle stack. A connection goes back on the stack only when its response
//! body was read to the end with nothing stray after it (see `body.rs`), so
//! a half-read or failed exchange never poisons the pool.

use super::UpstreamError;
use super::wire::Connection;
use crate::shards::{self, Padded};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct Idle {
    pub wire: Connection,
    pub since: Instant,
}

pub struct Endpoint {
    /// `host:port` as configured; resolved on each dial so DNS changes apply.
    addr: String,
    /// One stack per worker-thread shard: a request takes and returns
    /// connections under its own thread's lock, and borrows from the other
    /// shards only when its own is empty.
    idle: Box<[Padded<Mutex<Vec<Idle>>>]>,
    /// Per shard.
    max_idle: usize,
    idle_timeout: Duration,
}

impl Endpoint {
    pub fn new(addr: String, max_idle: usize, idle_timeout: Duration) -> Self {
        let n = shards::count();
        let idle = (0..n).map(|_| Padded(Mutex::new(Vec::new()))).collect();
        Self { addr, idle, max_idle: max_idle.div_ceil(n).max(1), idle_timeout }
    }

    /// Most recently used idle connection that is still usable: not past the
    /// idle timeout, not closed by the upstream, nothing unsolicited on it.
    /// The check costs no system call unless the upstream did something.
    pub fn checkout(&self) -> Option<Connection> {
        let n = self.idle.len();
        let first = shards::mine(n);
        for k in 0..n {
            let Some(shard) = self.idle.get((first + k) % n) else { continue };
            loop {
                let Some(idle) = shard.lock().ok().and_then(|mut s| s.pop()) else { break };
                if idle.since.elapsed() <= self.idle_timeout && idle.wire.is_idle_usable() {
                    return Some(idle.wire);
                }
            }
        }
        None
    }

    /// Drop idle connections past the idle timeout or closed by the peer
    /// (a socket the upstream closed sits in CLOSE_WAIT until weir closes
    /// it). Returns how many were dropped. Cheap per connection: readiness
    /// is known to the reactor, so a quiet socket costs no system call.
    pub fn reap(&self) -> usize {
        let timeout = self.idle_timeout;
        let mut dropped = 0;
        for shard in self.idle.iter() {
            let Ok(mut stack) = shard.lock() else { continue };
            let before = stack.len();
            stack.retain(|c| c.since.elapsed() <= timeout && c.wire.is_idle_usable());
            dropped += before - stack.len();
        }
        dropped
    }

    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|s| s.lock().map_or(0, |s| s.len())).sum()
    }

    pub fn put(&self, mut wire: Connection) {
        wire.shrink();
        if let Some(Ok(mut stack)) = self.idle.get(shards::mine(self.idle.len())).map(|s| s.lock())
            && stack.len() < self.max_idle
        {
            stack.push(Idle { wire, since: Instant::now() });
        }
    }

    /// Dial a new connection.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection, UpstreamError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr.as_str())).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(Connection::new(stream))
    }
}
