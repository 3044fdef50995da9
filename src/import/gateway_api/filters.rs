//! HTTPRoute filters and timeouts as weir's route policies:
//! `RequestHeaderModifier`/`ResponseHeaderModifier` (on the rule: the
//! route's; on a backendRef: that version's), `URLRewrite` (hostname,
//! `ReplaceFullPath`, `ReplacePrefixMatch`), `RequestRedirect`, `CORS`, and
//! `timeouts` (`request`, `backendRequest`). Each is written as one YAML
//! route key; what weir cannot carry makes the rule untranslatable, with
//! the reason.

use crate::import::q;
use serde_json::Value;

/// A rule's route-level policies, as route keys (`    key: value` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RuleEdge {
    pub lines: Vec<String>,
    /// `redirect: {...}`: the rule answers by itself.
    pub redirect: Option<String>,
    /// A redirect that only changes the scheme to https must only take
    /// plain requests (else it would send https requests to themselves).
    pub plain_only: bool,
}

/// Names weir's modifiers never touch (`weir check` refuses them): framing,
/// hop-by-hop, Host (a rewrite's job), what weir sets itself.
fn refused(name: &str, response: bool) -> bool {
    let n = name.to_ascii_lowercase();
    let hop = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];
    hop.contains(&n.as_str())
        || n == "content-length"
        || n.starts_with("x-weir-")
        || n.replace('_', "-") != n
            && (hop.contains(&n.replace('_', "-").as_str()) || n.replace('_', "-") == "content-length")
        || (!response
            && ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"]
                .contains(&n.as_str()))
}

/// `RequestHeaderModifier`/`ResponseHeaderModifier` as
/// `{set: {...}, add: {...}, remove: [...]}`.
pub(super) fn header_ops(f: &Value, response: bool) -> Result<String, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for list in ["set", "add"] {
        let mut pairs = Vec::new();
        for h in f[list].as_array().into_iter().flatten() {
            let (Some(n), Some(v)) = (h["name"].as_str(), h["value"].as_str()) else {
                return Err(format!("{list}: an entry without name and value"));
            };
            let lower = n.to_ascii_lowercase();
            if !crate::import::token(n) || http::HeaderValue::from_str(v).is_err() {
                return Err(format!("{n:?}: {v:?} is not a header weir can write"));
            }
            if refused(n, response) {
                return Err(format!("{n:?}: weir does not let a modifier change it (framing, hop-by-hop or its own)"));
            }
            if seen.contains(&lower) {
                return Err(format!("{n:?} is modified twice: weir takes one change per header name"));
            }
            seen.push(lower.clone());
            pairs.push(format!("{}: {}", q(&lower), q(v)));
        }
        if !pairs.is_empty() {
            out.push(format!("{list}: {{{}}}", pairs.join(", ")));
        }
    }
    let mut removes = Vec::new();
    for n in f["remove"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let lower = n.to_ascii_lowercase();
        if !crate::import::token(n) || refused(n, response) || seen.contains(&lower) {
            return Err(format!("remove {n:?}: not a header weir can remove here"));
        }
        seen.push(lower.clone());
        removes.push(q(&lower));
    }
    if !removes.is_empty() {
        out.push(format!("remove: [{}]", removes.join(", ")));
    }
    Ok(format!("{{{}}}", out.join(", ")))
}

/// A `path` modifier of URLRewrite or RequestRedirect as weir's `path` or
/// `path_prefix` key; `prefix_match`: the rule's match is a PathPrefix.
fn path_change(p: &Value, prefix_match: bool) -> Result<Option<String>, String> {
    if p.is_null() {
        return Ok(None);
    }
    match p["type"].as_str() {
        Some("ReplaceFullPath") => {
            let v = p["replaceFullPath"].as_str().unwrap_or("/");
            if !v.starts_with('/') || v.contains(['?', '#', ' ', '$']) {
                return Err(format!("replaceFullPath {v:?} is not a plain path"));
            }
            Ok(Some(format!("path: {}", q(v))))
        }
        Some("ReplacePrefixMatch") if prefix_match => {
            let v = p["replacePrefixMatch"].as_str().unwrap_or("/");
            if !v.starts_with('/') || v.contains(['?', '#', ' ']) {
                return Err(format!("replacePrefixMatch {v:?} is not a plain path"));
            }
            Ok(Some(format!("path_prefix: {}", q(v))))
        }
        Some("ReplacePrefixMatch") => Err("ReplacePrefixMatch needs a PathPrefix match".into()),
        other => Err(format!("path modifier type {other:?} is not translated")),
    }
}

fn hostname(v: &Value) -> Result<Option<String>, String> {
    match v.as_str() {
        None => Ok(None),
        Some(h) if crate::import::valid_host(&h.to_ascii_lowercase()) && !h.starts_with('*') => {
            Ok(Some(format!("hostname: {}", q(&h.to_ascii_lowercase()))))
        }
        Some(h) => Err(format!("hostname {h:?} is not a host name")),
    }
}

/// `URLRewrite` as `rewrite: {...}`.
fn rewrite(f: &Value, prefix_match: bool) -> Result<String, String> {
    let mut keys = Vec::new();
    keys.extend(hostname(&f["hostname"])?);
    keys.extend(path_change(&f["path"], prefix_match)?);
    if keys.is_empty() {
        return Err("URLRewrite changes nothing".into());
    }
    Ok(format!("rewrite: {{{}}}", keys.join(", ")))
}

/// `RequestRedirect` as the keys of `redirect: {...}`, and whether it only
/// sends plain HTTP to https.
fn redirect(f: &Value, prefix_match: bool) -> Result<(String, bool), String> {
    let mut keys = Vec::new();
    let scheme = f["scheme"].as_str();
    match scheme {
        None => {}
        Some(s @ ("http" | "https")) => keys.push(format!("scheme: {s}")),
        Some(s) => return Err(format!("scheme {s:?}: weir redirects to http or https")),
    }
    let host = hostname(&f["hostname"])?;
    let only_scheme = host.is_none() && f["path"].is_null() && f["port"].is_null();
    keys.extend(host);
    if let Some(p) = f["port"].as_u64() {
        keys.push(format!("port: {}", u16::try_from(p).map_err(|_| format!("port {p}"))?));
    }
    keys.extend(path_change(&f["path"], prefix_match)?);
    let status = f["statusCode"].as_u64().unwrap_or(302);
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return Err(format!("statusCode {status}"));
    }
    keys.push(format!("status: {status}"));
    if only_scheme && scheme != Some("https") {
        return Err("a redirect that names no other scheme, host or path points at the request itself".into());
    }
    Ok((keys.join(", "), only_scheme))
}

/// The experimental `CORS` filter (GEP-1767) as `cors: {...}`.
fn cors(f: &Value) -> Result<String, String> {
    let list = |key: &str| -> Vec<String> {
        f[key].as_array().into_iter().flatten().filter_map(Value::as_str).map(q).collect()
    };
    let origins = list("allowOrigins");
    if origins.is_empty() {
        return Err("CORS without allowOrigins".into());
    }
    for o in f["allowOrigins"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if crate::routing::edge::parse_origin(o).is_none() {
            return Err(format!("allowOrigins {o:?} is not an origin weir takes (scheme://host[:port], `*`)"));
        }
    }
    let mut out = vec![format!("allow_origins: [{}]", origins.join(", "))];
    for (key, ours) in
        [("allowMethods", "allow_methods"), ("allowHeaders", "allow_headers"), ("exposeHeaders", "expose_headers")]
    {
        let v = list(key);
        if !v.is_empty() {
            out.push(format!("{ours}: [{}]", v.join(", ")));
        }
    }
    out.push(format!("allow_credentials: {}", f["allowCredentials"].as_bool().unwrap_or(false)));
    out.push(format!("max_age: {}s", f["maxAge"].as_u64().unwrap_or(5).min(31_536_000)));
    Ok(format!("cors: {{{}}}", out.join(", ")))
}

/// A rule's filters other than `RequestMirror` (read by the caller).
/// `prefix_match`: every match of the rule is a PathPrefix (what
/// ReplacePrefixMatch needs). Err: a filter weir cannot carry, with why.
pub(super) fn rule_edge(rule: &Value, prefix_match: bool) -> Result<RuleEdge, String> {
    let mut edge = RuleEdge::default();
    for f in rule["filters"].as_array().into_iter().flatten() {
        match f["type"].as_str() {
            Some("RequestMirror") => {}
            Some("RequestHeaderModifier") => {
                edge.lines.push(format!("request_headers: {}", header_ops(&f["requestHeaderModifier"], false)?));
            }
            Some("ResponseHeaderModifier") => {
                edge.lines.push(format!("response_headers: {}", header_ops(&f["responseHeaderModifier"], true)?));
            }
            Some("URLRewrite") => edge.lines.push(rewrite(&f["urlRewrite"], prefix_match)?),
            Some("RequestRedirect") => {
                let (keys, plain_only) = redirect(&f["requestRedirect"], prefix_match)?;
                edge.redirect = Some(keys);
                edge.plain_only = plain_only;
            }
            Some("CORS") => edge.lines.push(cors(&f["cors"])?),
            other => return Err(format!("filter {} is not translated", other.unwrap_or("?"))),
        }
    }
    if let Some(t) = rule["timeouts"].as_object().filter(|t| !t.is_empty()) {
        let mut keys = Vec::new();
        for (theirs, ours) in [("request", "request"), ("backendRequest", "backend")] {
            if let Some(v) = t.get(theirs).and_then(Value::as_str) {
                // GEP-2257 durations: h, m, s, ms, combined (`1m30s`); "0s" is no limit.
                let d = gateway_duration(v).ok_or_else(|| format!("timeouts.{theirs} {v:?} is not a duration"))?;
                if d > 0 {
                    keys.push(format!("{ours}: {d}ms"));
                }
            }
        }
        if !keys.is_empty() {
            edge.lines.push(format!("timeouts: {{{}}}", keys.join(", ")));
        }
    }
    if edge.redirect.is_some() && !edge.lines.is_empty() {
        return Err("a redirect with other filters: weir's redirect route answers by itself".into());
    }
    Ok(edge)
}

/// A GEP-2257 duration in milliseconds (`1h`, `30s`, `500ms`, `1m30s`).
fn gateway_duration(v: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = v.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (mult, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
        rest = &rest[len..];
    }
    Some(total)
}

/// A backendRef's own filters as that version's keys
/// (`request_headers: …, response_headers: …`); None when it has none.
pub(super) fn backend_edge(b: &Value) -> Result<Option<String>, String> {
    let mut keys = Vec::new();
    for f in b["filters"].as_array().into_iter().flatten() {
        match f["type"].as_str() {
            Some("RequestHeaderModifier") => {
                keys.push(format!("request_headers: {}", header_ops(&f["requestHeaderModifier"], false)?));
            }
            Some("ResponseHeaderModifier") => {
                keys.push(format!("response_headers: {}", header_ops(&f["responseHeaderModifier"], true)?));
            }
            other => return Err(format!("backendRef filter {} is not translated", other.unwrap_or("?"))),
        }
    }
    Ok((!keys.is_empty()).then(|| keys.join(", ")))
}

/// The scheme a route's listeners speak, from its `parentRefs` and the
/// Gateways in the input: every parentRef naming a listener (`sectionName`)
/// of one protocol. None: either, or not known.
pub(super) fn listener_scheme(route: &Value, gateways: &[&Value]) -> Option<&'static str> {
    let ns = route["metadata"]["namespace"].as_str().unwrap_or("default");
    let mut schemes = Vec::new();
    for p in route["spec"]["parentRefs"].as_array().into_iter().flatten() {
        let section = p["sectionName"].as_str()?;
        let gw_ns = p["namespace"].as_str().unwrap_or(ns);
        let gw = gateways.iter().find(|g| {
            g["metadata"]["name"].as_str() == p["name"].as_str()
                && g["metadata"]["namespace"].as_str().unwrap_or("default") == gw_ns
        })?;
        let listener = gw["spec"]["listeners"].as_array()?.iter().find(|l| l["name"].as_str() == Some(section))?;
        schemes.push(match listener["protocol"].as_str()? {
            "HTTP" => "http",
            "HTTPS" => "https",
            _ => return None,
        });
    }
    let first = *schemes.first()?;
    schemes.iter().all(|s| *s == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(gateway_duration("10s"), Some(10_000));
        assert_eq!(gateway_duration("500ms"), Some(500));
        assert_eq!(gateway_duration("1h30m"), Some(5_400_000));
        assert_eq!(gateway_duration("1m30s250ms"), Some(90_250));
        assert_eq!(gateway_duration("0s"), Some(0));
        assert_eq!(gateway_duration("10"), None);
        assert_eq!(gateway_duration("1d"), None);
    }

    #[test]
    fn header_modifiers_and_refusals() {
        let f = json!({"set": [{"name": "X-Header-Set", "value": "set-overwrites-values"}],
                       "add": [{"name": "X-Header-Add", "value": "add-appends-values"}],
                       "remove": ["X-Header-Remove"]});
        assert_eq!(
            header_ops(&f, false).unwrap(),
            "{set: {\"x-header-set\": \"set-overwrites-values\"}, add: {\"x-header-add\": \"add-appends-values\"}, remove: [\"x-header-remove\"]}"
        );
        assert!(header_ops(&json!({"set": [{"name": "Host", "value": "x"}]}), false).is_err());
        assert!(header_ops(&json!({"set": [{"name": "Transfer-Encoding", "value": "x"}]}), true).is_err());
        assert!(header_ops(&json!({"set": [{"name": "a", "value": "1"}], "remove": ["A"]}), false).is_err());
    }

    #[test]
    fn redirects_and_rewrites() {
        let r = json!({"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}});
        let e = rule_edge(&json!({"filters": [r]}), true).unwrap();
        assert_eq!(e.redirect.as_deref(), Some("scheme: https, status: 301"));
        assert!(e.plain_only);
        let w = json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "one.example.org",
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/one"}}}]});
        assert_eq!(
            rule_edge(&w, true).unwrap().lines,
            ["rewrite: {hostname: \"one.example.org\", path_prefix: \"/one\"}"]
        );
        assert!(rule_edge(&w, false).is_err(), "ReplacePrefixMatch on an Exact match");
    }
}
