//! One endpoint's connections: dialing (with timeout, TCP_NODELAY) and the
//! idle stack. A connection goes back on the stack only when its response
//! body was read to the end (see `body.rs`), so a half-read or failed
//! exchange never poisons the pool.

use super::UpstreamError;
use super::body::ReqBody;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct Idle {
    pub tx: http1::SendRequest<ReqBody>,
    pub since: Instant,
}

pub struct Endpoint {
    /// `host:port` as configured; resolved on each dial so DNS changes apply.
    addr: String,
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Endpoint {
    pub fn new(addr: String, max_idle: usize, idle_timeout: Duration) -> Self {
        Self { addr, idle: Mutex::new(Vec::new()), max_idle, idle_timeout }
    }

    /// Most recently used idle connection that is still usable. A connection
    /// returned right after its body ended may need a moment before hyper's
    /// connection task marks it ready; `ready()` waits for that (bounded).
    pub async fn checkout(&self, wait: Duration) -> Option<Idle> {
        loop {
            let mut idle = {
                let mut stack = self.idle.lock().ok()?;
                stack.pop()?
            };
            if idle.tx.is_closed() || idle.since.elapsed() > self.idle_timeout {
                continue;
            }
            if idle.tx.is_ready() {
                return Some(idle);
            }
            match tokio::time::timeout(wait, idle.tx.ready()).await {
                Ok(Ok(())) => return Some(idle),
                _ => continue,
            }
        }
    }

    pub fn put(&self, tx: http1::SendRequest<ReqBody>) {
        if tx.is_closed() {
            return;
        }
        if let Ok(mut stack) = self.idle.lock()
            && stack.len() < self.max_idle
        {
            stack.push(Idle { tx, since: Instant::now() });
        }
    }

    /// Dial a new connection and spawn its driver task.
    pub async fn connect(&self, timeout: Duration) -> Result<http1::SendRequest<ReqBody>, UpstreamError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr.as_str())).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Ok(Ok(s)) => s,
        };
        // Small request/response exchanges: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let handshake = http1::Builder::new().handshake(TokioIo::new(stream));
        let (tx, conn) = match tokio::time::timeout(timeout, handshake).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) => return Err(UpstreamError::Connect(std::io::Error::other(e))),
            Ok(Ok(pair)) => pair,
        };
        // The driver owns the socket; it ends when the connection closes or
        // when every SendRequest handle is dropped. Upgrades (WebSocket) need
        // `with_upgrades` so the socket can be handed over after a 101.
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(tx)
    }
}
