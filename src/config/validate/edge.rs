//! A route's edge policies (`timeouts`, `max_request_body`, header
//! modifiers, `rewrite`, `redirect`) and its `match.scheme`/`match.methods`.
//! Refused here: a modifier on a header that frames the message, is
//! hop-by-hop or is weir's own; a rewrite or redirect whose path the route's
//! match cannot give; a redirect that sends a request back to itself.

use super::{Problems, header_name};
use crate::config::raw::{
    RawCors, RawHeaderOps, RawRateLimit, RawRealIp, RawRedirect, RawRewrite, RawRoute, RawRouteMatch,
};
use crate::routing::edge::{Cors, Edge, HeaderOps, Modifiers, OriginMatch, PathChange, Redirect, Rewrite};
use crate::routing::{PathMatch, RouteFilter};
use http::{HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

/// `match.scheme` and `match.methods`.
pub(super) fn compile_filter(m: Option<&RawRouteMatch>, at: &str, p: &mut Problems) -> RouteFilter {
    let Some(m) = m else { return RouteFilter::default() };
    let https = match m.scheme.as_deref() {
        None => None,
        Some("http") => Some(false),
        Some("https") => Some(true),
        Some(other) => {
            p.at(format!("{at}.scheme"), format!("`{other}`: use `http` or `https`"));
            None
        }
    };
    let mut methods: Vec<http::Method> = Vec::new();
    for (i, name) in m.methods.iter().enumerate() {
        let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
        match http::Method::from_bytes(name.as_bytes()) {
            Ok(method) if ok => {
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            _ => p.at(format!("{at}.methods[{i}]"), format!("`{name}` is not a method (upper-case, e.g. GET)")),
        }
    }
    let conditions = super::matching::compile_route_conditions(m, at, p);
    RouteFilter { https, methods, conditions }
}

/// Names a modifier may never touch, and why.
fn refused(name: &HeaderName, response: bool) -> Option<&'static str> {
    use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    let s = name.as_str();
    if [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE].contains(name)
        || s == "keep-alive"
        || s == "proxy-connection"
    {
        return Some("a hop-by-hop header: it belongs to one connection, not to the message");
    }
    if name == CONTENT_LENGTH || crate::headers::hop::framing_lookalike(name) {
        return Some("it frames the message; weir sets it from the body");
    }
    if s.starts_with("x-weir-") {
        return Some("weir's own header");
    }
    if !response {
        if name == HOST {
            return Some("use `rewrite.hostname`");
        }
        if ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"].contains(&s) {
            return Some("weir sets it on every request");
        }
    }
    None
}

fn compile_ops(o: Option<&RawHeaderOps>, at: &str, response: bool, p: &mut Problems) -> HeaderOps {
    let Some(o) = o else { return HeaderOps::default() };
    let mut out = HeaderOps::default();
    let mut seen: Vec<HeaderName> = Vec::new();
    let mut name = |p: &mut Problems, list: &str, n: &str| -> Option<HeaderName> {
        let at = format!("{at}.{list}.{n}");
        let h = header_name(&at, n, p)?;
        if let Some(why) = refused(&h, response) {
            p.at(at, format!("`{h}` cannot be modified: {why}"));
            return None;
        }
        if seen.contains(&h) {
            p.at(at, format!("`{h}` is in more than one of set, add and remove"));
            return None;
        }
        seen.push(h.clone());
        Some(h)
    };
    let value = |p: &mut Problems, list: &str, n: &str, v: &str| -> Option<HeaderValue> {
        HeaderValue::from_str(v)
            .map_err(|_| p.at(format!("{at}.{list}.{n}"), "values are visible ASCII, spaces and tabs"))
            .ok()
    };
    for (n, v) in &o.set {
        if let (Some(h), Some(v)) = (name(p, "set", n), value(p, "set", n, v)) {
            out.set.push((h, v));
        }
    }
    for (n, v) in &o.add {
        if let (Some(h), Some(v)) = (name(p, "add", n), value(p, "add", n, v)) {
            out.add.push((h, v));
        }
    }
    for n in &o.remove {
        if let Some(h) = name(p, "remove", n) {
            out.remove.push(h);
        }
    }
    out
}

/// `request_headers` and `response_headers` of a route or a version.
pub(super) fn compile_modifiers(
    request: Option<&RawHeaderOps>,
    response: Option<&RawHeaderOps>,
    at: &str,
    p: &mut Problems,
) -> Modifiers {
    Modifiers {
        request: compile_ops(request, &format!("{at}.request_headers"), false, p),
        response: compile_ops(response, &format!("{at}.response_headers"), true, p),
    }
}

/// A path change (`path` xor `path_prefix`) the route's match can give.
fn compile_path_change(
    full: Option<&String>,
    prefix: Option<&String>,
    matched: &PathMatch,
    at: &str,
    p: &mut Problems,
) -> Option<PathChange> {
    match (full, prefix) {
        (Some(_), Some(_)) => {
            p.at(format!("{at}.path"), "use `path` or `path_prefix`, not both");
            None
        }
        (Some(f), None) => {
            if !f.starts_with('/') || f.contains(['?', '#']) || http::uri::PathAndQuery::try_from(f.as_str()).is_err() {
                p.at(format!("{at}.path"), "must be a path: start with `/`, no `?` or `#`, no spaces");
                return None;
            }
            let highest = f
                .as_bytes()
                .windows(2)
                .filter(|w| w[0] == b'$' && w[1].is_ascii_digit())
                .map(|w| usize::from(w[1] - b'0'))
                .max();
            match (highest, matched) {
                (Some(n), PathMatch::Regex(re)) if n > re.groups() => {
                    p.at(format!("{at}.path"), format!("`${n}`: the path regex has {} capture groups", re.groups()));
                    return None;
                }
                (Some(_), PathMatch::Regex(_)) | (None, _) => {}
                (Some(n), _) => {
                    p.at(format!("{at}.path"), format!("`${n}` needs `match.path_type: regex` with capture groups"));
                    return None;
                }
            }
            Some(PathChange::Full(f.clone()))
        }
        (None, Some(pre)) => {
            if !pre.starts_with('/')
                || pre.contains(['?', '#'])
                || http::uri::PathAndQuery::try_from(pre.as_str()).is_err()
            {
                p.at(format!("{at}.path_prefix"), "must be a path: start with `/`, no `?` or `#`, no spaces");
                return None;
            }
            if !matches!(matched, PathMatch::Str(_) | PathMatch::Segments(_)) {
                p.at(
                    format!("{at}.path_prefix"),
                    "replaces the matched prefix: needs `match.path_prefix` or `path_type: prefix`",
                );
                return None;
            }
            Some(PathChange::Prefix(pre.clone()))
        }
        (None, None) => None,
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['.', '-'])
}

fn compile_rewrite(r: &RawRewrite, matched: &PathMatch, at: &str, p: &mut Problems) -> Rewrite {
    let path = compile_path_change(r.path.as_ref(), r.path_prefix.as_ref(), matched, at, p);
    let hostname = r.hostname.as_deref().and_then(|h| {
        if !valid_hostname(h) {
            p.at(format!("{at}.hostname"), format!("`{h}` is not a host name"));
            return None;
        }
        HeaderValue::from_str(&h.to_ascii_lowercase()).ok()
    });
    if path.is_none() && hostname.is_none() && r.path.is_none() && r.path_prefix.is_none() && r.hostname.is_none() {
        p.at(at, "set `path`, `path_prefix` or `hostname`");
    }
    Rewrite { path, hostname }
}

fn compile_redirect(
    r: &RawRedirect,
    matched: &PathMatch,
    filter: &RouteFilter,
    at: &str,
    p: &mut Problems,
) -> Option<Redirect> {
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some("http") => Some("http"),
        Some("https") => Some("https"),
        Some(other) => {
            p.at(format!("{at}.scheme"), format!("`{other}`: use `http` or `https`"));
            return None;
        }
    };
    if let Some(h) = r.hostname.as_deref().filter(|h| !valid_hostname(h)) {
        p.at(format!("{at}.hostname"), format!("`{h}` is not a host name"));
        return None;
    }
    let port = match r.port {
        None => None,
        Some(n) => match u16::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                p.at(format!("{at}.port"), "a port is 1–65535");
                return None;
            }
        },
    };
    let status = match r.status.unwrap_or(302) {
        s @ (301 | 302 | 303 | 307 | 308) => StatusCode::from_u16(u16::try_from(s).ok()?).ok()?,
        other => {
            p.at(format!("{at}.status"), format!("{other}: use 301, 302, 303, 307 or 308"));
            return None;
        }
    };
    let path = compile_path_change(r.path.as_ref(), r.path_prefix.as_ref(), matched, at, p);
    // Nothing that names another place: the answer would point at the
    // request itself, and a client would follow it until it gives up.
    if r.hostname.is_none() && r.path.is_none() && r.path_prefix.is_none() && port.is_none() {
        match scheme {
            None => {
                p.at(
                    at,
                    "redirects every request to itself: set `scheme`, `hostname`, `port`, `path` or `path_prefix`",
                );
                return None;
            }
            Some(s) if filter.https != Some(s == "http") => {
                let other = if s == "https" { "http" } else { "https" };
                p.at(
                    format!("{at}.scheme"),
                    format!("{s} requests would be sent to themselves: add `match.scheme: {other}` to this route"),
                );
                return None;
            }
            Some(_) => {}
        }
    }
    Some(Redirect {
        scheme,
        hostname: r.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        port,
        path,
        status,
        keep_query: r.keep_query.unwrap_or(true),
    })
}

/// The keys a redirect route has no use for (it sends nothing upstream).
fn upstream_only_keys(r: &RawRoute) -> Vec<&'static str> {
    let present = [
        ("stable", r.stable.is_some()),
        ("canary", r.canary.is_some()),
        ("weight", r.weight.is_some()),
        ("sticky", r.sticky.is_some()),
        ("override", r.override_.is_some()),
        ("segments", !r.segments.is_empty()),
        ("shadow", r.shadow.is_some()),
        ("analysis", r.analysis.is_some()),
        ("progression", r.progression.is_some()),
        ("websocket", r.websocket.is_some()),
        ("grpc", r.grpc.is_some()),
        ("timeouts", r.timeouts.is_some()),
        ("max_request_body", r.max_request_body.is_some()),
        ("request_headers", r.request_headers.is_some()),
        ("response_headers", r.response_headers.is_some()),
        ("rewrite", r.rewrite.is_some()),
    ];
    present.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect()
}

/// `real_ip`: trusted proxies by address or block, and the header.
pub(super) fn compile_real_ip(r: &RawRealIp, p: &mut Problems) -> Option<crate::client_ip::RealIp> {
    let mut trusted = Vec::new();
    for (i, c) in r.trusted.iter().enumerate() {
        match crate::client_ip::Cidr::parse(c) {
            Ok(c) => trusted.push(c),
            Err(e) => p.at(format!("real_ip.trusted[{i}]"), e),
        }
    }
    if r.trusted.is_empty() {
        p.at("real_ip.trusted", "list the proxies to trust (addresses or blocks such as 10.0.0.0/8)");
    }
    let header = match &r.header {
        None => HeaderName::from_static("x-forwarded-for"),
        Some(h) => header_name("real_ip.header", h, p)?,
    };
    Some(crate::client_ip::RealIp { trusted, header })
}

/// `rate_limit`: requests per `per`, a burst, and the key.
fn compile_rate_limit(r: &RawRateLimit, at: &str, p: &mut Problems) -> Option<crate::ratelimit::RateLimit> {
    use crate::ratelimit::{Key, RateLimit};
    let requests = match u32::try_from(r.requests) {
        Ok(n) if (1..=1_000_000).contains(&n) => n,
        _ => {
            p.at(format!("{at}.requests"), "1 to 1000000 per `per`");
            return None;
        }
    };
    let per = p.duration(&format!("{at}.per"), r.per.as_ref(), std::time::Duration::from_secs(1));
    if per.is_zero() || per > std::time::Duration::from_secs(3600) {
        p.at(format!("{at}.per"), "more than 0s, at most 1h");
        return None;
    }
    let burst = match r.burst.map(u32::try_from) {
        None => requests,
        Some(Ok(b)) if b <= 1_000_000 => b,
        Some(_) => {
            p.at(format!("{at}.burst"), "at most 1000000");
            return None;
        }
    };
    let key = match r.key.as_deref() {
        None | Some("client_ip") => Key::ClientIp,
        Some(k) => match k.strip_prefix("header:") {
            Some(h) => Key::Header(header_name(&format!("{at}.key"), h.trim(), p)?),
            None => {
                p.at(format!("{at}.key"), format!("`{k}`: use `client_ip` or `header:NAME`"));
                return None;
            }
        },
    };
    let max_keys = match r.max_keys {
        None => 100_000,
        Some(n) if (16..=10_000_000).contains(&n) => usize::try_from(n).unwrap_or(100_000),
        Some(_) => {
            p.at(format!("{at}.max_keys"), "16 to 10000000");
            return None;
        }
    };
    Some(RateLimit { requests, per, burst, key, max_keys })
}

/// ingress-nginx's `cors-allow-methods` and `cors-allow-headers` defaults.
pub const CORS_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const CORS_HEADERS: &str = "DNT, Keep-Alive, User-Agent, X-Requested-With, If-Modified-Since, Cache-Control, Content-Type, Range, Authorization";

fn compile_cors(c: &RawCors, at: &str, p: &mut Problems) -> Option<Cors> {
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        match crate::routing::edge::parse_origin(o) {
            Some(m) => origins.push(m),
            None => p.at(
                format!("{at}.allow_origins[{i}]"),
                format!("`{o}`: use `*`, `scheme://host[:port]` or `scheme://*.domain`"),
            ),
        }
    }
    if c.allow_origins.is_empty() {
        p.at(format!("{at}.allow_origins"), "list the origins (or `*`)");
    }
    let list = |p: &mut Problems, key: &str, v: Option<&Vec<String>>, default: &str| -> Option<HeaderValue> {
        let joined = v.map_or_else(|| default.to_owned(), |v| v.join(", "));
        let ok =
            v.is_none_or(|v| v.iter().all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_graphic() && b != b',')));
        match HeaderValue::from_str(&joined) {
            Ok(h) if ok => Some(h),
            _ => {
                p.at(format!("{at}.{key}"), "names without spaces or commas");
                None
            }
        }
    };
    let methods = list(p, "allow_methods", c.allow_methods.as_ref(), CORS_METHODS)?;
    let headers = list(p, "allow_headers", c.allow_headers.as_ref(), CORS_HEADERS)?;
    let expose =
        if c.expose_headers.is_empty() { None } else { list(p, "expose_headers", Some(&c.expose_headers), "") };
    let max_age = c.max_age.as_ref().map(|m| {
        let d = p.duration(&format!("{at}.max_age"), Some(m), std::time::Duration::ZERO);
        HeaderValue::from(d.as_secs())
    });
    let credentials = c.allow_credentials.unwrap_or(false);
    if credentials && origins.contains(&OriginMatch::Any) {
        p.warn(
            format!("{at}.allow_credentials"),
            "with `*` any web site can read answers made with its visitors' cookies: list the origins",
        );
    }
    Some(Cors { origins, methods, headers, expose, credentials, max_age })
}

/// The route's edge policies; None when it has none.
pub(super) fn compile_edge(
    r: &RawRoute,
    at: &str,
    matched: &PathMatch,
    filter: &RouteFilter,
    p: &mut Problems,
) -> Option<Arc<Edge>> {
    let timeout = |p: &mut Problems, key: &str, v: Option<&String>| {
        let d = v.map(|v| p.duration(&format!("{at}.timeouts.{key}"), Some(v), std::time::Duration::ZERO))?;
        if d.is_zero() {
            p.at(format!("{at}.timeouts.{key}"), "must be more than 0s");
            return None;
        }
        Some(d)
    };
    let t = r.timeouts.as_ref();
    let request_timeout = timeout(p, "request", t.and_then(|t| t.request.as_ref()));
    let backend_timeout = timeout(p, "backend", t.and_then(|t| t.backend.as_ref()));
    if let (Some(req), Some(be)) = (request_timeout, backend_timeout)
        && be > req
    {
        p.at(format!("{at}.timeouts.backend"), "must not be longer than `timeouts.request`");
    }
    let max_request_body = r.max_request_body.as_ref().map(|v| {
        let n = p.size(&format!("{at}.max_request_body"), Some(v), 1);
        if n == 0 {
            p.at(format!("{at}.max_request_body"), "0 would refuse every body; give a size (e.g. 8MiB)");
        }
        n
    });
    let modifiers = compile_modifiers(r.request_headers.as_ref(), r.response_headers.as_ref(), at, p);
    let rewrite = r.rewrite.as_ref().map(|w| compile_rewrite(w, matched, &format!("{at}.rewrite"), p));
    let redirect = r.redirect.as_ref().and_then(|d| {
        let keys = upstream_only_keys(r);
        if !keys.is_empty() {
            p.at(
                format!("{at}.redirect"),
                format!("a redirect route answers by itself, so it has no use for: {}", keys.join(", ")),
            );
        }
        compile_redirect(d, matched, filter, &format!("{at}.redirect"), p)
    });
    let rate_limit = r.rate_limit.as_ref().and_then(|l| compile_rate_limit(l, &format!("{at}.rate_limit"), p));
    let cors = r.cors.as_ref().and_then(|c| compile_cors(c, &format!("{at}.cors"), p));
    let edge =
        Edge { request_timeout, backend_timeout, max_request_body, modifiers, rewrite, redirect, rate_limit, cors };
    let none = edge.rate_limit.is_none()
        && edge.cors.is_none()
        && edge.request_timeout.is_none()
        && edge.backend_timeout.is_none()
        && edge.max_request_body.is_none()
        && edge.modifiers.is_empty()
        && edge.rewrite.is_none()
        && edge.redirect.is_none();
    (!none).then(|| Arc::new(edge))
}
