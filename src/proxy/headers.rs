//! Header rules of design §8, applied in place (no header map copies):
//! Host validation, hop-by-hop stripping in both directions, client-sent
//! `x-weir-*` removal, forwarding headers.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

pub static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static X_WEIR_ROUTE: HeaderName = HeaderName::from_static("x-weir-route");
pub static X_WEIR_VERSION: HeaderName = HeaderName::from_static("x-weir-version");

/// Why a request's authority was refused (always 400, never forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Missing,
    Duplicate,
    Invalid,
    Conflict,
}

impl HostError {
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Missing => "missing Host header",
            HostError::Duplicate => "more than one Host header",
            HostError::Invalid => "invalid Host",
            HostError::Conflict => "Host does not match the request target",
        }
    }
}

/// The request's authority (`host[:port]`), validated: HTTP/1.1 needs exactly
/// one Host; HTTP/2 uses `:authority` and a Host header, if also sent, must
/// agree. HTTP/1.0 may omit it (empty authority).
pub fn authority(parts: &Parts) -> Result<&str, HostError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    let host = match host {
        Some(v) => Some(v.to_str().map_err(|_| HostError::Invalid)?),
        None => None,
    };
    let target = parts.uri.authority().map(|a| a.as_str());
    let chosen = match (target, host) {
        (Some(t), Some(h)) if parts.version == Version::HTTP_2 && !t.eq_ignore_ascii_case(h) => {
            return Err(HostError::Conflict);
        }
        // Absolute-form request target wins over Host (RFC 9112 §3.2.2).
        (Some(t), _) => t,
        (None, Some(h)) => h,
        (None, None) if parts.version == Version::HTTP_10 || parts.version == Version::HTTP_09 => "",
        (None, None) => return Err(HostError::Missing),
    };
    if !chosen.is_empty() && !valid_authority(chosen) {
        return Err(HostError::Invalid);
    }
    Ok(chosen)
}

/// `reg-name[:port]` or `[v6][:port]` with a numeric port.
fn valid_authority(a: &str) -> bool {
    if a.len() > 255 {
        return false;
    }
    let (host, port) = split_port(a);
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Split `host:port`; IPv6 literals keep their brackets.
pub fn split_port(a: &str) -> (&str, Option<&str>) {
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => {
                let (h, rest) = a.split_at(end + 1);
                (h, rest.strip_prefix(':'))
            }
            None => (a, None),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    }
}

/// Remove hop-by-hop headers (design §8). `keep_upgrade` keeps `Upgrade` and
/// `Connection: upgrade` for a WebSocket handshake.
/// Longest request target (path and query) accepted; longer is 414.
pub const MAX_URI: usize = 8 * 1024;

/// HTTP/1 framing checks hyper leaves to us (hardening.md A): a message with
/// both `Content-Length` and `Transfer-Encoding`, a `Transfer-Encoding` other
/// than exactly one `chunked`, or a `Content-Length` that is not one plain
/// number is refused, so the upstream can never read a different message
/// boundary than weir did.
pub fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let first_te = te.next();
    if first_te.is_some() && headers.contains_key(CONTENT_LENGTH) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if let Some(v) = first_te {
        if te.next().is_some() {
            return Err("more than one Transfer-Encoding header");
        }
        if !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than a single `chunked`");
        }
    }
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(v) = cl.next() {
        if cl.next().is_some() {
            return Err("more than one Content-Length header");
        }
        let b = v.as_bytes();
        if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
            return Err("Content-Length is not a plain number");
        }
    }
    Ok(())
}

/// After `strip_hop_by_hop(.., true)` on a WebSocket handshake: the two
/// hop-by-hop headers the next hop needs, in their canonical form.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by Connection are hop-by-hop too. Collect first: the
    // names borrow from the map we are about to edit. Rare, so allocation ok.
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == UPGRADE))
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(CONNECTION);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(TRAILER);
    if !keep_upgrade {
        headers.remove(UPGRADE);
    }
    let te_trailers = headers
        .get_all(TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Remove client-sent `x-weir-*` headers other than `keep` (the configured
/// override header). Scans names only; allocates only if one is found.
pub fn strip_internal(headers: &mut HeaderMap, keep: Option<&HeaderName>) {
    let is_internal = |n: &HeaderName| n.as_str().starts_with("x-weir-") && Some(n) != keep;
    if !headers.keys().any(is_internal) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| is_internal(n)).cloned().collect();
    for n in names {
        headers.remove(n);
    }
}

/// Append the client address to X-Forwarded-For and set Proto/Host.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &str, proto: &'static str, host: &str) {
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!("{prev}, {client_ip}")),
        _ => HeaderValue::from_str(client_ip),
    };
    if let Ok(v) = xff {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(&X_FORWARDED_HOST, v);
    }
}

/// Trace id (32 hex) from a W3C `traceparent`, for the access log.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = v.split('-');
    let _version = parts.next()?;
    let id = parts.next()?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(req: Request<()>) -> Parts {
        req.into_parts().0
    }

    fn framing(pairs: &[(&str, &'static str)]) -> Result<(), &'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap_or(CONNECTION), HeaderValue::from_static(v));
        }
        check_framing(&h)
    }

    #[test]
    fn framing_accepts_one_plain_length_or_one_chunked() {
        assert!(framing(&[]).is_ok());
        assert!(framing(&[("content-length", "0")]).is_ok());
        assert!(framing(&[("content-length", "1234")]).is_ok());
        assert!(framing(&[("transfer-encoding", "chunked")]).is_ok());
        assert!(framing(&[("transfer-encoding", " Chunked ")]).is_ok());
    }

    #[test]
    fn framing_refuses_what_two_hops_could_read_differently() {
        for bad in [
            &[("content-length", "3"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
            &[("transfer-encoding", "chunked, chunked")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "identity")],
            &[("content-length", "3"), ("content-length", "3")],
            &[("content-length", "3, 3")],
            &[("content-length", "+3")],
            &[("content-length", "0x3")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999")],
        ] {
            assert!(framing(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let ok = parts(Request::get("/").header("host", "shop.example.com:8080").body(()).unwrap_or_default());
        assert_eq!(authority(&ok), Ok("shop.example.com:8080"));
        let none = parts(Request::get("/").body(()).unwrap_or_default());
        assert_eq!(authority(&none), Err(HostError::Missing));
        let two = parts(Request::get("/").header("host", "a").header("host", "b").body(()).unwrap_or_default());
        assert_eq!(authority(&two), Err(HostError::Duplicate));
        for bad in ["a b", "a/b", "a:port", "a:123456", "a@b", "[::1"] {
            let p = parts(Request::get("/").header("host", bad).body(()).unwrap_or_default());
            assert!(authority(&p).is_err(), "{bad:?}");
        }
        let v6 = parts(Request::get("/").header("host", "[::1]:80").body(()).unwrap_or_default());
        assert_eq!(authority(&v6), Ok("[::1]:80"));
    }

    #[test]
    fn connection_named_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, gzip"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-keep"]);
        assert_eq!(h.get(TE), Some(&HeaderValue::from_static("trailers")));
    }

    #[test]
    fn internal_headers_are_stripped_except_override() {
        let mut h = HeaderMap::new();
        h.insert("x-weir-version", HeaderValue::from_static("canary"));
        h.insert("x-weir-override", HeaderValue::from_static("canary"));
        h.insert("x-other", HeaderValue::from_static("1"));
        let keep = HeaderName::from_static("x-weir-override");
        strip_internal(&mut h, Some(&keep));
        assert!(h.get("x-weir-version").is_none());
        assert!(h.get("x-weir-override").is_some());
        assert!(h.get("x-other").is_some());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut h, "127.0.0.1", "http", "shop");
        assert_eq!(h.get(&X_FORWARDED_FOR), Some(&HeaderValue::from_static("10.0.0.1, 127.0.0.1")));
        assert_eq!(h.get(&X_FORWARDED_HOST), Some(&HeaderValue::from_static("shop")));
    }
}
