//! Upstream pools: per upstream, a round-robin over endpoints, each with a
//! LIFO stack of idle HTTP/1.1 keep-alive connections.
//!
//! Connecting and sending are separate steps on purpose: the proxy first
//! obtains a connection (`Upstream::connect`) and only then hands over the
//! request (`Upstream::send`). A canary that cannot be connected to has
//! therefore never seen the request, so falling back to stable is safe for
//! every method (design §2 step 7). A pooled connection found dead when the
//! request goes out (the write fails, or it closes before a byte of answer)
//! is replaced by a fresh one once, if the request can be replayed: no body,
//! and either the write failed or the method is idempotent.
//!
//! The exchange itself runs in the request's task (`wire.rs`); only
//! WebSocket handshakes go through hyper's client, which does the upgrade.

mod body;
mod pool;
mod wire;

pub use body::{PooledBody, ReqBody, Tee};
pub use wire::BodyError;

/// A whole response parsed as weir's client would (for the differential
/// test against hyper's client; see `crate::fuzzing`).
pub fn parse_whole_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    wire::parse_whole(bytes)
}

use crate::config::{Balance, UpstreamSpec};
use crate::labels::Unsolicited;
use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pool::{Busy, Endpoint};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wire::{Connection, ExchangeError};

/// The client stopped sending its body for longer than `body_timeout`.
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no request body data within the body timeout")
    }
}
impl std::error::Error for BodyTimeout {}

/// True if a hyper error was caused by our body timeout.
pub fn is_body_timeout(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTimeout>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The client sent more than `max_request_body`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the configured limit")
    }
}
impl std::error::Error for BodyTooLarge {}

/// True if a hyper error was caused by our body limit.
pub fn is_body_too_large(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream could not answer. Mapped to a status in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect refused or failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("no response headers within the request timeout")]
    Timeout,
    #[error("connection reset or closed before a response: {0}")]
    Reset(String),
    #[error("invalid response: {0}")]
    Protocol(String),
    #[error("unsolicited 101 Switching Protocols")]
    Protocol101,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyTimeout,
    #[error("request body failed: {0}")]
    ClientBody(String),
    #[error("the upstream took no request body bytes for {0:?} (upstream body_timeout)")]
    UploadStalled(Duration),
}

pub use crate::labels::ErrorKind;

impl UpstreamError {
    /// Which `weir_upstream_errors_total{kind}` counts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Connect(_) => ErrorKind::Connect,
            UpstreamError::ConnectTimeout | UpstreamError::Timeout | UpstreamError::UploadStalled(_) => {
                ErrorKind::Timeout
            }
            UpstreamError::Reset(_) => ErrorKind::Reset,
            UpstreamError::Protocol(_) | UpstreamError::Protocol101 => ErrorKind::Protocol,
            UpstreamError::BodyTooLarge | UpstreamError::BodyTimeout | UpstreamError::ClientBody(_) => {
                ErrorKind::Client
            }
        }
    }

    /// True when the request never left weir (safe to send elsewhere).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    }
}

/// One endpoint as `GET /upstreams` shows it.
pub struct EndpointStats<'a> {
    pub address: &'a str,
    pub ejected: bool,
    pub ejections: u32,
    pub in_flight: usize,
    pub requests: u64,
    pub failures: u64,
}

/// A connection checked out of its endpoint's pool (or just dialled),
/// ready to take one request.
pub struct Checkout {
    wire: Connection,
    endpoint: Arc<Endpoint>,
    reused: bool,
    /// Counts the request in its endpoint's `in_flight` until its response
    /// body ends (it moves into the body).
    busy: Busy,
}

/// A named pool of endpoints. Shared across reloads while its spec is unchanged.
pub struct Upstream {
    spec: UpstreamSpec,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 4096;
/// Idle connections older than this are not reused (upstreams such as nginx
/// close keep-alive after 60–75 s; reusing near that edge invites races).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

impl Upstream {
    pub fn new(spec: UpstreamSpec) -> Self {
        let endpoints = spec
            .endpoints
            .iter()
            .map(|e| Arc::new(Endpoint::new(Arc::clone(&spec.name), e.clone(), MAX_IDLE_PER_ENDPOINT, IDLE_TIMEOUT)))
            .collect();
        Self { spec, endpoints, next: AtomicUsize::new(0) }
    }

    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// Close idle connections that expired or that the upstream closed.
    pub fn reap_idle(&self) -> usize {
        self.endpoints.iter().map(|e| e.reap()).sum()
    }

    /// Per endpoint: its address and the connections closed for
    /// unsolicited bytes, by `Unsolicited` (for /metrics).
    pub fn unsolicited(&self) -> Vec<(&str, [u64; 2])> {
        self.endpoints.iter().map(|e| (e.address(), Unsolicited::ALL.map(|w| e.unsolicited(w)))).collect()
    }

    /// Idle connections kept, over all endpoints.
    pub fn idle_connections(&self) -> usize {
        self.endpoints.iter().map(|e| e.idle_count()).sum()
    }

    /// Per endpoint, for `GET /upstreams`.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats<'_>> {
        let now = pool::clock_ms();
        self.endpoints
            .iter()
            .map(|e| EndpointStats {
                address: e.address(),
                ejected: e.is_ejected(now),
                ejections: e.ejections(),
                in_flight: e.in_flight(),
                requests: e.requests(),
                failures: e.failures(),
            })
            .collect()
    }

    /// A failed attempt on `ep`: counted, and after
    /// `health.passive.consecutive_failures` in a row the endpoint is
    /// ejected, unless that would eject more than `max_ejected` of this
    /// upstream's endpoints (never all of them).
    fn failed(&self, ep: &Endpoint) {
        let in_a_row = ep.failed();
        let policy = self.spec.passive;
        if policy.consecutive_failures == 0 || in_a_row < policy.consecutive_failures {
            return;
        }
        let now = pool::clock_ms();
        if ep.is_ejected(now) {
            return;
        }
        let n = self.endpoints.len();
        let allowed = (n * policy.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        if ejected < allowed {
            ep.eject(now, policy.eject);
        }
    }

    /// A pooled or new connection. The first endpoint tried is the
    /// balancer's pick (`balance`); on a failed connect the others are
    /// tried once each, in order, each bounded by `connect_timeout`.
    pub async fn connect(&self) -> Result<Checkout, UpstreamError> {
        let n = self.endpoints.len();
        let start = self.pick(n);
        let mut last = UpstreamError::ConnectTimeout;
        let now = pool::clock_ms();
        // Ejected endpoints are skipped (ejection never takes them all).
        let order =
            (0..n).filter_map(|i| self.endpoints.get((start + i) % n)).filter(|ep| !ep.is_ejected(now) || n == 1);
        for ep in order {
            if let Some(wire) = ep.checkout() {
                return Ok(Checkout { wire, endpoint: Arc::clone(ep), reused: true, busy: Busy::new(ep) });
            }
            match ep.connect(self.spec.connect_timeout).await {
                Ok(wire) => return Ok(Checkout { wire, endpoint: Arc::clone(ep), reused: false, busy: Busy::new(ep) }),
                Err(e) => {
                    self.failed(ep);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The index of the endpoint to try first.
    fn pick(&self, n: usize) -> usize {
        match self.spec.balance {
            Balance::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            Balance::P2c if n < 2 => 0,
            Balance::P2c => {
                use rand::RngExt;
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                // A second, different endpoint: one of the other n - 1.
                let b = (a + 1 + rng.random_range(0..n - 1)) % n;
                let now = pool::clock_ms();
                // An ejected endpoint loses every draw.
                let load = |i: usize| {
                    self.endpoints.get(i).filter(|e| !e.is_ejected(now)).map_or(usize::MAX, |e| e.in_flight())
                };
                if load(b) < load(a) { b } else { a }
            }
        }
    }

    /// Send a request on `conn`, with `added` written after the request's
    /// own headers (see `headers::Added`). The response head must come
    /// within `request_timeout` of the request's end; while the body
    /// uploads, it must keep moving (`body_timeout`). The request target is
    /// the URI's path and query.
    ///
    /// (One async fn, not a wrapper around another: every level of async
    /// fn holds its child's whole state and copies it in when it starts;
    /// docs/design-notes.md, "What a request's future costs".)
    pub async fn send(
        &self,
        conn: Checkout,
        parts: &mut http::request::Parts,
        body: ReqBody,
        added: &[(&'static http::HeaderName, http::HeaderValue)],
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let framing = wire::request_framing(&parts.method, &mut parts.headers, &body);
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let head = wire::encode_head(&parts.method, target, &parts.headers, added, framing);
        let replayable = framing == wire::ReqFraming::None || framing == wire::ReqFraming::Length(0);
        let Checkout { mut wire, endpoint, reused, busy } = conn;
        let deadlines = self.deadlines();
        let outcome = if replayable {
            // Nothing to send after the head (no body, or an empty one).
            if !http_body::Body::is_end_stream(&body) {
                // Declared empty but not ended yet (HTTP/2 HEADERS without
                // END_STREAM): wait for its end before the request leaves,
                // so DATA on it (malformed, RFC 9113 §8.1.1) is refused
                // rather than forwarded as an empty request.
                expect_empty(body).await?;
            }
            let outcome = match wire::exchange(&mut wire, &head, &parts.method, deadlines).await {
                Err(ExchangeError::Io { answered: false, unsent, .. })
                    if reused && (unsent || idempotent(&parts.method)) =>
                {
                    // The idle connection died under us: once more on a fresh one.
                    wire = endpoint.connect(self.spec.connect_timeout).await?;
                    wire::exchange(&mut wire, &head, &parts.method, deadlines).await
                }
                other => other,
            };
            outcome.map(|(h, done)| (h, wire, done))
        } else {
            // A body: the upload may go on after the answer (an upstream
            // that answers early and still reads), so the socket is split.
            let leftover = body.leftover();
            wire::exchange_streaming(wire, head, body, framing, &parts.method, deadlines, leftover).await
        };
        let (head, wire, body_done) = outcome.map_err(|e| {
            if !matches!(e, ExchangeError::Body(_)) {
                self.failed(&endpoint); // the client's body failing is not the endpoint's fault
            }
            match e {
                ExchangeError::Unsolicited(n) => {
                    endpoint.note_unsolicited(Unsolicited::Idle, n);
                    UpstreamError::Protocol("the upstream sent a response before the request".into())
                }
                ExchangeError::Body(e) => e,
                ExchangeError::Io { error, .. } => UpstreamError::Reset(error.to_string()),
                ExchangeError::Protocol(why) => UpstreamError::Protocol(why),
                ExchangeError::Timeout => UpstreamError::Timeout,
                ExchangeError::Stalled(d) => UpstreamError::UploadStalled(d),
            }
        })?;
        endpoint.succeeded();
        let keep_alive = head.keep_alive && body_done;
        let mut resp =
            Response::new(PooledBody::wire(wire, head.framing, (endpoint, busy), keep_alive, self.spec.body_timeout));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    fn deadlines(&self) -> wire::Deadlines {
        wire::Deadlines { head: self.spec.request_timeout, upload: self.spec.body_timeout }
    }

    /// A WebSocket handshake: hyper's client on a connection of this pool,
    /// with upgrades enabled; the connection is never pooled again.
    pub async fn send_upgrade(
        &self,
        conn: Checkout,
        req: Request<ReqBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let timeout = self.spec.request_timeout;
        let exchange = async move {
            // Pooled and fresh connections are whole sockets.
            let io = conn.wire.into_io().ok_or_else(|| UpstreamError::Reset("connection not whole".into()))?;
            let (mut tx, driver) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Reset(e.to_string()))?;
            // The driver owns the socket until the upgrade hands it over.
            tokio::spawn(async move {
                let _ = driver.with_upgrades().await;
            });
            tx.send_request(req).await.map_err(classify)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok(resp)) => Ok(resp.map(PooledBody::detached)),
        }
    }
}

/// Read a body declared empty to its end; any data in it is an error. The
/// body's own stall guard (`body_timeout`) bounds the wait.
async fn expect_empty(mut body: ReqBody) -> Result<(), UpstreamError> {
    use http_body::Body as _;
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            None => return Ok(()),
            Some(Err(e)) => return Err(wire::body_error(&e)),
            Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => {
                return Err(UpstreamError::ClientBody("data on a request whose content-length is 0".into()));
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Safe to send twice (RFC 9110 §9.2.2).
fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Sort a hyper client error into what happened.
fn classify(e: hyper::Error) -> UpstreamError {
    if is_body_too_large(&e) {
        return UpstreamError::BodyTooLarge;
    }
    if is_body_timeout(&e) {
        return UpstreamError::BodyTimeout;
    }
    if e.is_user() || e.is_body_write_aborted() {
        return UpstreamError::ClientBody(e.to_string());
    }
    if e.is_parse() || e.is_parse_status() {
        return UpstreamError::Protocol(e.to_string());
    }
    UpstreamError::Reset(e.to_string())
}
