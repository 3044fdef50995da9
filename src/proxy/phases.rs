//! The phases of one proxied request (see the module doc of `proxy`), each
//! a function with one job. `Proxy::forward` calls them in order.

use super::{Completion, Peer, Proxy, ProxyError, version_value};
use crate::headers::{self, X_REQUEST_ID, X_WEIR_ROUTE, X_WEIR_VERSION};
use crate::live::Serving;
use crate::metrics::RouteMetrics;
use crate::routing::policy::Shadow;
use crate::routing::{self, BUCKETS, Decision, Facts, Reason, Route, Version};
use crate::shadow;
use crate::upstream::{Checkout, PooledBody, ReqBody, Tried, UpstreamError};
use crate::websocket;
use http::header::{CONTENT_LENGTH, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rand::RngExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the head check established.
pub(super) struct Admitted {
    /// The authority to route and forward with, in header form (None: an
    /// HTTP/1.0 request without one).
    pub authority: Option<HeaderValue>,
    /// The client's `Content-Length`.
    pub declared: Option<u64>,
}

/// The routing decision and what follows from it for this request.
pub(super) struct Choice<'s> {
    pub route: &'s Route,
    pub decision: Decision,
    /// May become stable on fallback.
    pub version: Version,
    pub reason: Reason,
    pub metrics: Option<Arc<RouteMetrics>>,
    /// Mirror this request to the route's shadow.
    pub mirror: Option<&'s Shadow>,
    /// The request's `Origin`, when the route's `cors` allows it.
    pub cors_origin: Option<HeaderValue>,
}

impl Proxy {
    /// Phase 1: Refuse a head weir will not forward; fix the authority.
    pub(super) fn request_filter(
        &self,
        (parts, https): (&Parts, bool),
        completion: &mut Completion,
    ) -> Result<Admitted, ProxyError> {
        if parts.version <= http::Version::HTTP_11 {
            headers::check_framing(&parts.headers).map_err(ProxyError::Framing)?;
        }
        if parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) > headers::MAX_URI {
            return Err(ProxyError::UriTooLong);
        }
        headers::check_scheme(parts, https).map_err(ProxyError::Host)?;
        let authority = headers::authority(parts).map_err(ProxyError::Host)?;
        // In header form: usually the Host value itself (no copy).
        let value = match parts.headers.get(HOST) {
            Some(h) if h.as_bytes() == authority.as_bytes() => Some(h.clone()),
            _ if authority.is_empty() => None,
            _ => HeaderValue::from_str(authority).ok(),
        };
        if let Some(f) = completion.fields.as_mut() {
            authority.clone_into(&mut f.authority);
            f.trace_id = headers::trace_id(&parts.headers).map(str::to_owned);
        }
        // Checked against the route's limit once the route is known.
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Ok(Admitted { authority: value, declared })
    }

    /// Phase 2: Route, version and reason; mirror or not; metrics and evidence.
    pub(super) fn choose<'s>(
        &self,
        served: &'s Serving,
        peer: &Peer,
        parts: &Parts,
        admitted: &Admitted,
        upgrading: bool,
        completion: &mut Completion,
    ) -> Result<Choice<'s>, ProxyError> {
        let snap = &served.snapshot;
        let authority = admitted.authority.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
        let (host, _port) = headers::split_port(authority);
        let facts = Facts {
            host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            client_cert: peer.client_cert(),
            method: &parts.method,
            https: peer.https,
        };
        let Some(decision) = routing::decide(&snap.table, &facts, rand::rng().random_range(0..BUCKETS)) else {
            self.live.registry.unrouted.fetch_add(1, Ordering::Relaxed);
            return Err(ProxyError::NoRoute);
        };
        let route = snap.table.routes.get(decision.route).ok_or(ProxyError::NoRoute)?;
        let metrics = served.route_metrics.get(decision.route).map(Arc::clone);
        // Decided now, while the client's head is as it came.
        let mirror = route.shadow.as_deref().filter(|sh| {
            !upgrading
                && shadow::sampled(
                    sh,
                    route,
                    &parts.method,
                    decision.bucket,
                    &facts,
                    rand::rng().random_range(0..BUCKETS),
                )
        });
        completion.metrics = metrics.as_ref().map(|m| (Arc::clone(m), decision.version));
        completion.grpc_errors = route.grpc_errors;
        completion.unit = route.analysis.as_ref().and_then(|_| crate::evidence::Unit::of(route, &decision));
        Ok(Choice {
            route,
            version: decision.version,
            reason: decision.reason,
            decision,
            metrics,
            mirror,
            cors_origin: None,
        })
    }

    /// Phase 3: A connection to the chosen version (its endpoints tried as
    /// `retry` allows; each failed attempt is charged to the version). A
    /// canary that cannot be reached has not seen the request, so stable
    /// takes it whatever the method (design §2 step 7); the failure is
    /// charged to canary.
    pub(super) async fn upstream_peer(
        &self,
        served: &Serving,
        c: &mut Choice<'_>,
        tried: &mut Tried,
        started: Instant,
        completion: &mut Completion,
    ) -> Result<Checkout, ProxyError> {
        let pick = |v: Version| served.upstream(c.route.backend(v).upstream).ok_or(ProxyError::NoRoute);
        let first = pick(c.version)?.connect(tried).await;
        charge_failed_attempts(c, tried, completion);
        let conn = match first {
            Ok(conn) => conn,
            Err(e) if c.version == Version::Canary && e.is_connect() => {
                tracing::debug!(route = %c.route.name, error = %e, "canary unreachable, falling back to stable");
                if let Some(m) = &c.metrics {
                    m.canary.upstream_error(e.kind());
                    m.canary.window.record(Instant::now(), started.elapsed(), true);
                    if let Some(u) = completion.unit.take() {
                        m.evidence.record(&u, Version::Canary, true, Some(started.elapsed()));
                    }
                }
                (c.version, c.reason) = (Version::Stable, Reason::Fallback);
                completion.flags.push("fallback");
                completion.metrics = c.metrics.as_ref().map(|m| (Arc::clone(m), Version::Stable));
                *tried = Tried::new();
                let conn = pick(Version::Stable)?.connect(tried).await;
                charge_failed_attempts(c, tried, completion);
                conn?
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(m) = &c.metrics {
            m.version(c.version).decision(c.reason);
        }
        if let Some(f) = completion.fields.as_mut() {
            let backend = c.route.backend(c.version);
            f.route = Some(Arc::clone(&c.route.name));
            f.version = Some(c.version);
            f.revision = Some(Arc::clone(&backend.revision));
            f.reason = Some(c.reason.describe(c.route));
            f.bucket = c.decision.bucket.map(|b| b.value);
            f.upstream = Some(Arc::clone(&backend.upstream_name));
        }
        Ok(conn)
    }

    /// Phase 5: The body to send: limited, guarded against stalls, and teed to
    /// the shadow when mirrored. `declared`: the client's Content-Length;
    /// `client_h2`: the request came over HTTP/2 (its leftover body is reset,
    /// not drained, once the answer has ended).
    pub(super) fn request_body(
        &self,
        served: &Serving,
        c: &Choice<'_>,
        (parts, added): (&Parts, &headers::Added),
        body: Incoming,
        (declared, max_body, client_h2): (Option<u64>, u64, bool),
        completion: &mut Completion,
    ) -> ReqBody {
        let limits = &served.snapshot.limits;
        let has_body = !hyper::body::Body::is_end_stream(&body) && parts.method != Method::HEAD;
        let req_body = if has_body {
            let counter = completion.fields.is_some().then(|| Arc::new(AtomicU64::new(0)));
            completion.bytes_in.clone_from(&counter);
            let mut body = ReqBody::new(body, max_body, limits.body_timeout, counter);
            if completion.grpc {
                let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
                completion.grpc_sent = Some(Arc::clone(&sent));
                body = body.with_grpc_count(sent);
            }
            if client_h2 { body.over_h2() } else { body }
        } else {
            ReqBody::empty()
        };
        match (c.mirror, c.metrics.as_ref()) {
            (Some(sh), Some(m)) => mirror(served, sh, m, (parts, added), (req_body, has_body, declared), completion),
            _ => req_body,
        }
    }

    /// Phase 7: The answer on its way back: a 101 becomes a relayed WebSocket;
    /// hop-by-hop headers go; the version header and the sticky cookie.
    pub(super) fn response_filter(
        &self,
        c: &Choice<'_>,
        mut resp: Response<PooledBody>,
        upgrade: Option<websocket::ClientUpgrade>,
        completion: &mut Completion,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let mut over_h2 = false;
        if switched {
            // Only a WebSocket handshake may switch protocols; a 101 to
            // anything else (or to another protocol) is broken.
            let (Some(websocket::ClientUpgrade { on: client, hold, h2_key, client_key }), Some(m)) =
                (upgrade, c.metrics.as_ref())
            else {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            };
            if !websocket::accepts_websocket(resp.headers()) {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            }
            // The upstream's answer must be to this handshake's key (RFC
            // 6455 §4.1): weir's own key for an HTTP/2 client (RFC 8441: the
            // client cannot check an answer to a key it never sent), the
            // client's for HTTP/1.1 (weir checks before it starts relaying).
            over_h2 = h2_key.is_some();
            let Some(key) = h2_key.or(client_key) else {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            };
            let want = websocket::accept_for(key.as_bytes());
            if resp.headers().get(SEC_WEBSOCKET_ACCEPT).is_none_or(|v| v.as_bytes() != want.as_bytes()) {
                return Err(ProxyError::Upstream(UpstreamError::Protocol101));
            }
            let upstream_side = hyper::upgrade::on(&mut resp);
            let policy = &c.route.websocket;
            let socket = websocket::NewSocket {
                route: Arc::clone(&c.route.name),
                version: c.version,
                metrics: Arc::clone(m),
                settings: websocket::Settings {
                    idle_timeout: policy.idle_timeout,
                    ping_interval: policy.ping_interval,
                    rtt_interval: policy.rtt_interval,
                },
                hold,
                unit: completion.unit,
            };
            self.live.websockets.spawn(socket, client, upstream_side);
        }
        let (mut rparts, rbody) = resp.into_parts();
        headers::hop::strip_hop_by_hop(&mut rparts.headers, switched && !over_h2);
        if over_h2 {
            // The stream is the tunnel: 200, no upgrade headers (RFC 8441 §5).
            rparts.status = StatusCode::OK;
            rparts.headers.remove(SEC_WEBSOCKET_ACCEPT);
        } else if switched {
            headers::hop::set_websocket_upgrade(&mut rparts.headers);
        }
        rparts.version = http::Version::HTTP_11;
        if let Some(e) = &c.route.edge {
            e.modifiers.response.apply(&mut rparts.headers);
            if let (Some(cors), Some(origin)) = (&e.cors, &c.cors_origin) {
                cors.mark(origin, None, &mut rparts.headers);
            }
        }
        if let Some(m) = &c.route.backend(c.version).modifiers {
            m.response.apply(&mut rparts.headers);
        }
        if c.route.expose_version {
            rparts.headers.insert(&X_WEIR_VERSION, version_value(c.version));
        }
        if let (Some(bucket), Some(cookie)) =
            (c.decision.set_cookie, c.route.sticky.as_ref().and_then(|s| s.cookie.as_ref()))
            && let Ok(v) = HeaderValue::from_str(&cookie.set_cookie_header(bucket))
        {
            rparts.headers.append(SET_COOKIE, v);
            completion.flags.push("bucket_cookie_set");
        }
        completion.status = rparts.status.as_u16();
        Ok(Response::from_parts(rparts, rbody))
    }
}

/// Failed attempts that were retried (left in `tried.failed` by the
/// upstream): each is evidence against the version it was made on, like a
/// request that failed (design §13: a retry that saved the user, or an
/// ejection, must not hide a bad canary). The access log flags `retried`.
pub(super) fn charge_failed_attempts(c: &Choice<'_>, tried: &mut Tried, completion: &mut Completion) {
    if tried.failed.is_empty() {
        return;
    }
    if !completion.flags.contains(&"retried") {
        completion.flags.push("retried");
    }
    let Some(m) = &c.metrics else {
        tried.failed.clear();
        return;
    };
    let v = m.version(c.version);
    let now = Instant::now();
    for kind in tried.failed.drain(..) {
        if let Some(kind) = kind {
            v.upstream_error(kind);
        }
        v.failed_attempt(now);
        if let Some(u) = &completion.unit {
            m.evidence.record(u, c.version, true, None);
        }
    }
}

/// Phase 4: Rewrite the request head in place for the upstream. The headers
/// weir adds come back apart from the map (see `headers::Added`).
pub(super) fn upstream_request_filter(
    peer: &Peer,
    c: &Choice<'_>,
    authority: Option<HeaderValue>,
    parts: &mut Parts,
    upgrading: Option<Option<&HeaderValue>>,
    completion: &mut Completion,
) -> headers::Added {
    let keep = c.route.override_.as_ref().and_then(|o| o.header.as_ref());
    headers::hop::strip_hop_by_hop(&mut parts.headers, upgrading.is_some());
    if let Some(h2_key) = upgrading {
        headers::hop::set_websocket_upgrade(&mut parts.headers);
        if let Some(key) = h2_key {
            // RFC 8441 → RFC 6455: the upstream gets an HTTP/1.1 handshake.
            parts.method = Method::GET;
            parts.headers.insert(SEC_WEBSOCKET_KEY, key.clone());
        }
    }
    headers::strip_internal(&mut parts.headers, keep);
    if let Some(k) = keep.filter(|k| **k == X_WEIR_ROUTE || **k == X_WEIR_VERSION) {
        // An override header named like one weir sets: weir's value wins.
        parts.headers.remove(k);
    }
    // The route's modifiers, then the version's (Gateway API: rule
    // filters, then backendRef filters).
    if let Some(e) = &c.route.edge {
        e.modifiers.request.apply(&mut parts.headers);
    }
    if let Some(m) = &c.route.backend(c.version).modifiers {
        m.request.apply(&mut parts.headers);
    }
    let rewrite = c.route.edge.as_ref().and_then(|e| e.rewrite.as_ref());
    let mut added = headers::Added::new();
    let proto = if peer.https { "https" } else { "http" };
    headers::add_forwarded(&mut parts.headers, &peer.ip, proto, authority.clone(), &mut added);
    // X-Forwarded-Host keeps the client's; the upstream's Host is the rewrite's.
    let authority = match rewrite.and_then(|r| r.hostname.clone()) {
        Some(h) => Some(h),
        None => authority,
    };
    // The client's id goes on when it is usable; otherwise a fresh one.
    let client_id = parts.headers.get(&X_REQUEST_ID).map(|v| v.to_str().is_ok());
    if client_id != Some(true) {
        if client_id.is_some() {
            parts.headers.remove(&X_REQUEST_ID);
        }
        added.push(&X_REQUEST_ID, headers::new_request_id(rand::rng().random::<u128>()));
    }
    if let Some(f) = completion.fields.as_mut() {
        let id = added.get(&X_REQUEST_ID).or_else(|| parts.headers.get(&X_REQUEST_ID));
        id.and_then(|v| v.to_str().ok()).unwrap_or_default().clone_into(&mut f.request_id);
    }
    added.push(&X_WEIR_ROUTE, c.route.name_header.clone());
    added.push(&X_WEIR_VERSION, version_value(c.version));
    // Route and forward with one authority (RFC 9112 §3.2.2): with an
    // absolute-form target the upstream gets the target's authority as
    // Host, never a Host that would have matched another route.
    if let Some(v) = authority
        && parts.headers.get(HOST) != Some(&v)
    {
        parts.headers.insert(HOST, v);
    }
    if parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"));
    }
    if let Some(change) = rewrite.and_then(|r| r.path.as_ref()) {
        super::edge::rewrite_path(change, &c.route.path, &mut parts.uri, &c.route.name);
    }
    parts.version = http::Version::HTTP_11;
    added
}

/// Start the shadow copy of this request (design §10) and return the
/// primary's body, teed when the copy needs it. Never waits. `body`: the
/// primary's body, whether the request has one, its declared length.
fn mirror(
    served: &Serving,
    sh: &Shadow,
    metrics: &Arc<RouteMetrics>,
    (parts, added): (&Parts, &headers::Added),
    (body, has_body, declared): (ReqBody, bool, Option<u64>),
    completion: &mut Completion,
) -> ReqBody {
    if declared.is_some_and(|n| n > sh.max_body) {
        metrics.shadow.outcome(crate::metrics::ShadowOutcome::SkippedBody);
        return body;
    }
    let Some(upstream) = served.upstream(sh.upstream) else { return body };
    let Some(slot) = shadow::MirrorPermit::acquire(metrics, sh.max_in_flight) else { return body };
    let (body, copy_body) = if has_body {
        let (tee, rx) = crate::upstream::Tee::new(sh.max_body);
        (body.with_tee(tee), shadow::MirrorBody::Pending(rx))
    } else {
        (body, shadow::MirrorBody::Empty)
    };
    let (tx, primary) = tokio::sync::oneshot::channel();
    completion.shadow_status = Some(tx);
    let copy = shadow::Mirror {
        upstream: Arc::clone(upstream),
        timeout: sh.timeout,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: shadow::Mirror::head({
            let mut h = parts.headers.clone();
            added.apply(&mut h);
            h
        }),
        body: copy_body,
        primary,
    };
    shadow::spawn(copy, slot);
    body
}
