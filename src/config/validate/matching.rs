//! How a route matches a path (`path_prefix`, or `path` with `path_type`)
//! and how a segment matches a request (header, `header_regex`, cookie,
//! query).

use super::{Problems, header_name};
use crate::config::raw::{RawRouteMatch, RawSegmentMatch};
use crate::routing::SegmentMatcher;

/// Longest `header_regex` pattern accepted, and the compiled size allowed:
/// matching stays linear in the header's length (the `regex` crate has no
/// backtracking) and a pattern cannot blow up memory.
const MAX_REGEX_LEN: usize = 1024;
const MAX_REGEX_SIZE: usize = 256 * 1024;

fn header_regex(at: &str, pattern: &str, p: &mut Problems) -> Option<regex::bytes::Regex> {
    if pattern.len() > MAX_REGEX_LEN {
        p.at(at, format!("pattern longer than {MAX_REGEX_LEN} bytes"));
        return None;
    }
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| p.at(at, format!("invalid regex: {}", e.to_string().lines().last().unwrap_or("invalid"))))
        .ok()
}

/// `match.path_prefix` (a plain string prefix, the default `/`), or
/// `match.path` with `path_type`: `exact`, `prefix` (Kubernetes: whole
/// path segments, `/api` takes `/api` and `/api/x`, not `/apix`), or
/// `regex` (anchored at the start; `ignore_case` as ingress-nginx's `~*`).
pub(super) fn compile_path(m: Option<&RawRouteMatch>, at: &str, p: &mut Problems) -> crate::routing::PathMatch {
    use crate::routing::PathMatch;
    let Some(m) = m else { return PathMatch::Str("/".into()) };
    if m.ignore_case.is_some() && m.path_type.as_deref() != Some("regex") {
        p.at(format!("{at}.ignore_case"), "only with `path_type: regex`");
    }
    let checked = |p: &mut Problems, key: &str, v: &str| {
        if !v.starts_with('/') {
            p.at(format!("{at}.{key}"), "must start with `/`");
        }
        v.to_owned()
    };
    match (&m.path_prefix, &m.path, m.path_type.as_deref()) {
        (Some(_), Some(_), _) => {
            p.at(format!("{at}.path"), "use `path_prefix` or `path` with `path_type`, not both");
            PathMatch::Str("/".into())
        }
        (prefix, None, None) => PathMatch::Str(checked(p, "path_prefix", prefix.as_deref().unwrap_or("/"))),
        (_, None, Some(_)) => {
            p.at(format!("{at}.path_type"), "needs `path`");
            PathMatch::Str("/".into())
        }
        (_, Some(v), Some("exact")) => PathMatch::Exact(checked(p, "path", v)),
        (_, Some(v), Some("prefix")) => PathMatch::Segments(checked(p, "path", v)),
        (_, Some(v), Some("regex")) => {
            let v = checked(p, "path", v);
            match crate::routing::PathRegex::new(&v, m.ignore_case.unwrap_or(false)) {
                Ok(re) => PathMatch::Regex(re),
                Err(regex::Error::CompiledTooBig(_)) if v.len() > crate::routing::MAX_PATH_REGEX_LEN => {
                    p.at(
                        format!("{at}.path"),
                        format!("pattern longer than {} bytes", crate::routing::MAX_PATH_REGEX_LEN),
                    );
                    PathMatch::Str("/".into())
                }
                Err(e) => {
                    p.at(
                        format!("{at}.path"),
                        format!("invalid regex: {}", e.to_string().lines().last().unwrap_or("invalid")),
                    );
                    PathMatch::Str("/".into())
                }
            }
        }
        (_, Some(_), other) => {
            p.at(
                format!("{at}.path_type"),
                format!("{}: use `exact`, `prefix` or `regex`", other.map_or("missing".into(), |o| format!("`{o}`"))),
            );
            PathMatch::Str("/".into())
        }
    }
}

/// A route's own `match.header`/`header_regex`/`cookie`/`query`
/// conditions (none: every request of its host and path).
pub(super) fn compile_route_conditions(m: &RawRouteMatch, path: &str, p: &mut Problems) -> Vec<SegmentMatcher> {
    let as_segment = RawSegmentMatch {
        header: m.header.clone(),
        cookie: m.cookie.clone(),
        query: m.query.clone(),
        header_regex: m.header_regex.clone(),
        client_cert: None,
    };
    if m.header.is_empty() && m.cookie.is_empty() && m.query.is_empty() && m.header_regex.is_empty() {
        return Vec::new();
    }
    compile_segment_match(&as_segment, path, p)
}

pub(super) fn compile_segment_match(m: &RawSegmentMatch, path: &str, p: &mut Problems) -> Vec<SegmentMatcher> {
    let mut out = Vec::new();
    for (name, values) in &m.header {
        if let Some(h) = header_name(&format!("{path}.header.{name}"), name, p) {
            out.push(SegmentMatcher::Header(h, values.clone().into_vec()));
        }
    }
    for (name, values) in &m.cookie {
        out.push(SegmentMatcher::Cookie(name.clone(), values.clone().into_vec()));
    }
    for (name, values) in &m.query {
        out.push(SegmentMatcher::Query(name.clone(), values.clone().into_vec()));
    }
    for (name, pattern) in &m.header_regex {
        let at = format!("{path}.header_regex.{name}");
        if let (Some(h), Some(re)) = (header_name(&at, name, p), header_regex(&at, pattern, p)) {
            out.push(SegmentMatcher::HeaderRegex(h, re));
        }
    }
    if let Some(c) = &m.client_cert {
        let fields = [
            (crate::tls::CertField::Cn, &c.cn),
            (crate::tls::CertField::O, &c.o),
            (crate::tls::CertField::Ou, &c.ou),
            (crate::tls::CertField::San, &c.san),
        ];
        let before = out.len();
        for (field, values) in fields {
            if let Some(v) = values {
                out.push(SegmentMatcher::ClientCert(field, v.clone().into_vec()));
            }
        }
        if out.len() == before {
            out.push(SegmentMatcher::ClientCertPresent);
        }
    }
    if out.is_empty() {
        p.at(path, "a segment needs at least one header, header_regex, cookie, query or client_cert condition");
    }
    out
}
