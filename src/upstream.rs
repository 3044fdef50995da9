//! Upstreams: a version's endpoints and how a request reaches one.
//!
//! Inner rooms, bottom up: `pool` (one endpoint: its counters, health
//! state and idle connections), `wire` and `body` (HTTP/1.1 exchange),
//! `endpoints` (where they come from: a fixed list or DNS), `balance` (which
//! one takes an attempt), `health` (passive ejection), `retry` (what a
//! request tried, and the budget). This file ties them together.
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

mod balance;
mod body;
mod endpoints;
mod error;
mod h2;
mod health;
mod pool;
mod retry;
mod wire;

use crate::labels::ErrorKind;
pub use body::{PooledBody, ReqBody, Tee};
pub use endpoints::dns::DnsView;
pub use error::{
    BodyTimeout, BodyTooLarge, BoxError, ClientBody, Malformed, Reset, UpstreamError, is_body_timeout,
    is_body_too_large,
};
pub use pool::{EndpointState, EndpointStats};
pub use retry::{REPLAY_MAX_BODY, Tried, idempotent};
pub use wire::BodyError;

/// A whole response parsed as weir's client would (for the differential
/// test against hyper's client; see `crate::fuzzing`).
pub fn parse_whole_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    wire::parse_whole(bytes)
}

use crate::config::{Protocol, RetryOn, UpstreamSpec};
use crate::labels::Unsolicited;
use body::expect_empty;
use endpoints::Endpoints;
use endpoints::dns::DnsStatus;
use error::classify;
use h2::{H2Body, H2Conn};
use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use pool::{Busy, Endpoint};
use retry::Budget;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wire::{Connection, ExchangeError};

/// A connection checked out of its endpoint's pool (or just dialled),
/// ready to take one request.
pub struct Checkout {
    link: Link,
    endpoint: Arc<Endpoint>,
    reused: bool,
    /// Counts the request in its endpoint's `in_flight` until its response
    /// body ends (it moves into the body).
    busy: Busy,
}

/// This attempt's own limit for the response head, put in the request's
/// extensions by the proxy; it replaces the upstream's `request_timeout`
/// (the route's `timeouts.backend`, a gRPC call's `grpc-timeout`, what is
/// left of the route's `timeouts.request`, whichever is smallest).
#[derive(Debug, Clone, Copy)]
pub struct CallDeadline(pub Duration);

/// The connection a request goes out on.
enum Link {
    /// Weir's own HTTP/1.1 exchange, one request at a time.
    H1(Connection),
    /// A stream on a shared HTTP/2 connection (hyper's client).
    H2(H2Conn<H2Body>),
}

/// A named set of endpoints. Shared across reloads while its spec is
/// unchanged; a changed one takes over the endpoints (pools, health) of
/// the one it replaces.
pub struct Upstream {
    spec: UpstreamSpec,
    endpoints: Arc<Endpoints>,
    dns: Option<Arc<DnsStatus>>,
    next: AtomicUsize,
    budget: Budget,
}

impl Upstream {
    /// Build an upstream; with a DNS source, start following it (in the
    /// background, for as long as the upstream lives). `previous`: the
    /// upstream of the same name this one replaces, if any.
    pub fn start(spec: UpstreamSpec, previous: Option<&Upstream>) -> Arc<Self> {
        let previous = previous.filter(|p| p.spec.name == spec.name);
        let same_source = |p: &&Upstream| {
            p.spec.dns.as_ref().map(|d| (&d.name, d.port)) == spec.dns.as_ref().map(|d| (&d.name, d.port))
        };
        let (addrs, inherited) = match (&spec.dns, previous.filter(same_source)) {
            (None, _) => (spec.endpoints.clone(), false),
            // Same DNS source: start from its last answer, no gap.
            (Some(_), Some(p)) => (p.endpoints.addresses(), p.dns.as_ref().is_some_and(|d| d.answered())),
            (Some(_), None) => (Vec::new(), false),
        };
        let endpoints = Arc::new(Endpoints::new(Arc::clone(&spec.name), &addrs, previous.map(|p| &*p.endpoints)));
        if previous.is_some_and(|p| p.spec.tls != spec.tls || p.spec.protocol != spec.protocol) {
            // New TLS settings or files (a renewed certificate): no new
            // stream on a connection made with the old ones (those in
            // flight finish).
            endpoints.current().iter().for_each(|e| e.h2.close_all());
        }
        let dns = spec.dns.as_ref().map(|_| Arc::new(DnsStatus::default()));
        if inherited && let Some(d) = &dns {
            d.mark_answered();
        }
        if let (Some(source), Some(status)) = (spec.dns.clone(), dns.clone()) {
            let cap = source.refresh.unwrap_or(source.max_ttl);
            match (endpoints::dns::resolver(&source.resolver, cap), tokio::runtime::Handle::try_current()) {
                (Ok(resolver), Ok(rt)) => {
                    rt.spawn(endpoints::dns::follow(Arc::downgrade(&endpoints), status, source, resolver));
                }
                (Err(e), _) => tracing::error!(upstream = %spec.name, error = %e, "cannot build a DNS resolver"),
                (_, Err(_)) => tracing::error!(upstream = %spec.name, "no runtime to follow DNS on"),
            }
        }
        if let (Some(policy), Ok(rt)) = (spec.active.clone(), tokio::runtime::Handle::try_current()) {
            let reach = health::Reach { protocol: spec.protocol, tls: spec.tls.clone() };
            rt.spawn(health::check_forever(Arc::downgrade(&endpoints), policy, reach));
        }
        Arc::new(Self { spec, endpoints, dns, next: AtomicUsize::new(0), budget: Budget::default() })
    }

    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// Wait (at most `limit`) for a DNS source's first answer; true at
    /// once for a fixed list. Startup waits so the first requests have pods.
    pub async fn ready(&self, limit: Duration) -> bool {
        match &self.dns {
            None => true,
            Some(d) => d.first_answer(limit).await,
        }
    }

    /// The DNS source, for `GET /upstreams`.
    pub fn dns_view(&self) -> Option<DnsView> {
        let (source, status) = (self.spec.dns.as_ref()?, self.dns.as_ref()?);
        Some(DnsView {
            name: source.name.clone(),
            port: source.port,
            resolutions: status.resolutions.load(Ordering::Relaxed),
            failures: status.failures.load(Ordering::Relaxed),
            last_error: status.last_error(),
        })
    }

    /// Close idle connections that expired or that the upstream closed.
    pub fn reap_idle(&self) -> usize {
        self.endpoints.current().iter().map(|e| e.reap()).sum()
    }

    /// Per endpoint in service: its address and the connections closed for
    /// unsolicited bytes, by `Unsolicited` (for /metrics).
    pub fn unsolicited(&self) -> Vec<(String, [u64; 2])> {
        self.endpoints
            .current()
            .iter()
            .map(|e| (e.address().to_owned(), Unsolicited::ALL.map(|w| e.unsolicited(w))))
            .collect()
    }

    /// Idle connections kept, over all endpoints.
    pub fn idle_connections(&self) -> usize {
        self.endpoints.current().iter().map(|e| e.idle_count()).sum()
    }

    /// Per endpoint, in service and draining, for `GET /upstreams` and metrics.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        let now = pool::clock_ms();
        let view = |e: &Arc<Endpoint>, state: EndpointState| EndpointStats {
            address: e.address().to_owned(),
            state,
            ejections: e.ejections(),
            in_flight: e.in_flight(),
            requests: e.requests(),
            failures: e.failures(),
            check: e.check(),
        };
        let set = self.endpoints.current();
        let mut out: Vec<EndpointStats> = set
            .iter()
            .map(|e| view(e, if e.is_ejected(now) { EndpointState::Ejected } else { EndpointState::Healthy }))
            .collect();
        out.extend(self.endpoints.draining().iter().map(|e| view(e, EndpointState::Draining)));
        out
    }

    /// A pooled or new connection to an endpoint this request has not
    /// tried, picked by `balance`. A failed connect is retried on another
    /// endpoint while `retry` (attempts, `connect_failure`, budget) allows;
    /// each failed attempt it moves on from is left in `tried.failed` for
    /// the caller to charge to the version.
    pub async fn connect(&self, tried: &mut Tried) -> Result<Checkout, UpstreamError> {
        let mut last: Option<UpstreamError> = None;
        loop {
            let now = pool::clock_ms();
            let ep = {
                let set = self.endpoints.current();
                let Some(i) = balance::pick(self.spec.balance, &self.next, &set, &tried.endpoints, now) else {
                    return Err(last.unwrap_or(UpstreamError::NoEndpoints));
                };
                set.get(i).cloned().ok_or(UpstreamError::NoEndpoints)?
            };
            if let Some(e) = last.take() {
                if !(self.spec.retry.on_connect() && self.retry_allowed(tried)) {
                    return Err(e);
                }
                tried.failed.push(Some(e.kind()));
                tried.retries += 1;
            }
            tried.endpoints.push(&ep);
            ep.attempted();
            let opened = match self.spec.protocol {
                Protocol::Http1 => match ep.checkout() {
                    Some(wire) => Ok((Link::H1(wire), true)),
                    None => self.connect_h1(&ep).await.map(|w| (Link::H1(w), false)),
                },
                Protocol::H2c | Protocol::H2 => match ep.h2.checkout() {
                    Some(c) => Ok((Link::H2(c), true)),
                    None => Box::pin(self.open_h2(&ep)).await.map(|c| (Link::H2(c), false)),
                },
                // What the endpoint agreed to before: its pooled connections
                // of either kind; else a new one, ALPN choosing.
                Protocol::Auto => {
                    if let Some(c) = ep.h2.checkout() {
                        Ok((Link::H2(c), true))
                    } else if let Some(wire) = ep.checkout() {
                        Ok((Link::H1(wire), true))
                    } else {
                        Box::pin(self.open_auto(&ep)).await.map(|l| (l, false))
                    }
                }
            };
            match opened {
                Ok((link, reused)) => return Ok(Checkout { busy: Busy::new(&ep), link, endpoint: ep, reused }),
                Err(e) => {
                    health::failed(&self.spec.passive, &self.endpoints.current(), &ep);
                    last = Some(e);
                }
            }
        }
    }

    /// A new HTTP/1.1 connection to `ep`: TCP, and with `tls` the TLS
    /// handshake (ALPN `http/1.1`), both within `connect_timeout`.
    async fn connect_h1(&self, ep: &Endpoint) -> Result<wire::Connection, UpstreamError> {
        let Some(tls) = &self.spec.tls else { return ep.connect(self.spec.connect_timeout).await };
        self.within_connect_timeout(async {
            Ok(wire::Connection::new(wire::Stream::Tls(Box::new(ep.dial_tls(tls).await?))))
        })
        .await
    }

    /// `protocol: auto`: a new TLS connection offering ALPN `h2` and
    /// `http/1.1`; HTTP/2 (kept in the endpoint's HTTP/2 pool) if the
    /// endpoint agrees to it, else HTTP/1.1 on the same connection.
    async fn open_auto(&self, ep: &Endpoint) -> Result<Link, UpstreamError> {
        let Some(tls) = &self.spec.tls else {
            return Err(UpstreamError::Connect(std::io::Error::other("protocol auto needs tls")));
        };
        self.within_connect_timeout(async {
            let s = ep.dial_tls(tls).await?;
            if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                let conn = h2::handshake(s, Arc::clone(&self.spec.name), ep.address().to_owned()).await?;
                ep.h2.add(conn.clone());
                Ok(Link::H2(conn))
            } else {
                Ok(Link::H1(wire::Connection::new(wire::Stream::Tls(Box::new(s)))))
            }
        })
        .await
    }

    /// A new HTTP/2 connection to `ep` (dial and handshake within
    /// `connect_timeout`), kept in its pool for the next requests.
    async fn open_h2(&self, ep: &Endpoint) -> Result<H2Conn<H2Body>, UpstreamError> {
        let conn = self
            .within_connect_timeout(async {
                let (name, addr) = (Arc::clone(&self.spec.name), ep.address().to_owned());
                let Some(tls) = &self.spec.tls else {
                    let stream = ep.dial().await.map_err(UpstreamError::Connect)?;
                    let _ = stream.set_nodelay(true);
                    return h2::handshake(stream, name, addr).await;
                };
                let s = ep.dial_tls(tls).await?;
                if s.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(UpstreamError::Connect(std::io::Error::other(
                        "the upstream did not agree to HTTP/2 over TLS (ALPN h2)",
                    )));
                }
                h2::handshake(s, name, addr).await
            })
            .await?;
        ep.h2.add(conn.clone());
        Ok(conn)
    }

    /// `open`, or a connect timeout after `connect_timeout`.
    async fn within_connect_timeout<T>(
        &self,
        open: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        tokio::time::timeout(self.spec.connect_timeout, open).await.map_err(|_| UpstreamError::ConnectTimeout)?
    }

    /// After a sent attempt failed with `what`: may the request go to
    /// another endpoint? (The caller has checked that it can be replayed.)
    /// If so the failure is left in `tried.failed` like a connect's.
    pub fn retry_after(&self, tried: &mut Tried, what: RetryOn, kind: Option<ErrorKind>) -> bool {
        let listed = match what {
            RetryOn::Status(s) => self.spec.retry.on_status(s),
            other => self.spec.retry.on.contains(&other),
        };
        if !listed {
            return false; // the common case for a 5xx: nothing to look up
        }
        let now = pool::clock_ms();
        let somewhere = {
            let set = self.endpoints.current();
            set.iter().any(|e| !e.is_ejected(now) && !tried.endpoints.contains(e))
        };
        if !(somewhere && self.retry_allowed(tried)) {
            return false;
        }
        tried.failed.push(kind);
        tried.retries += 1;
        true
    }

    /// Attempts left, and the budget agrees (counts the retry if so).
    fn retry_allowed(&self, tried: &Tried) -> bool {
        tried.retries < self.spec.retry.attempts
            && self.budget.allow(pool::clock_ms(), self.endpoints.total_requests(), self.spec.retry.budget_percent)
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
        let Checkout { link, endpoint, reused, busy } = conn;
        let mut wire = match link {
            Link::H1(wire) => wire,
            // Boxed: the HTTP/1.1 path's future stays as small as it was.
            Link::H2(c) => return Box::pin(self.send_h2(c, (endpoint, busy), parts, body, added)).await,
        };
        let deadlines = self.deadlines(parts);
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
                    wire = self.connect_h1(&endpoint).await?;
                    wire::exchange(&mut wire, &head, &parts.method, deadlines).await
                }
                Err(ExchangeError::Unsolicited(n)) if reused => {
                    // Bytes arrived on the pooled connection after checkout:
                    // it is dropped (counted) and the request, not sent yet,
                    // goes on a fresh one.
                    endpoint.note_unsolicited(Unsolicited::Idle, n);
                    wire = self.connect_h1(&endpoint).await?;
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
                // The client's body failing is not the endpoint's fault.
                health::failed(&self.spec.passive, &self.endpoints.current(), &endpoint);
            }
            match e {
                ExchangeError::Unsolicited(n) => {
                    endpoint.note_unsolicited(Unsolicited::Idle, n);
                    UpstreamError::Protocol(Malformed::AnswerBeforeRequest)
                }
                ExchangeError::Body(e) => e,
                ExchangeError::Io { error, .. } => UpstreamError::Reset(Reset::Io(error)),
                ExchangeError::Protocol(why) => UpstreamError::Protocol(why),
                ExchangeError::Timeout => UpstreamError::Timeout,
                ExchangeError::Stalled(d) => UpstreamError::UploadStalled(d),
            }
        })?;
        health::answered(&self.spec.passive, &self.endpoints, &endpoint, head.status.as_u16());
        let keep_alive = head.keep_alive && body_done;
        let mut resp =
            Response::new(PooledBody::wire(wire, head.framing, (endpoint, busy), keep_alive, self.spec.body_timeout));
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }

    /// A request as an HTTP/2 stream: the head rebuilt for HTTP/2 (`:scheme`
    /// https over TLS, else http; `:authority` from Host), `added` appended, the body streamed,
    /// the response (trailers included) streamed back as it comes. The
    /// response head must come within `request_timeout` of the start.
    async fn send_h2(
        &self,
        mut conn: H2Conn<H2Body>,
        (endpoint, busy): (Arc<Endpoint>, Busy),
        parts: &http::request::Parts,
        body: ReqBody,
        added: &[(&'static http::HeaderName, http::HeaderValue)],
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut headers = parts.headers.clone();
        let authority = headers
            .remove(http::header::HOST)
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .unwrap_or_else(|| endpoint.address().to_owned());
        for (name, value) in added {
            headers.append(*name, value.clone());
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = http::Uri::builder()
            .scheme(if self.spec.tls.is_some() { "https" } else { "http" })
            .authority(authority)
            .path_and_query(target)
            .build()
            .map_err(|e| UpstreamError::Protocol(Malformed::H2Request(e)))?;
        let mut req = Request::new(H2Body::new(body));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_2;
        *req.headers_mut() = headers;
        let limit = self.deadlines(parts).head;
        let attempt = async {
            match conn.send(req).await {
                Ok(answer) => Ok(answer),
                // Never sent (the connection went away between checkout and
                // send): once more, on a new connection.
                Err(h2::SendError::Unsent(req, _)) => {
                    let mut fresh = Box::pin(self.open_h2(&endpoint)).await?;
                    fresh.send(*req).await.map_err(|e| classify(e.into_error()))
                }
                Err(h2::SendError::Failed(e)) => Err(classify(e)),
            }
        };
        let outcome = match tokio::time::timeout(limit, attempt).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(result) => result,
        };
        match outcome {
            Ok((resp, stream)) => {
                health::answered(&self.spec.passive, &self.endpoints, &endpoint, resp.status().as_u16());
                Ok(resp.map(|b| PooledBody::h2(b, stream, busy)))
            }
            Err(e) => {
                if !matches!(e.kind(), ErrorKind::Client) {
                    health::failed(&self.spec.passive, &self.endpoints.current(), &endpoint);
                }
                Err(e)
            }
        }
    }

    fn deadlines(&self, parts: &http::request::Parts) -> wire::Deadlines {
        let head = parts.extensions.get::<CallDeadline>().map_or(self.spec.request_timeout, |d| d.0);
        wire::Deadlines { head, upload: self.spec.body_timeout }
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
            let Link::H1(wire) = conn.link else {
                return Err(UpstreamError::Protocol(Malformed::WebSocketOverH2));
            };
            let io = wire.into_io().ok_or(UpstreamError::Reset(Reset::NotWhole))?;
            let (mut tx, driver) = http1::Builder::new()
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::Reset(Reset::Hyper(e)))?;
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
