//! Upstream pools: per upstream, a round-robin over endpoints, each with a
//! LIFO stack of idle HTTP/1.1 keep-alive connections.
//!
//! Connecting and sending are separate steps on purpose: the proxy first
//! obtains a connection (`Upstream::connect`) and only then hands over the
//! request (`Upstream::send`). A canary that cannot be connected to has
//! therefore never seen the request, so falling back to stable is safe for
//! every method (design §2 step 7). A pooled connection that turns out to be
//! dead before the request was written hands the request back (hyper's
//! `try_send_request`) and we retry once on a fresh connection, so a stale
//! keep-alive never becomes a 502.

mod body;
mod pool;

pub use body::{PooledBody, ReqBody, Tee};

use crate::config::UpstreamSpec;
use http::{Request, Response};
use hyper::client::conn::http1;
use pool::{Endpoint, Idle};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why an upstream could not answer. Mapped to a status in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect refused or failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("no response headers within the request timeout")]
    Timeout,
    #[error("connection reset or closed before a response")]
    Reset(hyper::Error),
    #[error("invalid response: {0}")]
    Protocol(hyper::Error),
    #[error("unsolicited 101 Switching Protocols")]
    Protocol101,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyTimeout,
    #[error("request body failed: {0}")]
    ClientBody(hyper::Error),
}

impl UpstreamError {
    /// Bounded label for `weir_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::ConnectTimeout | UpstreamError::Timeout => "timeout",
            UpstreamError::Reset(_) => "reset",
            UpstreamError::Protocol(_) | UpstreamError::Protocol101 => "protocol",
            UpstreamError::BodyTooLarge | UpstreamError::BodyTimeout | UpstreamError::ClientBody(_) => "client",
        }
    }

    /// True when the request never left weir (safe to send elsewhere).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    }
}

/// A connection ready to take one request.
pub struct Conn {
    tx: http1::SendRequest<ReqBody>,
    endpoint: Arc<Endpoint>,
    reused: bool,
}

/// A named pool of endpoints. Shared across reloads while its spec is unchanged.
pub struct Upstream {
    spec: UpstreamSpec,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 512;
/// Idle connections older than this are not reused (upstreams such as nginx
/// close keep-alive after 60–75 s; reusing near that edge invites races).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(e.clone(), MAX_IDLE_PER_ENDPOINT, IDLE_TIMEOUT)))
            .collect();
        Self { spec, endpoints, next: AtomicUsize::new(0) }
    }

    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// A pooled or new connection. Tries each endpoint once, in round-robin
    /// order, each attempt bounded by `connect_timeout`.
    pub async fn connect(&self) -> Result<Conn, UpstreamError> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = UpstreamError::ConnectTimeout;
        for i in 0..n {
            let Some(ep) = self.endpoints.get((start + i) % n) else { continue };
            if let Some(Idle { tx, .. }) = ep.checkout(self.spec.connect_timeout).await {
                return Ok(Conn { tx, endpoint: Arc::clone(ep), reused: true });
            }
            match ep.connect(self.spec.connect_timeout).await {
                Ok(tx) => return Ok(Conn { tx, endpoint: Arc::clone(ep), reused: false }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Send a request on `conn`, waiting at most `request_timeout` for the
    /// response head. A reused connection found dead before the request was
    /// written is replaced by a fresh one once.
    pub async fn send(&self, conn: Conn, req: Request<ReqBody>) -> Result<Response<PooledBody>, UpstreamError> {
        let timeout = self.spec.request_timeout;
        let result = tokio::time::timeout(timeout, async move {
            let Conn { mut tx, endpoint, reused } = conn;
            match tx.try_send_request(req).await {
                Ok(resp) => Ok((resp, tx, endpoint)),
                Err(mut e) => match (reused, e.take_message()) {
                    (true, Some(req)) => {
                        let mut fresh = endpoint.connect(self.spec.connect_timeout).await?;
                        let resp = fresh.send_request(req).await.map_err(classify)?;
                        Ok((resp, fresh, endpoint))
                    }
                    _ => Err(classify(e.into_error())),
                },
            }
        })
        .await;
        match result {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(e),
            // After a 101 the connection belongs to the upgraded socket:
            // never back into the pool.
            Ok(Ok((resp, _, _))) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                Ok(resp.map(PooledBody::detached))
            }
            Ok(Ok((resp, tx, endpoint))) => Ok(resp.map(|b| PooledBody::new(b, tx, endpoint))),
        }
    }
}

/// Sort a hyper client error into what happened.
fn classify(e: hyper::Error) -> UpstreamError {
    if body::is_body_too_large(&e) {
        return UpstreamError::BodyTooLarge;
    }
    if body::is_body_timeout(&e) {
        return UpstreamError::BodyTimeout;
    }
    if e.is_user() || e.is_body_write_aborted() {
        return UpstreamError::ClientBody(e);
    }
    if e.is_parse() || e.is_parse_status() {
        return UpstreamError::Protocol(e);
    }
    UpstreamError::Reset(e)
}
