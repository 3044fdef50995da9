//! A route's edge policies on the request path: the answers weir gives
//! itself before anything goes upstream (rate limit, CORS preflight,
//! redirect, body limit), the rewritten path, and each attempt's deadline.

use super::phases::{Admitted, Choice};
use super::{Peer, ProxyError};
use crate::headers;
use crate::live::Serving;
use crate::routing::edge::{Asked, Cors, Edge, PathChange};
use crate::routing::{self, Route};
use crate::upstream::UpstreamError;
use http::request::Parts;
use http::{HeaderValue, Uri};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The upstream asks for the rewritten path; the query stays.
pub(super) fn rewrite_path(change: &PathChange, matched: &routing::PathMatch, uri: &mut Uri, route: &str) {
    let Some(path) = change.apply(matched, uri.path()) else { return };
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    match Uri::try_from(target) {
        Ok(u) => *uri = u,
        // Captures come from a valid path and the template was checked, so
        // this needs a path weir itself would not accept; the request goes
        // as it came rather than to a made-up place.
        Err(e) => tracing::warn!(route, error = %e, "rewritten path is not a valid target; sent unchanged"),
    }
}

/// weir's own answer, if the request gets one before anything goes
/// upstream: the rate limit, a preflight and a redirect first (a redirect
/// route takes no body), then the route's body limit (`max_body`).
pub(super) fn answered_here(
    served: &Serving,
    choice: &mut Choice<'_>,
    (parts, admitted): (&Parts, &Admitted),
    (peer, client): (&Peer, Option<std::net::IpAddr>),
    max_body: u64,
) -> Result<(), ProxyError> {
    if let Some(e) = choice.route.edge.as_deref() {
        let limiter = served.limiters.get(choice.decision.route).and_then(Option::as_ref);
        choice.cors_origin = edge_filter(e, limiter, choice.route, (parts, admitted), (peer, client))?;
    }
    match admitted.declared {
        Some(n) if n > max_body => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// The route's rate limit for this request: by its key header, else by
/// the client's address (`ip`).
fn rate_limit(l: &crate::ratelimit::Limiter, parts: &Parts, ip: std::net::IpAddr) -> Result<(), ProxyError> {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`.
    let ip = match ip {
        std::net::IpAddr::V6(a) => a.to_ipv4_mapped().map_or(std::net::IpAddr::V6(a), std::net::IpAddr::V4),
        v4 => v4,
    };
    let header = match &l.spec.key {
        crate::ratelimit::Key::Header(h) => parts.headers.get(h).map(HeaderValue::as_bytes),
        crate::ratelimit::Key::ClientIp => None,
    };
    // Tagged so that no header value can name an address's bucket; an
    // IPv6 client is its /64 (a host picks its own address within it).
    let mut key = [0u8; 1 + 8];
    let verdict = match header {
        Some(v) => l.admit_tagged(b'h', v, Instant::now()),
        None => match ip {
            std::net::IpAddr::V4(a) => {
                key[0] = b'4';
                key[1..5].copy_from_slice(&a.octets());
                l.admit(&key[..5], Instant::now())
            }
            std::net::IpAddr::V6(a) => {
                key[0] = b'6';
                key[1..9].copy_from_slice(&a.octets()[..8]);
                l.admit(&key, Instant::now())
            }
        },
    };
    match verdict {
        crate::ratelimit::Admit::No(wait) => Err(ProxyError::RateLimited(wait)),
        crate::ratelimit::Admit::Yes => Ok(()),
    }
}

/// Before anything goes upstream: the rate limit, a CORS preflight, then a
/// redirect route answers here. `client`: the address `real_ip` found, if
/// configured. Ok: the `Origin` to mark the answer for (`cors`).
fn edge_filter(
    e: &Edge,
    limiter: Option<&Arc<crate::ratelimit::Limiter>>,
    route: &Route,
    (parts, admitted): (&Parts, &Admitted),
    (peer, client): (&Peer, Option<std::net::IpAddr>),
) -> Result<Option<HeaderValue>, ProxyError> {
    if let Some(l) = limiter {
        rate_limit(l, parts, client.unwrap_or(peer.addr))?;
    }
    let mut origin = None;
    if let Some(cors) = &e.cors {
        origin = match parts.headers.get(http::header::ORIGIN) {
            Some(o) => Some(o).filter(|o| cors.allows(o.as_bytes())).cloned(),
            // No Origin: not a browser's cross-origin request; `*` still
            // says so, as ingress-nginx does.
            None => {
                cors.origins.contains(&crate::routing::edge::OriginMatch::Any).then(|| HeaderValue::from_static("*"))
            }
        };
        if Cors::is_preflight(&parts.method, &parts.headers) {
            // Answered here (a disallowed origin gets no CORS headers, and
            // the browser stops); never forwarded.
            let mut h = http::HeaderMap::new();
            if let Some(o) = &origin {
                cors.mark(o, Some(&parts.headers), &mut h);
            }
            return Err(ProxyError::Preflight(Box::new(h)));
        }
    }
    let https = peer.https;
    let Some(r) = &e.redirect else { return Ok(origin) };
    let authority = admitted.authority.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let (host, port) = headers::split_port(authority);
    if host.is_empty() && r.hostname.is_none() {
        // HTTP/1.0 without Host: no place to send the client back to.
        return Err(ProxyError::Host(headers::HostError::Missing));
    }
    let asked = Asked {
        https,
        host,
        port: port.and_then(|p| p.parse().ok()),
        path: parts.uri.path(),
        query: parts.uri.query(),
    };
    let location = r.location(&route.path, &asked).ok_or(ProxyError::NoRoute)?;
    if r.loops(&location, &asked) {
        return Err(ProxyError::RedirectLoop);
    }
    let value = HeaderValue::from_str(&location).map_err(|_| ProxyError::RedirectLoop)?;
    Err(ProxyError::Redirect(r.status, value))
}

/// How long each attempt may wait for its answer's head: the route's
/// `timeouts.backend` (else the upstream's `request_timeout`), no more than
/// a gRPC call's `grpc-timeout`, nor than what `timeouts.request` leaves.
pub(super) struct AttemptLimits {
    default: Duration,
    each: Duration,
    deadline: Option<Instant>,
}

impl AttemptLimits {
    pub fn new(default: Duration, edge: Option<&Edge>, grpc: Option<Duration>, deadline: Option<Instant>) -> Self {
        let each = edge.and_then(|e| e.backend_timeout).unwrap_or(default);
        let each = grpc.map_or(each, |g| g.min(each));
        Self { default, each, deadline }
    }

    /// Puts this attempt's limit on the request (only when it is not the
    /// upstream's own: the common request allocates nothing). Err: the
    /// request's time is up.
    pub fn apply(&self, parts: &mut Parts) -> Result<(), ProxyError> {
        let left = self.deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Err(ProxyError::Upstream(UpstreamError::Timeout));
        }
        let limit = left.map_or(self.each, |l| l.min(self.each));
        if limit != self.default {
            parts.extensions.insert(crate::upstream::CallDeadline(limit));
        }
        Ok(())
    }
}
