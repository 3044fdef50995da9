//! `weir explain`: run the routing decision for a described request and say
//! what weir would do, in the same code path the proxy uses.

use crate::config::Snapshot;
use crate::routing::{self, BucketSource, Facts};
use crate::units::bp_to_percent;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

/// A request described on the command line or in `/explain`.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<(String, String)>,
    pub query: Option<String>,
    /// The request came over TLS (routes with `match.scheme`).
    pub https: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub route: Option<String>,
    pub version: Option<&'static str>,
    pub reason: Option<String>,
    pub bucket: Option<u16>,
    /// `key:header:x-player-id`, `cookie`, or `random`.
    pub bucket_source: Option<String>,
    pub weight_percent: Option<f64>,
    pub upstream: Option<String>,
    pub revision: Option<String>,
    /// For requests without a sticky key: the version is a fresh draw each time.
    pub note: Option<String>,
}

/// Build the header map a query describes. Bad names/values are reported.
pub fn headers_of(q: &Query) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (k, v) in &q.headers {
        let name =
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("bad header value for `{k}`"))?;
        map.append(name, value);
    }
    if !q.cookies.is_empty() {
        let joined: Vec<String> = q.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let value = HeaderValue::from_str(&joined.join("; ")).map_err(|_| "bad cookie".to_string())?;
        map.append(http::header::COOKIE, value);
    }
    Ok(map)
}

/// The §2 decision for `q`; `draw` is used only without a sticky key.
pub fn explain(snapshot: &Snapshot, q: &Query, draw: u16) -> Result<Explanation, String> {
    let headers = headers_of(q)?;
    let host = crate::headers::split_port(&q.host).0;
    let facts = Facts {
        host,
        path: &q.path,
        query: q.query.as_deref(),
        headers: &headers,
        client_cert: None,
        method: &http::Method::GET,
        https: q.https,
    };
    let Some(d) = routing::decide(&snapshot.table, &facts, draw) else {
        return Ok(Explanation {
            route: None,
            version: None,
            reason: Some("no route matches (404)".into()),
            bucket: None,
            bucket_source: None,
            weight_percent: None,
            upstream: None,
            revision: None,
            note: None,
        });
    };
    let route = snapshot.table.routes.get(d.route).ok_or("route index out of range")?;
    if let Some(r) = route.edge.as_ref().and_then(|e| e.redirect.as_ref()) {
        let (host, port) = crate::headers::split_port(&q.host);
        let asked = crate::routing::edge::Asked {
            https: q.https,
            host,
            port: port.and_then(|p| p.parse().ok()),
            path: &q.path,
            query: q.query.as_deref(),
        };
        return Ok(Explanation {
            route: Some(route.name.to_string()),
            version: None,
            reason: Some("redirect".into()),
            bucket: None,
            bucket_source: None,
            weight_percent: None,
            upstream: None,
            revision: None,
            note: r.location(&route.path, &asked).map(|l| format!("answers {} with Location: {l}", r.status.as_u16())),
        });
    }
    let backend = route.backend(d.version);
    let weight_bp = match d.reason {
        routing::Reason::Segment(i) => route.segments.get(i).map_or(route.overlay.weight_bp, |s| s.weight_bp),
        _ => route.overlay.weight_bp,
    };
    let source = d.bucket.map(|b| match b.source {
        BucketSource::Key(i) => route
            .sticky
            .as_ref()
            .and_then(|s| s.keys.get(i))
            .map_or_else(|| "key".to_string(), |k| format!("key:{}", k.describe())),
        BucketSource::Cookie => "cookie".to_string(),
        BucketSource::Random => "random".to_string(),
    });
    let random = d.bucket.is_some_and(|b| b.source == BucketSource::Random);
    Ok(Explanation {
        route: Some(route.name.to_string()),
        version: Some(d.version.as_str()),
        reason: Some(d.reason.describe(route)),
        bucket: d.bucket.map(|b| b.value),
        bucket_source: source,
        weight_percent: Some(bp_to_percent(weight_bp)),
        upstream: Some(backend.upstream_name.to_string()),
        revision: Some(backend.revision.to_string()),
        note: random.then(|| {
            format!(
                "no sticky key: each such request draws a fresh bucket (canary with probability {}%){}",
                bp_to_percent(weight_bp),
                if d.set_cookie.is_some() { "; the response sets a bucket cookie" } else { "" }
            )
        }),
    })
}
