//! What the routing decision may look at in a request: host (without port),
//! path, query string, headers (including cookies), method, scheme and the
//! verified client certificate. Borrowed views only:
//! building `Facts` never allocates.

use http::HeaderMap;
use http::header::COOKIE;

#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// Host name without port, as sent (matching is case-insensitive).
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The client certificate the listener verified, if it asked for one.
    pub client_cert: Option<&'a crate::tls::ClientCert>,
    pub method: &'a http::Method,
    /// Came over TLS (`match.scheme`).
    pub https: bool,
}

impl<'a> Facts<'a> {
    /// First value of a header, if it is visible ASCII.
    pub fn header(&self, name: &http::HeaderName) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Value of the first cookie with this name across all Cookie headers.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
            |pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            },
        )
    }

    /// Raw (not percent-decoded) value of the first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}
