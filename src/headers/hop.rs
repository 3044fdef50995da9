//! Hop-by-hop headers (design §8): what is stripped from a message in
//! either direction before it is forwarded (the `Connection` family, the
//! names `Connection` lists, `TE` but `trailers`, and the `_` lookalikes of
//! framing names), and what a WebSocket handshake puts back.

use super::{KEEP_ALIVE, PROXY_CONNECTION};
use http::header::{CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};

/// After `strip_hop_by_hop(.., true)` on a WebSocket handshake: the two
/// hop-by-hop headers the next hop needs, in their canonical form.
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Remove hop-by-hop headers (design §8). `keep_upgrade` keeps `Upgrade` and
/// `Connection: upgrade` for a WebSocket handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these (or
    // only `Connection: keep-alive`), and a `remove` of an absent name still
    // costs a hash and a probe.
    let mut seen = Hop::default();
    for name in headers.keys() {
        seen.note(name);
    }
    if seen.none() && !keep_upgrade {
        return;
    }
    if seen.connection {
        // Headers named by Connection are hop-by-hop too. Collect first: the
        // names borrow from the map we are about to edit. The usual tokens
        // (close, keep-alive, upgrade) name nothing else and cost nothing.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == UPGRADE))
            .collect();
        for n in named {
            headers.remove(n);
        }
        headers.remove(CONNECTION);
    }
    if seen.keep_alive {
        headers.remove(&KEEP_ALIVE);
    }
    if seen.proxy_connection {
        headers.remove(&PROXY_CONNECTION);
    }
    if seen.transfer_encoding {
        headers.remove(TRANSFER_ENCODING);
    }
    if seen.trailer {
        headers.remove(TRAILER);
    }
    if seen.upgrade && !keep_upgrade {
        headers.remove(UPGRADE);
    }
    if seen.te {
        let te_trailers = headers
            .get_all(TE)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
        headers.remove(TE);
        if te_trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    if seen.lookalike {
        let names: Vec<HeaderName> = headers.keys().filter(|n| framing_lookalike(n)).cloned().collect();
        for n in names {
            headers.remove(n);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Names that framing or hop-by-hop names become when a server reads `_` as
/// `-` (some CGI-style servers and frameworks do): `Transfer_Encoding`,
/// `Content_Length`, `Proxy_Connection`. Forwarded, they could make the next
/// hop read a different message boundary than weir did, so they are dropped
/// in both directions, as nginx does with `underscores_in_headers off`.
const LOOKALIKES: [&str; 9] = [
    "te",
    "host",
    "trailer",
    "upgrade",
    "connection",
    "keep-alive",
    "content-length",
    "proxy-connection",
    "transfer-encoding",
];

/// True for a header name that contains `_` and equals a framing or
/// hop-by-hop name once every `_` is read as `-`.
pub fn framing_lookalike(n: &HeaderName) -> bool {
    let s = n.as_str().as_bytes();
    if !matches!(s.len(), 2 | 4 | 7 | 10 | 14 | 16 | 17) || !s.contains(&b'_') {
        return false;
    }
    LOOKALIKES
        .iter()
        .any(|want| want.len() == s.len() && want.bytes().zip(s).all(|(w, &c)| w == c || (w == b'-' && c == b'_')))
}

/// Which hop-by-hop names a header map holds.
#[derive(Default)]
struct Hop {
    connection: bool,
    keep_alive: bool,
    proxy_connection: bool,
    transfer_encoding: bool,
    trailer: bool,
    upgrade: bool,
    te: bool,
    lookalike: bool,
}

impl Hop {
    fn note(&mut self, n: &HeaderName) {
        // Standard names compare as an enum tag; the two custom ones as
        // strings, and only when the length could match.
        if n == CONNECTION {
            self.connection = true;
        } else if n == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if n == TE {
            self.te = true;
        } else if n == TRAILER {
            self.trailer = true;
        } else if n == UPGRADE {
            self.upgrade = true;
        } else if n.as_str().len() == 10 && n == KEEP_ALIVE {
            self.keep_alive = true;
        } else if n.as_str().len() == 16 && n == PROXY_CONNECTION {
            self.proxy_connection = true;
        } else if framing_lookalike(n) {
            self.lookalike = true;
        }
    }

    fn none(&self) -> bool {
        !(self.connection
            || self.keep_alive
            || self.proxy_connection
            || self.transfer_encoding
            || self.trailer
            || self.upgrade
            || self.te
            || self.lookalike)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn names_that_read_as_framing_with_underscores_are_dropped() {
        let mut h = HeaderMap::new();
        for k in ["transfer_encoding", "content_length", "proxy_connection", "te_", "x_forwarded_for", "host"] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static("chunked"));
        }
        h.append(HeaderName::from_static("keep_alive"), HeaderValue::from_static("1"));
        h.append(HeaderName::from_static("t_e"), HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        // `te_` and `t_e` are not lookalikes (length or letters differ);
        // `x_forwarded_for` is harmless; `host` is a real Host, kept.
        assert_eq!(names, ["host", "t_e", "te_", "x_forwarded_for"]);
        assert!(framing_lookalike(&HeaderName::from_static("transfer_encoding")));
        assert!(!framing_lookalike(&TRANSFER_ENCODING));
    }

    #[test]
    fn only_present_hop_by_hop_headers_are_touched() {
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Keep-Alive, X-Named"));
        h.insert("x-named", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-keep"]);
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(UPGRADE), Some(&HeaderValue::from_static("websocket")));
        assert_eq!(h.get(CONNECTION), Some(&HeaderValue::from_static("upgrade")));
    }
}
