//! Header rules of design §8, applied in place (no header map copies):
//! Host validation, framing checks, client-sent `x-weir-*` removal,
//! forwarding headers; hop-by-hop stripping in both directions is [`hop`]'s.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Version};

pub mod hop;

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
    /// An absolute-form target whose scheme is not the connection's
    /// (`https://` on a plain listener, or the other way round).
    Scheme,
}

impl HostError {
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Missing => "missing Host header",
            HostError::Duplicate => "more than one Host header",
            HostError::Invalid => "invalid Host",
            HostError::Conflict => "Host does not match the request target",
            HostError::Scheme => "request target scheme does not match the connection",
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
        // HTTP/1.1 needs Host even with an absolute-form target (RFC 9112
        // §3.2: a request without one gets 400).
        (Some(_), None) if parts.version == Version::HTTP_11 => return Err(HostError::Missing),
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

/// An HTTP/1 absolute-form target names the scheme it expects: it must be
/// the connection's (weir does not forward to another scheme, and a plain
/// listener must not pass a request off as having come over TLS).
pub fn check_scheme(parts: &Parts, https: bool) -> Result<(), HostError> {
    if parts.version == Version::HTTP_2 {
        return Ok(()); // `:scheme` is HTTP/2's own, checked by its peer rules
    }
    match parts.uri.scheme_str() {
        None => Ok(()),
        Some(s) if s.eq_ignore_ascii_case(if https { "https" } else { "http" }) => Ok(()),
        Some(_) => Err(HostError::Scheme),
    }
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

/// Whether a field may travel in a trailer section (RFC 9110 §6.5.1):
/// nothing that frames, routes or controls the message, nothing hop-by-hop.
/// HTTP/2 refuses connection-specific fields outright (RFC 9113 §8.2.2).
pub fn trailer_allowed(name: &HeaderName) -> bool {
    !(name == CONNECTION
        || name == CONTENT_LENGTH
        || name == HOST
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == http::header::CONTENT_TYPE
        || name == http::header::CONTENT_ENCODING
        || name == http::header::CONTENT_RANGE
        || name == http::header::AUTHORIZATION
        || name == http::header::SET_COOKIE
        || name == http::header::CACHE_CONTROL
        || name == http::header::EXPECT
        || name == http::header::LOCATION
        || name == http::header::RANGE
        || name == http::header::DATE
        || name.as_str().starts_with("x-weir-"))
}

/// The headers weir adds to every forwarded request. They stay out of the
/// request's header map and are written after the client's headers when the
/// head is encoded (`upstream::wire::encode_head`): six map insertions
/// (hash, probe, growth) fewer per request. The paths that hand a map on (a
/// WebSocket handshake through hyper's client, a shadow copy) put them in
/// with `apply`.
#[derive(Debug, Default)]
pub struct Added(Vec<(&'static HeaderName, HeaderValue)>);

impl Added {
    pub fn new() -> Self {
        Self(Vec::with_capacity(6))
    }

    pub fn push(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.0.push((name, value));
    }

    pub fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn as_slice(&self) -> &[(&'static HeaderName, HeaderValue)] {
        &self.0
    }

    /// Into `headers`, replacing any value already there.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(*name, value.clone());
        }
    }
}

/// X-Forwarded-For (the client's list with `client_ip` appended), -Proto
/// and -Host into `added`; the client's own values of those come out of
/// `headers`. `client_ip` and `host` come ready-made (per connection / from
/// the Host header), so the usual request costs no formatting.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
    added: &mut Added,
) {
    // One pass over the names: clients rarely send these, and removing an
    // absent name still costs a hash and a probe.
    let (mut xff, mut xfp, mut xfh) = (false, false, false);
    for name in headers.keys() {
        xff |= *name == X_FORWARDED_FOR;
        xfp |= *name == X_FORWARDED_PROTO;
        xfh |= *name == X_FORWARDED_HOST;
    }
    // `remove` takes every value and returns the first, as `get` sees it.
    let prev = if xff { headers.remove(&X_FORWARDED_FOR) } else { None };
    let forwarded_for = match prev.filter(|v| v.to_str().is_ok_and(|s| !s.is_empty())) {
        Some(prev) => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + client_ip.len());
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
        }
        None => Some(client_ip.clone()),
    };
    if let Some(v) = forwarded_for {
        added.push(&X_FORWARDED_FOR, v);
    }
    if xfp {
        headers.remove(&X_FORWARDED_PROTO);
    }
    added.push(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(v) = host {
        if xfh {
            headers.remove(&X_FORWARDED_HOST);
        }
        added.push(&X_FORWARDED_HOST, v);
    }
}

/// A fresh `x-request-id`: 32 lowercase hex digits of `random`.
pub fn new_request_id(random: u128) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        let nibble = (random >> (124 - 4 * i)) & 0xf;
        *b = HEX[nibble as usize];
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
    fn request_ids_are_32_hex_digits_of_the_draw() {
        let id = new_request_id(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id, HeaderValue::from_static("0123456789abcdef0011223344556677"));
        assert_eq!(new_request_id(u128::MAX).as_bytes(), [b'f'; 32]);
        assert_eq!(new_request_id(5), HeaderValue::from_str(&format!("{:032x}", 5u128)).unwrap_or(id));
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
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert("x-other", HeaderValue::from_static("1"));
        let mut added = Added::new();
        let ip = HeaderValue::from_static("127.0.0.1");
        add_forwarded(&mut h, &ip, "http", Some(HeaderValue::from_static("shop")), &mut added);
        // The client's values leave the map; weir's are in `added`.
        assert!(h.get(&X_FORWARDED_FOR).is_none() && h.get(&X_FORWARDED_PROTO).is_none());
        assert_eq!(h.len(), 1, "x-other stays");
        assert_eq!(added.get(&X_FORWARDED_FOR), Some(&HeaderValue::from_static("10.0.0.1, 127.0.0.1")));
        assert_eq!(added.get(&X_FORWARDED_PROTO), Some(&HeaderValue::from_static("http")));
        assert_eq!(added.get(&X_FORWARDED_HOST), Some(&HeaderValue::from_static("shop")));
        // Put into a map, weir's values replace whatever is there.
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("spoofed"));
        added.apply(&mut h);
        assert_eq!(h.get_all(&X_FORWARDED_PROTO).iter().collect::<Vec<_>>(), [&HeaderValue::from_static("http")]);
        // Without a list from the client, the list is the client's address.
        let (mut h, mut added) = (HeaderMap::new(), Added::new());
        add_forwarded(&mut h, &ip, "https", None, &mut added);
        assert_eq!(added.as_slice().len(), 2);
        assert_eq!(added.get(&X_FORWARDED_FOR), Some(&ip));
    }
}
