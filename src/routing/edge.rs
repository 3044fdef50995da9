//! A route's edge policies: what weir does to a request and its answer
//! besides choosing a version. Per-route deadlines and body size, header
//! modifiers (route-wide and per version), URL rewrites, redirects and
//! per-client rate limits. Plain
//! data and pure functions; the proxy applies them, the config module builds
//! and checks them (a modifier can never touch a framing or hop-by-hop
//! header, a redirect can never point at the request it answers).

use super::PathMatch;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::time::Duration;

/// `routes[].timeouts`, `max_request_body`, the modifiers, `rewrite` and
/// `redirect`. A route without any has none (`Route::edge` is `None`), so
/// the common request pays one branch.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// `timeouts.request`: the whole exchange up to the answer's head,
    /// retries included (Gateway API `timeouts.request`).
    pub request_timeout: Option<Duration>,
    /// `timeouts.backend`: each attempt at an upstream, to its answer's head
    /// (Gateway API `timeouts.backendRequest`, nginx `proxy_read_timeout`).
    pub backend_timeout: Option<Duration>,
    /// `max_request_body`: replaces `limits.max_request_body` on this route.
    pub max_request_body: Option<u64>,
    pub modifiers: Modifiers,
    pub rewrite: Option<Rewrite>,
    /// A redirect route answers every request itself; it has no upstream.
    pub redirect: Option<Redirect>,
    /// Per-client request rate (`Serving::limiters` holds the buckets).
    pub rate_limit: Option<crate::ratelimit::RateLimit>,
    pub cors: Option<Cors>,
}

/// An `allow_origins` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    Any,
    /// `https://app.example.com` (lower case).
    Exact(String),
    /// `https://*.example.com`: the scheme, then any subdomain of the rest.
    Subdomain {
        scheme: String,
        suffix: String,
    },
}

/// `routes[].cors`: answers browsers' preflights here and marks answers to
/// allowed origins (ingress-nginx `enable-cors`, Gateway API CORS filter).
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Vec<OriginMatch>,
    pub methods: HeaderValue,
    pub headers: HeaderValue,
    pub expose: Option<HeaderValue>,
    pub credentials: bool,
    /// Seconds, for `Access-Control-Max-Age`.
    pub max_age: Option<HeaderValue>,
}

/// An `allow_origins` entry as written: `*`, `https://host[:port]`, or
/// `https://*.domain[:port]` (any scheme). None: not an origin.
pub fn parse_origin(o: &str) -> Option<OriginMatch> {
    if o == "*" {
        return Some(OriginMatch::Any);
    }
    let lower = o.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    // Any scheme (RFC 3986): apps send `capacitor://localhost` and the like.
    let scheme_ok = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return None;
    }
    let host = rest.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(rest, |(h, _)| h);
    let name_ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty() && !l.starts_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    match host.strip_prefix("*.") {
        // The suffix keeps the port: `https://*.a.com:8443` takes `https://x.a.com:8443`.
        Some(name) if name_ok(name) => Some(OriginMatch::Subdomain {
            scheme: scheme.to_owned(),
            suffix: rest.strip_prefix("*.").unwrap_or(rest).to_owned(),
        }),
        Some(_) => None,
        None if name_ok(host) => Some(OriginMatch::Exact(lower.clone())),
        None => None,
    }
}

static ANY: HeaderValue = HeaderValue::from_static("*");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

impl Cors {
    /// Whether a request's `Origin` may read the answer.
    pub fn allows(&self, origin: &[u8]) -> bool {
        let Ok(o) = std::str::from_utf8(origin) else { return false };
        self.origins.iter().any(|m| match m {
            OriginMatch::Any => true,
            OriginMatch::Exact(e) => o.eq_ignore_ascii_case(e),
            OriginMatch::Subdomain { scheme, suffix } => {
                o.len() > scheme.len() + suffix.len() + 3
                    && o.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                    && o.get(scheme.len()..scheme.len() + 3) == Some("://")
                    && o.get(o.len() - suffix.len()..).is_some_and(|s| s.eq_ignore_ascii_case(suffix))
                    && o.as_bytes().get(o.len() - suffix.len() - 1) == Some(&b'.')
            }
        })
    }

    /// A browser's preflight: OPTIONS with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight(method: &http::Method, headers: &HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && headers.contains_key(http::header::ORIGIN)
            && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The CORS headers of an answer to `origin` (allowed); with
    /// `preflight` (the request's headers), also what may be sent and for
    /// how long. With credentials, browsers read `*` as a name, not as "any"
    /// (Fetch standard): a `*` list then echoes what the preflight asked for.
    pub fn mark(&self, origin: &HeaderValue, preflight: Option<&HeaderMap>, h: &mut HeaderMap) {
        use http::header;
        // `*` cannot carry credentials: then the origin is echoed.
        if self.origins.contains(&OriginMatch::Any) && !self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY.clone());
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, ORIGIN.clone());
        }
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
        if let Some(asked) = preflight {
            let list = |ours: &HeaderValue, theirs: header::HeaderName| {
                if ours == "*" && self.credentials { asked.get(theirs).cloned() } else { Some(ours.clone()) }
            };
            if let Some(m) = list(&self.methods, header::ACCESS_CONTROL_REQUEST_METHOD) {
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
            }
            if let Some(v) = list(&self.headers, header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(a) = &self.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, a.clone());
            }
        }
        if let Some(e) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

/// Request and response header changes (`request_headers`,
/// `response_headers`), for a route or one of its versions.
#[derive(Debug, Clone, Default)]
pub struct Modifiers {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl Modifiers {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// `set` (replace every value), `add` (append a value), `remove`. The
/// config check keeps a name out of more than one list, so the order they
/// apply in cannot matter.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
    }
}

/// How a path is replaced, by a rewrite or a redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    /// The whole path. On a `path_type: regex` route `$1`…`$9` stand for
    /// the match's capture groups (ingress-nginx `rewrite-target`).
    Full(String),
    /// The part the route's prefix matched (Gateway API
    /// `ReplacePrefixMatch`): `/old` → `/new` makes `/old/x` `/new/x`.
    Prefix(String),
}

impl PathChange {
    /// The new path for `path`, which `matched` took. `None` only when the
    /// route's match cannot say what part it matched (the config check
    /// refuses such routes).
    pub fn apply(&self, matched: &PathMatch, path: &str) -> Option<String> {
        match self {
            PathChange::Full(template) => match matched {
                PathMatch::Regex(re) => re.captures(path).map(|c| expand(template, &c)),
                _ => Some(template.clone()),
            },
            PathChange::Prefix(to) => {
                let rest = match matched {
                    PathMatch::Str(p) => path.get(p.len()..)?,
                    PathMatch::Segments(p) => path.get(p.trim_end_matches('/').len()..)?,
                    PathMatch::Exact(_) | PathMatch::Regex(_) => return None,
                };
                // Segments: `rest` is empty or starts with `/`; a
                // replacement's own trailing `/` would double it.
                let to = if matches!(matched, PathMatch::Segments(_)) { to.trim_end_matches('/') } else { to };
                let out = format!("{to}{rest}");
                Some(if out.is_empty() { "/".into() } else { out })
            }
        }
    }
}

/// `$1`…`$9` in `template` replaced by the capture groups (a group that did
/// not take part is empty; `$0` is the whole match; `$$` is a `$`).
fn expand(template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some(d @ '0'..='9') => {
                chars.next();
                let i = usize::from(d as u8 - b'0');
                out.push_str(caps.get(i).map_or("", |m| m.as_str()));
            }
            _ => out.push('$'),
        }
    }
    out
}

/// `routes[].rewrite`: what the upstream is asked for instead.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    pub path: Option<PathChange>,
    /// The Host the upstream gets (`X-Forwarded-Host` keeps the client's).
    pub hostname: Option<HeaderValue>,
}

/// `routes[].redirect`: answer with a redirect built from the request.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// `http` or `https`; None keeps the request's.
    pub scheme: Option<&'static str>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathChange>,
    pub status: StatusCode,
    /// `keep_query` (default true): the request's query goes on the
    /// `Location` (the Gateway API's rule); false drops it (nginx's `return`).
    pub keep_query: bool,
}

/// What a redirect is built from.
pub struct Asked<'a> {
    pub https: bool,
    /// Host without port, as routed.
    pub host: &'a str,
    /// The port in the request's authority, if it had one.
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

impl Redirect {
    /// The `Location` for a request, as the Gateway API builds it: the
    /// port follows a changed scheme (its well-known port, left out) unless
    /// given; a well-known port is never written; the query is kept.
    pub fn location(&self, matched: &PathMatch, asked: &Asked<'_>) -> Option<String> {
        let scheme = self.scheme.unwrap_or(if asked.https { "https" } else { "http" });
        let host = self.hostname.as_deref().unwrap_or(asked.host);
        let port = match (self.port, self.scheme) {
            (Some(p), _) => Some(p),
            (None, Some(_)) => None,
            (None, None) => asked.port,
        };
        let port = port.filter(|&p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let path = match &self.path {
            Some(change) => change.apply(matched, asked.path)?,
            None => asked.path.to_owned(),
        };
        let mut out = format!("{scheme}://{host}");
        if let Some(p) = port {
            out.push_str(&format!(":{p}"));
        }
        out.push_str(&path);
        if let Some(q) = asked.query.filter(|_| self.keep_query) {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }

    /// True when the redirect would send the client back to the URL it
    /// asked for (a loop the client would follow until it gives up).
    pub fn loops(&self, location: &str, asked: &Asked<'_>) -> bool {
        let scheme = if asked.https { "https" } else { "http" };
        let port = asked.port.filter(|&p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let mut origin = format!("{scheme}://{}", asked.host);
        if let Some(p) = port {
            origin.push_str(&format!(":{p}"));
        }
        let mut rest = asked.path.to_owned();
        if let Some(q) = asked.query {
            rest.push('?');
            rest.push_str(q);
        }
        // Scheme and host are case-insensitive; path and query are not.
        location.len() == origin.len() + rest.len()
            && location.get(..origin.len()).is_some_and(|o| o.eq_ignore_ascii_case(&origin))
            && location.get(origin.len()..) == Some(rest.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(p: &str, ignore_case: bool) -> PathMatch {
        PathMatch::Regex(crate::routing::PathRegex::new(p, ignore_case).map_err(|e| e.to_string()).unwrap())
    }

    #[test]
    fn prefix_replacement_follows_the_gateway_api_cases() {
        // Conformance HTTPRouteRewritePath: /prefix/one → /one, /strip-prefix → /.
        let seg = |p: &str| PathMatch::Segments(p.into());
        let change = |to: &str| PathChange::Prefix(to.into());
        assert_eq!(change("/one").apply(&seg("/prefix/one"), "/prefix/one/two").as_deref(), Some("/one/two"));
        assert_eq!(change("/").apply(&seg("/strip-prefix"), "/strip-prefix/three").as_deref(), Some("/three"));
        assert_eq!(change("/").apply(&seg("/strip-prefix"), "/strip-prefix").as_deref(), Some("/"));
        assert_eq!(change("/one/").apply(&seg("/prefix/one"), "/prefix/one/two").as_deref(), Some("/one/two"));
        assert_eq!(change("/x").apply(&PathMatch::Str("/api".into()), "/apiv2").as_deref(), Some("/xv2"));
        assert_eq!(change("/x").apply(&PathMatch::Exact("/a".into()), "/a"), None);
    }

    #[test]
    fn full_paths_take_capture_groups() {
        // ingress-nginx docs, rewrite: /something(/|$)(.*) with /$2.
        let m = regex("/something(/|$)(.*)", true);
        let to = PathChange::Full("/$2".into());
        assert_eq!(to.apply(&m, "/something").as_deref(), Some("/"));
        assert_eq!(to.apply(&m, "/something/").as_deref(), Some("/"));
        assert_eq!(to.apply(&m, "/SomeThing/new").as_deref(), Some("/new"));
        assert_eq!(PathChange::Full("/a$$b$9$".into()).apply(&m, "/something/x").as_deref(), Some("/a$b$"));
        assert_eq!(
            PathChange::Full("/fixed".into()).apply(&PathMatch::Str("/".into()), "/q").as_deref(),
            Some("/fixed")
        );
    }

    #[test]
    fn locations_follow_the_gateway_api_port_rules() {
        let asked = Asked { https: false, host: "example.com", port: Some(8080), path: "/a", query: Some("b=1") };
        let r = |scheme, hostname: Option<&str>, port| Redirect {
            scheme,
            hostname: hostname.map(str::to_owned),
            port,
            path: None,
            status: StatusCode::FOUND,
            keep_query: true,
        };
        let any = PathMatch::Str("/".into());
        // A changed scheme takes its well-known port, which is not written.
        assert_eq!(r(Some("https"), None, None).location(&any, &asked).unwrap(), "https://example.com/a?b=1");
        // No scheme, no port: the request's port stays.
        assert_eq!(r(None, Some("other.org"), None).location(&any, &asked).unwrap(), "http://other.org:8080/a?b=1");
        assert_eq!(r(None, None, Some(80)).location(&any, &asked).unwrap(), "http://example.com/a?b=1");
        assert_eq!(
            r(Some("https"), None, Some(8443)).location(&any, &asked).unwrap(),
            "https://example.com:8443/a?b=1"
        );
        let same = r(None, None, None);
        let loc = same.location(&any, &asked).unwrap();
        assert!(same.loops(&loc, &asked));
        assert!(!r(Some("https"), None, None).loops("https://example.com/a?b=1", &asked));
        assert!(same.loops("HTTP://Example.COM:8080/a?b=1", &asked), "scheme and host in any case");
        assert!(!same.loops("http://example.com:8080/A?b=1", &asked), "a path differing in case is another place");
    }

    #[test]
    fn cors_origins_match_exactly_or_by_subdomain() {
        let cors = Cors {
            origins: vec![
                OriginMatch::Exact("https://app.example.com".into()),
                OriginMatch::Subdomain { scheme: "https".into(), suffix: "foo.com".into() },
            ],
            methods: HeaderValue::from_static("GET"),
            headers: HeaderValue::from_static("x"),
            expose: None,
            credentials: true,
            max_age: None,
        };
        assert!(cors.allows(b"https://app.example.com"));
        assert!(cors.allows(b"HTTPS://APP.example.com"));
        assert!(!cors.allows(b"https://app.example.com.evil.net"));
        assert!(cors.allows(b"https://a.foo.com"));
        assert!(cors.allows(b"https://a.b.foo.com"));
        assert!(!cors.allows(b"https://foo.com"), "a subdomain, not the apex");
        assert!(!cors.allows(b"https://evilfoo.com"));
        assert!(!cors.allows(b"http://a.foo.com"));
        let mut h = HeaderMap::new();
        cors.mark(&HeaderValue::from_static("https://a.foo.com"), None, &mut h);
        assert_eq!(h.get("access-control-allow-origin").unwrap(), "https://a.foo.com");
        assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
        assert_eq!(h.get("vary").unwrap(), "Origin");
    }

    #[test]
    fn header_ops_set_add_and_remove() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("s"))],
            add: vec![(HeaderName::from_static("x-b"), HeaderValue::from_static("b"))],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["s"]);
        assert_eq!(h.get("x-b").unwrap(), "b");
        assert!(h.get("x-gone").is_none());
    }
}
