//! One endpoint's connections: dialing (with timeout, TCP_NODELAY) and the
//! idle stack. A connection goes back on the stack only when its response
//! body was read to the end with nothing stray after it (see `body.rs`), and
//! comes off it only when the kernel says nothing is waiting on it, so a
//! half-read exchange or a response nobody asked for never reaches the next
//! request. Each connection closed for unsolicited bytes is counted and
//! logged with the upstream and endpoint it came from.

use super::error::UpstreamError;
use super::h2::{H2Body, H2Pool};
use super::wire::{Connection, IdleState};
use crate::labels::Unsolicited;
use crate::shards::{self, Padded};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct Idle {
    pub wire: Connection,
    pub since: Instant,
}

pub struct Endpoint {
    /// The upstream's name, for logs and metrics.
    upstream: Arc<str>,
    /// `host:port` as configured (a static name is resolved on each dial),
    /// or an address from a DNS source.
    addr: String,
    /// `addr` when it is an IP address: dialled without a lookup.
    sock: Option<std::net::SocketAddr>,
    /// Connections closed for unsolicited bytes, by `Unsolicited`.
    unsolicited: [AtomicU64; 2],
    /// Requests sent here and not yet finished (balancing reads it).
    in_flight: AtomicUsize,
    /// Attempts made here, ever (this pool's life), connected or not.
    requests: AtomicU64,
    /// Failed attempts here: connect failures, resets, timeouts, invalid
    /// or truncated responses (not the upstream's own 5xx).
    failures: AtomicU64,
    /// Passive health: failed attempts in a row, times ejected, and until
    /// when (None: not ejected). See `Upstream::failed`.
    consecutive: AtomicU32,
    ejections: AtomicU32,
    /// `clock_ms()` until which it is ejected (0: never was).
    ejected_until: AtomicU64,
    /// Active health: the check is failing (out of service until it
    /// passes `healthy` times in a row), and the current run of results
    /// against the state (see `health::checked`).
    check_failing: std::sync::atomic::AtomicBool,
    check_run: AtomicU32,
    /// The last check's result, for `GET /upstreams` (0 none, 1 pass, 2 fail).
    check_last: std::sync::atomic::AtomicU8,
    /// One stack per worker-thread shard: a request takes and returns
    /// connections under its own thread's lock, and borrows from the other
    /// shards only when its own is empty.
    idle: Box<[Padded<Mutex<Vec<Idle>>>]>,
    /// Per shard.
    max_idle: usize,
    /// `protocol: h2c`: this endpoint's HTTP/2 connections.
    pub h2: H2Pool<H2Body>,
    idle_timeout: Duration,
}

impl Endpoint {
    pub fn new(upstream: Arc<str>, addr: String, max_idle: usize, idle_timeout: Duration) -> Self {
        let n = shards::count();
        let idle = (0..n).map(|_| Padded(Mutex::new(Vec::new()))).collect();
        Self {
            upstream,
            sock: addr.parse().ok(),
            addr,
            unsolicited: Default::default(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            check_failing: Default::default(),
            check_run: AtomicU32::new(0),
            check_last: Default::default(),
            idle,
            max_idle: max_idle.div_ceil(n).max(1),
            h2: H2Pool::default(),
            idle_timeout,
        }
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// An attempt starts here (counted in `requests` whether or not it
    /// connects).
    pub fn attempted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed attempt here (see `failures`); returns how many in a row.
    pub fn failed(&self) -> u32 {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive.fetch_add(1, Ordering::Relaxed).saturating_add(1)
    }

    /// An attempt here got a response: the run of failures is over.
    pub fn succeeded(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Out of service at `now` (`clock_ms()`): ejected by passive health,
    /// or failing its active check. Two atomic loads, cheap enough for
    /// every pick.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now || self.check_failing.load(Ordering::Relaxed)
    }

    /// One active check's result; returns Some(new state) when it changes
    /// (true: failing). `healthy`/`unhealthy`: results in a row to change.
    pub fn checked(&self, passed: bool, healthy: u32, unhealthy: u32) -> Option<bool> {
        self.check_last.store(if passed { 1 } else { 2 }, Ordering::Relaxed);
        let failing = self.check_failing.load(Ordering::Relaxed);
        if passed != failing {
            // The result agrees with the state: the run against it ends.
            self.check_run.store(0, Ordering::Relaxed);
            return None;
        }
        let run = self.check_run.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if run < if failing { healthy } else { unhealthy } {
            return None;
        }
        self.check_run.store(0, Ordering::Relaxed);
        self.check_failing.store(!failing, Ordering::Relaxed);
        if !failing {
            self.close_idle();
        }
        Some(!failing)
    }

    /// The active check as `GET /upstreams` shows it.
    pub fn check(&self) -> Option<&'static str> {
        match self.check_last.load(Ordering::Relaxed) {
            0 => None,
            _ if self.check_failing.load(Ordering::Relaxed) => Some("failing"),
            _ => Some("passing"),
        }
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Eject until `base` × the number of ejections so far (this one
    /// included, at most 10) from `now`; its idle connections are closed.
    /// Returns for how long.
    pub fn eject(&self, now: u64, base: Duration) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).saturating_add(1).min(10);
        let span = base.saturating_mul(n);
        let until = now.saturating_add(u64::try_from(span.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.close_idle();
        tracing::warn!(upstream = %self.upstream, endpoint = %self.addr, ejected_for = ?span,
            "endpoint ejected after failed attempts in a row (passive health)");
        span
    }

    /// Close every idle connection (ejected, or gone from its source).
    pub fn close_idle(&self) {
        self.h2.close_all();
        for shard in self.idle.iter() {
            if let Ok(mut stack) = shard.lock() {
                stack.clear();
            }
        }
    }

    /// Connections closed because the upstream sent bytes no request asked for.
    pub fn unsolicited(&self, when: Unsolicited) -> u64 {
        self.unsolicited.get(when as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Count and log a connection closed for unsolicited bytes (at least
    /// `bytes` of them). The upstream has a bug (a second response to one
    /// request, a body after a HEAD, 204 or 304, a length that lies); the
    /// connection is dropped so the bytes can never answer another request.
    pub fn note_unsolicited(&self, when: Unsolicited, bytes: usize) {
        if let Some(c) = self.unsolicited.get(when as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(
            upstream = %self.upstream,
            endpoint = %self.addr,
            when = when.as_str(),
            bytes,
            "upstream sent bytes no request asked for; connection closed, never reused"
        );
    }

    /// May this idle connection carry the next request? Asks the kernel
    /// (one `recv` with `MSG_PEEK`): reused only when nothing is waiting.
    fn usable(&self, idle: &mut Idle) -> bool {
        if idle.since.elapsed() > self.idle_timeout {
            return false;
        }
        match idle.wire.idle_state() {
            IdleState::Quiet => true,
            IdleState::Closed => false,
            IdleState::Unsolicited(n) => {
                self.note_unsolicited(Unsolicited::Idle, n);
                false
            }
        }
    }

    /// Most recently used idle connection that is still usable: not past the
    /// idle timeout, not closed by the upstream, nothing unsolicited on it.
    pub fn checkout(&self) -> Option<Connection> {
        let n = self.idle.len();
        let first = shards::mine(n);
        for k in 0..n {
            let Some(shard) = self.idle.get((first + k) % n) else { continue };
            loop {
                let Some(mut idle) = shard.lock().ok().and_then(|mut s| s.pop()) else { break };
                // Checked outside the lock: a system call, and maybe a log line.
                if self.usable(&mut idle) {
                    return Some(idle.wire);
                }
            }
        }
        None
    }

    /// Drop idle connections past the idle timeout, closed by the peer (a
    /// socket the upstream closed sits in CLOSE_WAIT until weir closes it)
    /// or holding unsolicited bytes. Returns how many were dropped. One
    /// `recv(MSG_PEEK)` per idle connection per call.
    pub fn reap(&self) -> usize {
        let mut dropped = 0;
        for shard in self.idle.iter() {
            let Ok(mut stack) = shard.lock() else { continue };
            let before = stack.len();
            stack.retain_mut(|c| self.usable(c));
            dropped += before - stack.len();
        }
        dropped
    }

    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|s| s.lock().map_or(0, |s| s.len())).sum()
    }

    pub fn put(&self, mut wire: Connection) {
        wire.ack_now();
        wire.shrink();
        if let Some(Ok(mut stack)) = self.idle.get(shards::mine(self.idle.len())).map(|s| s.lock())
            && stack.len() < self.max_idle
        {
            stack.push(Idle { wire, since: Instant::now() });
        }
    }

    /// A plain TCP connection to the endpoint (no timeout of its own).
    pub async fn dial(&self) -> std::io::Result<TcpStream> {
        match self.sock {
            Some(sock) => TcpStream::connect(sock).await,
            None => TcpStream::connect(self.addr.as_str()).await,
        }
    }

    /// TCP and the TLS handshake (no timeout of its own). A failed
    /// handshake (unknown CA, wrong name, no client certificate where one
    /// is required) is a connect failure, like a refused connection.
    pub async fn dial_tls(
        &self,
        tls: &crate::tls::upstream::UpstreamTls,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let stream = self.dial().await.map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        let server = crate::tls::upstream::server_name(tls.server_name.as_deref(), self.address())
            .map_err(|e| UpstreamError::Connect(std::io::Error::other(e)))?;
        tokio_rustls::TlsConnector::from(Arc::clone(&tls.config))
            .connect(server, stream)
            .await
            .map_err(UpstreamError::Connect)
    }

    /// Dial a new connection.
    pub async fn connect(&self, timeout: Duration) -> Result<Connection, UpstreamError> {
        let stream = match tokio::time::timeout(timeout, self.dial()).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        Ok(Connection::new(super::wire::Stream::Tcp(stream)))
    }
}

/// One request's claim on an endpoint: counted in `in_flight` from the
/// moment it has a connection until its response body ends or is dropped.
pub struct Busy(Arc<Endpoint>);

impl Busy {
    pub fn new(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(endpoint))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milliseconds on a monotonic clock that starts with the process: what
/// ejection deadlines are kept in (one atomic per endpoint, no lock).
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One endpoint as `GET /upstreams` shows it.
pub struct EndpointStats {
    pub address: String,
    pub state: EndpointState,
    pub ejections: u32,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
    /// Active health: `passing`, `failing`, or None (not checked).
    pub check: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Healthy,
    Ejected,
    /// Gone from its source; requests in flight finish.
    Draining,
}

impl EndpointState {
    pub const ALL: [EndpointState; 3] = [EndpointState::Healthy, EndpointState::Ejected, EndpointState::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Ejected => "ejected",
            EndpointState::Draining => "draining",
        }
    }
}
