//! The hyper service: one request's lifecycle.
//!
//! Phases (`phases.rs`, one function each, in this order):
//!
//! 1. `request_filter`: validate the head (framing, target length, Host,
//!    declared body size); fix the authority to route and forward with.
//! 2. `choose`: `routing::decide` (route, version, reason, bucket), whether
//!    to mirror, the metric handles and the evidence unit.
//! 3. `upstream_peer`: connect (canary unreachable ⇒ stable, reason
//!    `fallback`, charged to canary).
//! 4. `upstream_request_filter`: rewrite the request head in place.
//! 5. `request_body`: the body to send (limit, stall guard, shadow tee).
//! 6. send (`upstream::Upstream::send`, or `send_upgrade` for WebSockets).
//! 7. `response_filter`: a 101 becomes a relayed WebSocket; response head
//!    rewritten; sticky cookie set.
//!
//! The request is finished when the response body is dropped: `Completion`
//! then writes the access-log line and frees the in-flight slot. Errors
//! become responses in exactly one place (`ProxyError::status`,
//! `local_response`).

mod body;
mod edge;
pub mod error;
mod phases;
mod retry;
use crate::headers;
use crate::limits::{Activity, Busy, ConnHold, Slot};

pub use body::RespBody;
pub use error::ProxyError;

use crate::access_log::{AccessLog, Record};
use crate::clock::rfc3339_now;
use crate::live::{Live, Serving};
use crate::metrics::RouteMetrics;
use crate::routing::Version;
use crate::websocket;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Shared by every connection of every listener.
pub struct Proxy {
    live: Arc<Live>,
    log: Arc<AccessLog>,
    in_flight: Arc<AtomicUsize>,
    /// Set when shutdown begins: HTTP/1 responses then carry
    /// `Connection: close`, so clients move to another instance.
    draining: std::sync::atomic::AtomicBool,
}

/// The client connection a request came on. Built once per connection, so
/// nothing about the peer is formatted per request.
pub struct Peer {
    /// Came over TLS (X-Forwarded-Proto, access log).
    https: bool,
    /// The connection's source (a PROXY header's, when the listener takes one).
    addr: std::net::IpAddr,
    /// The client address, already in its header form (X-Forwarded-For).
    ip: HeaderValue,
    /// The connection's `max_connections` slot; an upgraded WebSocket keeps it.
    permit: crate::limits::ConnPermit,
    /// HTTP/2: the streams open, for `limits.idle_timeout`.
    activity: Option<Arc<Activity>>,
    /// The certificate the client presented and the listener verified
    /// (`listen[].tls.client_ca`), for segments and the access log.
    client_cert: Option<Arc<crate::tls::ClientCert>>,
}

impl Peer {
    pub fn new(
        addr: SocketAddr,
        https: bool,
        permit: crate::limits::ConnPermit,
        activity: Option<Arc<Activity>>,
        client_cert: Option<Arc<crate::tls::ClientCert>>,
    ) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { https, addr: addr.ip(), ip, permit, activity, client_cert }
    }

    pub fn client_cert(&self) -> Option<&crate::tls::ClientCert> {
        self.client_cert.as_deref()
    }

    fn ip_str(&self) -> &str {
        self.ip.to_str().unwrap_or("unknown")
    }
}

static V_STABLE: HeaderValue = HeaderValue::from_static("stable");
static V_CANARY: HeaderValue = HeaderValue::from_static("canary");

fn version_value(v: Version) -> HeaderValue {
    match v {
        Version::Stable => V_STABLE.clone(),
        Version::Canary => V_CANARY.clone(),
    }
}

/// Access-log fields gathered while the request is handled. Only built when
/// the access log is enabled.
#[derive(Default)]
struct LogFields {
    request_id: String,
    trace_id: Option<String>,
    client_ip: String,
    client_cert: Option<Arc<crate::tls::ClientCert>>,
    method: String,
    authority: String,
    path: String,
    route: Option<Arc<str>>,
    version: Option<Version>,
    revision: Option<Arc<str>>,
    reason: Option<String>,
    bucket: Option<u16>,
    upstream: Option<Arc<str>>,
}

/// Runs when the response body is dropped: the request is over.
pub struct Completion {
    log: Arc<AccessLog>,
    /// Set once the route is known; the version may change on fallback.
    metrics: Option<(Arc<RouteMetrics>, Version)>,
    start: Instant,
    _slot: Option<Slot>,
    /// Keeps an HTTP/2 connection from counting as idle until the response
    /// is done.
    _busy: Option<Busy>,
    fields: Option<LogFields>,
    status: u16,
    upstream_ms: Option<f64>,
    bytes_in: Option<Arc<AtomicU64>>,
    flags: Vec<&'static str>,
    /// Tells a shadow copy the primary's status (mismatch counter).
    shadow_status: Option<tokio::sync::oneshot::Sender<u16>>,
    /// Set when this request is evidence for the judge (randomised, on a
    /// route with analysis): forced, killed and fallback traffic is not.
    unit: Option<crate::evidence::Unit>,
    /// A gRPC call (`content-type: application/grpc*`): its status is
    /// `grpc-status` (trailers, or the head of a trailers-only answer), and
    /// the codes in `grpc_errors` (the route's) are the version's errors.
    grpc: bool,
    grpc_errors: u32,
    grpc_status: Option<u8>,
    /// A gRPC call's messages: the request's (counted by its body as it
    /// streams) and the response's. More than one either way: a streaming
    /// call, judged like a WebSocket session (`crate::grpc`).
    grpc_sent: Option<Arc<std::sync::atomic::AtomicU32>>,
    grpc_received: crate::grpc::Messages,
}

impl Completion {
    /// More than one gRPC message in either direction.
    fn streaming(&self) -> bool {
        self.grpc_received.count() > 1 || self.grpc_sent.as_ref().is_some_and(|c| c.load(Ordering::Relaxed) > 1)
    }

    fn finish(mut self: Box<Self>, bytes_out: u64, complete: bool) {
        if !complete {
            self.flags.push("truncated");
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        if let Some((m, v)) = &self.metrics {
            // Design §6: 5xx (the upstream's or ours) and truncation are
            // errors; for gRPC also the error codes, and an answer that
            // ended without any grpc-status (a broken call).
            let grpc_error = self.grpc
                && match self.grpc_status {
                    Some(code) => {
                        m.version(*v).grpc(code);
                        self.grpc_errors & (1 << code) != 0
                    }
                    None => self.status == 200,
                };
            let error = self.status >= 500 || !complete || grpc_error;
            if self.grpc && self.streaming() {
                // Like a WebSocket session: its end is one unit of test E
                // and of the error rate; how long it stayed open says
                // nothing of the version's latency.
                let vm = m.version(*v);
                vm.record_counters_only(self.status);
                if error {
                    vm.window.record_error_only(now);
                }
                if let Some(u) = &self.unit {
                    m.evidence.record(u, *v, error, None);
                }
            } else {
                m.version(*v).record(now, self.status, elapsed, error);
                if let Some(u) = &self.unit {
                    m.evidence.record(u, *v, error, Some(elapsed));
                }
            }
        }
        let Some(f) = &self.fields else { return };
        let reason = f.reason.as_deref();
        self.log.write(&Record {
            ts: rfc3339_now(),
            target: "access",
            request_id: &f.request_id,
            trace_id: f.trace_id.as_deref(),
            client_ip: &f.client_ip,
            client_subject: f.client_cert.as_deref().map(|c| c.subject.as_str()),
            method: &f.method,
            authority: &f.authority,
            path: &f.path,
            route: f.route.as_deref(),
            version: f.version.map(Version::as_str),
            revision: f.revision.as_deref(),
            reason,
            bucket: f.bucket,
            upstream: f.upstream.as_deref(),
            status: self.status,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_duration_ms: self.upstream_ms,
            bytes_in: self.bytes_in.as_ref().map_or(0, |c| c.load(Ordering::Relaxed)),
            bytes_out,
            flags: &self.flags,
        });
    }
}

impl Proxy {
    pub fn new(live: Arc<Live>, log: Arc<AccessLog>) -> Self {
        Self {
            live,
            log,
            in_flight: Arc::new(AtomicUsize::new(0)),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Requests currently being handled (for shutdown and metrics).
    /// Shutdown has begun (see `draining`).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// One request from `peer`, in hyper's service shape: it owns its
    /// handles and never fails, so the service hands this future to hyper
    /// as it is. (Each async level around it would hold a whole copy of it
    /// and copy it in on start: docs/design-notes.md, "What a request's
    /// future costs".)
    pub async fn handle(
        self: Arc<Self>,
        peer: Arc<Peer>,
        mut req: Request<Incoming>,
    ) -> Result<Response<RespBody>, std::convert::Infallible> {
        let served = self.live.load();
        let mut completion = self.completion(&served, &peer, &req);
        let http1 = req.version() <= http::Version::HTTP_11;
        let mut resp = match self.admit(&served, &peer, &mut req, &mut completion) {
            Err(e) => local_response(&e, completion),
            Ok(upgrade) => {
                let forwarded = self.forward(&served, &peer, req, upgrade, &mut completion).await;
                answer(forwarded, completion)
            }
        };
        if http1 && self.draining.load(Ordering::Acquire) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        Ok(resp)
    }

    /// What the request's end will record (the access log line, metrics).
    fn completion(&self, served: &Serving, peer: &Peer, req: &Request<Incoming>) -> Box<Completion> {
        Box::new(Completion {
            log: Arc::clone(&self.log),
            metrics: None,
            start: Instant::now(),
            _slot: None,
            _busy: peer.activity.as_ref().map(|a| a.begin()),
            fields: (self.log.enabled() && served.snapshot.access_log).then(|| LogFields {
                client_ip: peer.ip_str().to_owned(),
                client_cert: peer.client_cert.clone(),
                method: req.method().as_str().to_owned(),
                path: req.uri().path().to_owned(),
                ..LogFields::default()
            }),
            status: 0,
            upstream_ms: None,
            bytes_in: None,
            flags: Vec::new(),
            shadow_status: None,
            unit: None,
            grpc: req
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().get(..16).is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))),
            grpc_errors: crate::labels::GRPC_DEFAULT_ERRORS,
            grpc_status: None,
            grpc_sent: None,
            grpc_received: crate::grpc::Messages::default(),
        })
    }

    /// An in-flight slot, and for a WebSocket handshake the client side of
    /// the upgrade, taken now, before the request is taken apart.
    fn admit(
        &self,
        served: &Serving,
        peer: &Peer,
        req: &mut Request<Incoming>,
        completion: &mut Completion,
    ) -> Result<Option<websocket::ClientUpgrade>, ProxyError> {
        let slot = Slot::take(&self.in_flight, served.snapshot.limits.max_in_flight).ok_or(ProxyError::Overloaded)?;
        completion._slot = Some(slot);
        let h2_ws = websocket::is_extended_connect(req.method(), req.version(), req.extensions());
        if req.method() == http::Method::CONNECT && !h2_ws {
            // weir is not a forward proxy; HTTP/2 CONNECT is only for RFC 8441.
            return Err(ProxyError::Connect);
        }
        Ok((h2_ws || websocket::is_upgrade(req.method(), req.version(), req.headers())).then(|| {
            websocket::ClientUpgrade {
                on: hyper::upgrade::on(&mut *req),
                // Over HTTP/2 the tunnel is an open stream for as long as it lasts.
                hold: ConnHold::new(
                    Arc::clone(&peer.permit),
                    peer.activity.as_ref().filter(|_| h2_ws).map(|a| a.begin()),
                ),
                h2_key: h2_ws.then(websocket::new_key),
                client_key: (!h2_ws).then(|| req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned()).flatten(),
            }
        }))
    }

    /// The request's way through weir, phase by phase (each in `phases`).
    async fn forward(
        &self,
        served: &Serving,
        peer: &Peer,
        req: Request<Incoming>,
        upgrade: Option<websocket::ClientUpgrade>,
        completion: &mut Completion,
    ) -> Result<Response<crate::upstream::PooledBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let client_h2 = parts.version == http::Version::HTTP_2;
        let admitted = self.request_filter((&parts, peer.https), completion)?;
        let mut choice = self.choose(served, peer, &parts, &admitted, upgrade.is_some(), completion)?;
        let client = real_client(served, peer, &mut parts, completion);
        let edge = choice.route.edge.as_deref();
        let max_body = edge.and_then(|e| e.max_request_body).unwrap_or(served.snapshot.limits.max_request_body);
        if let Err(e) = edge::answered_here(served, &mut choice, (&parts, &admitted), (peer, client), max_body) {
            // weir's own answer (413, 429, a preflight, a redirect) says
            // nothing about either version: no metrics, no evidence.
            completion.metrics = None;
            completion.unit = None;
            return Err(e);
        }
        let upstream_start = Instant::now();
        let deadline = edge.and_then(|e| e.request_timeout).map(|d| upstream_start + d);
        let mut tried = crate::upstream::Tried::new();
        let conn = self.upstream_peer(served, &mut choice, &mut tried, upstream_start, completion).await?;
        let upgrading = upgrade.as_ref().map(|u| u.h2_key.as_ref());
        let added =
            phases::upstream_request_filter(peer, &choice, admitted.authority, &mut parts, upgrading, completion);
        let req_body = self.request_body(
            served,
            &choice,
            (&parts, &added),
            body,
            (admitted.declared, max_body, client_h2),
            completion,
        );
        let upstream = served.upstream(choice.route.backend(choice.version).upstream).ok_or(ProxyError::NoRoute)?;
        let resp = if upgrade.is_some() {
            // hyper's client writes this head: the added headers go in the map.
            added.apply(&mut parts.headers);
            // Boxed: a handshake is rare, and its state inline would be
            // the largest of every request's future.
            Box::pin(upstream.send_upgrade(conn, Request::from_parts(parts, req_body))).await?
        } else {
            // Replayed only if nothing is lost by sending it again: a method
            // safe to send twice (a bet is never placed twice) or a stream
            // the HTTP/2 upstream refused unprocessed, and no body or one
            // small enough to keep a copy of as it streams.
            let h2 = matches!(upstream.spec().protocol, crate::config::Protocol::H2c | crate::config::Protocol::H2);
            let (req_body, replay) = retry::Replay::keep(req_body, &parts.method, admitted.declared, h2);
            let grpc_limit = if completion.grpc {
                parts.headers.get("grpc-timeout").and_then(|v| crate::grpc::parse_grpc_timeout(v.as_bytes()))
            } else {
                None
            };
            let limits = edge::AttemptLimits::new(upstream.spec().request_timeout, edge, grpc_limit, deadline);
            limits.apply(&mut parts)?;
            let attempt = upstream.send(conn, &mut parts, req_body, added.as_slice()).await;
            match replay {
                Some(replay) => {
                    let retry = retry::Retry { upstream, limits: &limits, added: added.as_slice(), choice: &choice };
                    retry.until_settled(attempt, replay, &mut parts, &mut tried, completion).await?
                }
                None => attempt?,
            }
        };
        if completion.fields.is_some() {
            completion.upstream_ms = Some(upstream_start.elapsed().as_secs_f64() * 1000.0);
        }
        self.response_filter(&choice, resp, upgrade, completion)
    }
}

/// Who the client is behind trusted proxies (`real_ip`), noted for the
/// access log; from an untrusted peer, the forwarded list it brought is
/// dropped. None without `real_ip`.
fn real_client(served: &Serving, peer: &Peer, parts: &mut Parts, completion: &mut Completion) -> Option<IpAddr> {
    let r = served.snapshot.real_ip.as_ref()?;
    let (ip, trusted) = r.client(peer.addr, &parts.headers);
    if !trusted {
        parts.headers.remove(&headers::X_FORWARDED_FOR);
        parts.headers.remove(&r.header);
    }
    if let Some(f) = completion.fields.as_mut() {
        f.client_ip = ip.to_string();
    }
    Some(ip)
}

/// The client's response for what `forward` came back with.
fn answer(
    forwarded: Result<Response<crate::upstream::PooledBody>, ProxyError>,
    mut completion: Box<Completion>,
) -> Response<RespBody> {
    match forwarded {
        Ok(resp) => {
            if let Some(tx) = completion.shadow_status.take() {
                let _ = tx.send(resp.status().as_u16());
            }
            if completion.grpc {
                // A trailers-only answer carries its status in the head.
                completion.grpc_status =
                    resp.headers().get("grpc-status").and_then(|v| crate::labels::parse_grpc_status(v.as_bytes()));
            }
            resp.map(|b| RespBody::upstream(b, Some(completion)))
        }
        Err(e) => {
            if let Some(tx) = completion.shadow_status.take() {
                let _ = tx.send(e.status().as_u16());
            }
            if let (ProxyError::Upstream(ue), Some((m, v))) = (&e, &completion.metrics) {
                m.version(*v).upstream_error(ue.kind());
            }
            local_response(&e, completion)
        }
    }
}

/// weir's own error for a gRPC client: a valid gRPC status (HTTP 200, a
/// trailers-only answer: `grpc-status` and `grpc-message` in the head and
/// no body), never an HTML or text 5xx. Timeouts are DEADLINE_EXCEEDED,
/// other upstream failures and overload UNAVAILABLE; a request refused for
/// the client's own fault gets the code gRPC maps its HTTP status to.
fn grpc_local_response(err: &ProxyError, mut completion: Box<Completion>) -> Response<RespBody> {
    let http = err.status();
    let code: u8 = match (err.fault(), http.as_u16()) {
        (error::Fault::Upstream, 504) => 4,
        (error::Fault::Upstream | error::Fault::Ours, _) => 14,
        (error::Fault::Client, 404 | 405) => 12,
        (error::Fault::Client, 408) => 1,
        // gRPC's HTTP mapping: 429 is UNAVAILABLE (try again later).
        (error::Fault::Client, 429) => 14,
        (error::Fault::Client, 413 | 431) => 8,
        (error::Fault::Client, _) => 13,
    };
    match err.fault() {
        // A refused call (rate limit, bad request) is the client's: no warning per call.
        error::Fault::Client => tracing::debug!(error = %err, grpc_status = code, "gRPC call answered by weir"),
        _ => tracing::warn!(error = %err, grpc_status = code, "gRPC call answered by weir"),
    }
    completion.status = 200;
    completion.grpc_status = Some(code);
    let message = format!("weir: {err}");
    let mut resp = Response::new(RespBody::local_empty(Some(completion)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    // grpc-message is percent-encoded (gRPC spec): printable ASCII but '%'
    // goes as it is.
    let encoded: String = message
        .bytes()
        .map(|b| if (0x20..0x7f).contains(&b) && b != b'%' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        h.insert("grpc-message", v);
    }
    h.insert("x-weir-error", HeaderValue::from_static(err.tag()));
    resp
}

/// The response weir itself generates for an error.
fn local_response(err: &ProxyError, mut completion: Box<Completion>) -> Response<RespBody> {
    let status = err.status();
    completion.status = status.as_u16();
    completion.flags.push(err.tag());
    if let (ProxyError::RateLimited(_), true) = (err, completion.grpc) {
        return grpc_local_response(err, completion);
    }
    if let ProxyError::RateLimited(wait) = err {
        let mut resp =
            Response::new(RespBody::local(Bytes::from_static(b"weir: Too Many Requests\n"), Some(completion)));
        *resp.status_mut() = status;
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp.headers_mut().insert("x-weir-error", HeaderValue::from_static(err.tag()));
        return resp;
    }
    if let ProxyError::Preflight(headers) = err {
        let mut resp = Response::new(RespBody::local_empty(Some(completion)));
        *resp.status_mut() = status;
        *resp.headers_mut() = (**headers).clone();
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return resp;
    }
    if let ProxyError::Redirect(_, location) = err {
        let mut resp = Response::new(RespBody::local_empty(Some(completion)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::LOCATION, location.clone());
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return resp;
    }
    if completion.grpc {
        return grpc_local_response(err, completion);
    }
    match err.fault() {
        error::Fault::Upstream => tracing::warn!(error = %err, status = status.as_u16(), "upstream failure"),
        error::Fault::Ours => tracing::warn!(error = %err, status = status.as_u16(), "request refused"),
        error::Fault::Client => tracing::debug!(error = %err, status = status.as_u16(), "bad request"),
    }
    let text = Bytes::from(format!("weir: {}\n", status.canonical_reason().unwrap_or("error")));
    let mut resp = Response::new(RespBody::local(text, Some(completion)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert("x-weir-error", HeaderValue::from_static(err.tag()));
    if err.closes() {
        // HTTP/1 only in effect: hyper drops connection headers on h2.
        resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
