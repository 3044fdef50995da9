//! The hyper service: one request's lifecycle.
//!
//! Phases: load the snapshot once → validate the head (Host, body size) →
//! `routing::decide` → connect (canary unreachable ⇒ stable, reason
//! `fallback`) → rewrite headers in place → send → rewrite response headers
//! → stream the body back. The request is finished when the response body is
//! dropped: `Completion` then writes the access-log line and frees the
//! in-flight slot. Errors become responses in exactly one place
//! (`ProxyError::status`, `local_response`).

mod body;
pub mod error;
use crate::headers;

pub use body::RespBody;
pub use error::ProxyError;

use crate::access_log::{AccessLog, Record, rfc3339_now};
use crate::live::{Live, Served};
use crate::metrics::RouteMetrics;
use crate::routing::{self, BUCKETS, Facts, Reason, Version};
use crate::shadow;
use crate::upstream::{ReqBody, UpstreamError};
use crate::websocket;
use bytes::Bytes;
use headers::{X_REQUEST_ID, X_WEIR_ROUTE, X_WEIR_VERSION};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use rand::RngExt;
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
    /// The client address, already in its header form (X-Forwarded-For).
    ip: HeaderValue,
    /// The connection's `max_connections` slot; an upgraded WebSocket keeps it.
    permit: crate::limits::ConnPermit,
}

impl Peer {
    pub fn new(addr: SocketAddr, https: bool, permit: crate::limits::ConnPermit) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { https, ip, permit }
    }

    fn ip_str(&self) -> &str {
        self.ip.to_str().unwrap_or("unknown")
    }
}

/// A slot in `max_in_flight`; released on drop.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn acquire(counter: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        if counter.fetch_add(1, Ordering::AcqRel) >= max {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(counter)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
    _slot: Option<InFlight>,
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
}

impl Completion {
    fn finish(mut self: Box<Self>, bytes_out: u64, complete: bool) {
        if !complete {
            self.flags.push("truncated");
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        if let Some((m, v)) = &self.metrics {
            // Design §6: 5xx (the upstream's or ours) and truncation are errors.
            let error = self.status >= 500 || !complete;
            m.version(*v).record(now, self.status, elapsed, error);
            if let Some(u) = &self.unit {
                m.evidence.record(u, *v, error, Some(elapsed));
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

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// One request from `peer`.
    pub async fn handle(&self, peer: &Peer, req: Request<Incoming>) -> Response<RespBody> {
        let start = Instant::now();
        let served = self.live.load();
        let done = Box::new(Completion {
            log: Arc::clone(&self.log),
            metrics: None,
            start,
            _slot: None,
            fields: (self.log.enabled() && served.snapshot.access_log).then(|| LogFields {
                client_ip: peer.ip_str().to_owned(),
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
        });
        let http1 = req.version() <= http::Version::HTTP_11;
        let mut resp = self.respond(&served, peer, req, done).await;
        if http1 && self.draining.load(Ordering::Acquire) && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn respond(
        &self,
        served: &Served,
        peer: &Peer,
        mut req: Request<Incoming>,
        mut done: Box<Completion>,
    ) -> Response<RespBody> {
        match InFlight::acquire(&self.in_flight, served.snapshot.limits.max_in_flight) {
            Some(slot) => done._slot = Some(slot),
            None => return local_response(&ProxyError::Overloaded, done),
        }
        // A WebSocket handshake: take the client side of the upgrade now,
        // before the request is taken apart.
        let upgrade =
            websocket::is_upgrade(req.method(), req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
        let upgrade = upgrade.map(|u| (u, Arc::clone(&peer.permit)));
        match self.forward(served, peer, req, upgrade, &mut done).await {
            Ok(resp) => {
                if let Some(tx) = done.shadow_status.take() {
                    let _ = tx.send(resp.status().as_u16());
                }
                resp.map(|b| RespBody::upstream(b, Some(done)))
            }
            Err(e) => {
                if let Some(tx) = done.shadow_status.take() {
                    let _ = tx.send(e.status().as_u16());
                }
                if let (ProxyError::Upstream(ue), Some((m, v))) = (&e, &done.metrics) {
                    m.version(*v).upstream_error(ue.kind());
                }
                local_response(&e, done)
            }
        }
    }

    async fn forward(
        &self,
        served: &Served,
        peer: &Peer,
        req: Request<Incoming>,
        upgrade: Option<(OnUpgrade, crate::limits::ConnPermit)>,
        done: &mut Completion,
    ) -> Result<Response<crate::upstream::PooledBody>, ProxyError> {
        let snap = &served.snapshot;
        let (mut parts, body) = req.into_parts();
        if parts.version <= http::Version::HTTP_11 {
            headers::check_framing(&parts.headers).map_err(ProxyError::Framing)?;
        }
        if parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) > headers::MAX_URI {
            return Err(ProxyError::UriTooLong);
        }
        let authority = headers::authority(&parts).map_err(ProxyError::Host)?;
        // The authority in header form, for X-Forwarded-Host (and Host when
        // the client sent only an absolute URI): usually the Host value itself.
        let authority_value = match parts.headers.get(HOST) {
            Some(h) if h.as_bytes() == authority.as_bytes() => Some(h.clone()),
            _ if authority.is_empty() => None,
            _ => HeaderValue::from_str(authority).ok(),
        };
        let (hostname, _port) = headers::split_port(authority);
        if let Some(f) = done.fields.as_mut() {
            authority.clone_into(&mut f.authority);
            f.trace_id = headers::trace_id(&parts.headers).map(str::to_owned);
        }
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > snap.limits.max_request_body) {
            return Err(ProxyError::BodyTooLarge);
        }
        let draw = rand::rng().random_range(0..BUCKETS);
        let facts = Facts { host: hostname, path: parts.uri.path(), query: parts.uri.query(), headers: &parts.headers };
        let Some(decision) = routing::decide(&snap.table, &facts, draw) else {
            self.live.registry.unrouted.fetch_add(1, Ordering::Relaxed);
            return Err(ProxyError::NoRoute);
        };
        let route = snap.table.routes.get(decision.route).ok_or(ProxyError::NoRoute)?;
        let (mut version, mut reason) = (decision.version, decision.reason);
        let metrics = served.route_metrics.get(decision.route).map(Arc::clone);
        // Mirrored? Decided now, while the client's head is as it came.
        let mirror = route.shadow.as_ref().filter(|sh| {
            upgrade.is_none()
                && shadow::sampled(
                    sh,
                    route,
                    &parts.method,
                    decision.bucket,
                    &facts,
                    rand::rng().random_range(0..BUCKETS),
                )
        });
        done.metrics = metrics.as_ref().map(|m| (Arc::clone(m), version));
        done.unit = route.analysis.as_ref().and_then(|_| crate::evidence::Unit::of(route, &decision));

        // Connect before touching the request: a canary we cannot reach has
        // not seen it, so stable can take it whatever the method (§2 step 7).
        let upstream_start = Instant::now();
        let pick = |v: Version| served.upstream(route.backend(v).upstream).ok_or(ProxyError::NoRoute);
        let conn = match pick(version)?.connect().await {
            Ok(c) => c,
            Err(e) if version == Version::Canary && e.is_connect() => {
                tracing::debug!(route = %route.name, error = %e, "canary unreachable, falling back to stable");
                // The canary failed: that counts against it for analysis,
                // although the client is served by stable.
                if let Some(m) = &metrics {
                    m.canary.upstream_error(e.kind());
                    m.canary.window.record(Instant::now(), upstream_start.elapsed(), true);
                    if let Some(u) = done.unit.take() {
                        m.evidence.record(&u, Version::Canary, true, Some(upstream_start.elapsed()));
                    }
                }
                version = Version::Stable;
                reason = Reason::Fallback;
                done.flags.push("fallback");
                done.metrics = metrics.as_ref().map(|m| (Arc::clone(m), version));
                pick(version)?.connect().await?
            }
            Err(e) => return Err(e.into()),
        };
        let backend = route.backend(version);
        if let Some(m) = &metrics {
            m.version(version).decision(reason);
        }
        if let Some(f) = done.fields.as_mut() {
            f.route = Some(Arc::clone(&route.name));
            f.version = Some(version);
            f.revision = Some(Arc::clone(&backend.revision));
            f.reason = Some(reason.describe(route));
            f.bucket = decision.bucket.map(|b| b.value);
            f.upstream = Some(Arc::clone(&backend.upstream_name));
        }

        // Rewrite the request head in place. Room for the headers added
        // below, so the map grows at most once.
        parts.headers.reserve(8);
        let keep = route.override_.as_ref().and_then(|o| o.header.as_ref());
        headers::strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        if upgrade.is_some() {
            headers::set_websocket_upgrade(&mut parts.headers);
        }
        headers::strip_internal(&mut parts.headers, keep);
        let proto = if peer.https { "https" } else { "http" };
        headers::add_forwarded(&mut parts.headers, &peer.ip, proto, authority_value.clone());
        if parts.headers.get(&X_REQUEST_ID).is_none_or(|v| v.to_str().is_err()) {
            parts.headers.insert(&X_REQUEST_ID, headers::new_request_id(rand::rng().random::<u128>()));
        }
        if let Some(f) = done.fields.as_mut() {
            let id = parts.headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
            id.clone_into(&mut f.request_id);
        }
        parts.headers.insert(&X_WEIR_ROUTE, route.name_header.clone());
        parts.headers.insert(&X_WEIR_VERSION, version_value(version));
        // Route and forward with one authority (RFC 9112 §3.2.2): with an
        // absolute-form target the upstream gets the target's authority as
        // Host, never a Host that would have matched another route.
        if let Some(v) = authority_value
            && parts.headers.get(HOST) != Some(&v)
        {
            parts.headers.insert(HOST, v);
        }
        if parts.uri.authority().is_some() {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"));
        }
        parts.version = http::Version::HTTP_11;
        let has_body = !hyper::body::Body::is_end_stream(&body) && parts.method != Method::HEAD;
        let mut req_body = if has_body {
            let counter = done.fields.is_some().then(|| Arc::new(AtomicU64::new(0)));
            done.bytes_in.clone_from(&counter);
            ReqBody::new(body, snap.limits.max_request_body, snap.limits.body_timeout, counter)
        } else {
            ReqBody::empty()
        };
        if let (Some(sh), Some(m)) = (mirror, metrics.as_ref()) {
            req_body = self.mirror(served, sh, m, &parts, declared, has_body, req_body, done);
        }

        let upstream = pick(version)?;
        let req = Request::from_parts(parts, req_body);
        let resp =
            if upgrade.is_some() { upstream.send_upgrade(conn, req).await? } else { upstream.send(conn, req).await? };
        if done.fields.is_some() {
            done.upstream_ms = Some(upstream_start.elapsed().as_secs_f64() * 1000.0);
        }
        let mut resp = resp;
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched {
            // Only a WebSocket handshake may switch protocols; a 101 to
            // anything else (or to another protocol) is broken.
            let (Some((client, permit)), Some(m)) = (upgrade, metrics.as_ref()) else {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            };
            if !websocket::accepts_websocket(resp.headers()) {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            }
            let upstream_side = hyper::upgrade::on(&mut resp);
            let policy = &route.websocket;
            let settings = websocket::Settings {
                idle_timeout: policy.idle_timeout,
                ping_interval: policy.ping_interval,
                rtt_interval: policy.rtt_interval,
            };
            let socket = websocket::NewSocket {
                route: Arc::clone(&route.name),
                version,
                metrics: Arc::clone(m),
                settings,
                permit,
                unit: done.unit,
            };
            self.live.websockets.spawn(socket, client, upstream_side);
        }
        let (mut rparts, rbody) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rparts.headers, switched);
        if switched {
            headers::set_websocket_upgrade(&mut rparts.headers);
        }
        rparts.version = http::Version::HTTP_11;
        if route.expose_version {
            rparts.headers.insert(&X_WEIR_VERSION, version_value(version));
        }
        if let (Some(bucket), Some(cookie)) =
            (decision.set_cookie, route.sticky.as_ref().and_then(|s| s.cookie.as_ref()))
            && let Ok(v) = HeaderValue::from_str(&cookie.set_cookie_header(bucket))
        {
            rparts.headers.append(SET_COOKIE, v);
            done.flags.push("bucket_cookie_set");
        }
        done.status = rparts.status.as_u16();
        Ok(Response::from_parts(rparts, rbody))
    }
}

impl Proxy {
    /// Start the shadow copy of this request (design §10) and return the
    /// primary's body, teed when the copy needs it. Never waits.
    #[allow(clippy::too_many_arguments)]
    fn mirror(
        &self,
        served: &Served,
        sh: &crate::config::Shadow,
        metrics: &Arc<RouteMetrics>,
        parts: &http::request::Parts,
        declared: Option<u64>,
        has_body: bool,
        body: ReqBody,
        done: &mut Completion,
    ) -> ReqBody {
        if declared.is_some_and(|n| n > sh.max_body) {
            metrics.shadow.outcome(crate::metrics::ShadowOutcome::SkippedBody);
            return body;
        }
        let Some(upstream) = served.upstream(sh.upstream) else { return body };
        let Some(slot) = shadow::Slot::acquire(metrics, sh.max_in_flight) else { return body };
        let (body, copy_body) = if has_body {
            let (tee, rx) = crate::upstream::Tee::new(sh.max_body);
            (body.with_tee(tee), shadow::MirrorBody::Pending(rx))
        } else {
            (body, shadow::MirrorBody::Empty)
        };
        let (tx, primary) = tokio::sync::oneshot::channel();
        done.shadow_status = Some(tx);
        let copy = shadow::Mirror {
            upstream: Arc::clone(upstream),
            timeout: sh.timeout,
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: shadow::Mirror::head(parts.headers.clone()),
            body: copy_body,
            primary,
        };
        shadow::spawn(copy, slot);
        body
    }
}

/// The response weir itself generates for an error.
fn local_response(err: &ProxyError, mut done: Box<Completion>) -> Response<RespBody> {
    let status = err.status();
    done.status = status.as_u16();
    done.flags.push(err.tag());
    match err.fault() {
        error::Fault::Upstream => tracing::warn!(error = %err, status = status.as_u16(), "upstream failure"),
        error::Fault::Ours => tracing::warn!(error = %err, status = status.as_u16(), "request refused"),
        error::Fault::Client => tracing::debug!(error = %err, status = status.as_u16(), "bad request"),
    }
    let text = Bytes::from(format!("weir: {}\n", status.canonical_reason().unwrap_or("error")));
    let mut resp = Response::new(RespBody::local(text, Some(done)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert("x-weir-error", HeaderValue::from_static(err.tag()));
    if err.closes() {
        // HTTP/1 only in effect: hyper drops connection headers on h2.
        resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
