//! A primary Ingress's edge annotations as weir's route policies: body
//! size, read timeout, rewrites (`rewrite-target`, `upstream-vhost`,
//! `x-forwarded-prefix`), redirects (`ssl-redirect`, `force-ssl-redirect`,
//! `permanent-redirect`, `temporal-redirect`, `app-root`), CORS and
//! `limit-rps`/`limit-rpm`. Each is written as ingress-nginx's template
//! applies it (defaults from its annotation parsers); what cannot be carried
//! is listed with the reason.

use super::{ANN, Ingress};
use crate::import::{Skipped, q};
use std::fmt::Write as _;

/// Annotations this file translates.
pub(super) const EDGE_KEYS: [&str; 25] = [
    "proxy-body-size",
    "proxy-read-timeout",
    "proxy-connect-timeout",
    "proxy-send-timeout",
    "rewrite-target",
    "use-regex",
    "upstream-vhost",
    "x-forwarded-prefix",
    "ssl-redirect",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
];

fn note(skipped: &mut Vec<Skipped>, i: &Ingress, key: &str, why: impl Into<String>) {
    skipped.push(Skipped { object: i.id(), what: format!("{ANN}{key}"), why: why.into() });
}

/// Does this Ingress make its hosts' paths regexes (`use-regex`, or any
/// `rewrite-target`: ingress-nginx's `enforceRegex`)?
pub(super) fn wants_regex(i: &Ingress) -> bool {
    i.ann("use-regex") == Some("true") || i.ann("rewrite-target").is_some_and(|t| !t.is_empty())
}

/// nginx's size syntax: `8m`, `512k`, `1g`, bytes without a unit.
fn nginx_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1024),
        b'm' | b'M' => (&v[..v.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// `permanent-redirect`/`temporal-redirect` URL as weir's redirect keys.
fn redirect_keys(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = crate::headers::split_port(authority);
    if host.is_empty() || !crate::import::valid_host(&host.to_ascii_lowercase()) || host.starts_with('*') {
        return None;
    }
    let mut out = format!("scheme: {scheme}, hostname: {}", q(&host.to_ascii_lowercase()));
    if let Some(p) = port {
        out.push_str(&format!(", port: {}", p.parse::<u16>().ok()?));
    }
    if !path.is_empty() && path != "/" || url.ends_with('/') {
        if path.contains(['?', '#', '$']) {
            return None;
        }
        out.push_str(&format!(", path: {}", q(if path.is_empty() { "/" } else { path })));
    } else {
        out.push_str(", path: \"/\"");
    }
    Some(out)
}

/// A route that answers by itself instead of the Ingress's Service
/// (`permanent-redirect`, `temporal-redirect`): the redirect keys.
pub(super) fn whole_redirect(i: &Ingress, skipped: &mut Vec<Skipped>) -> Option<String> {
    let (key, default_code, url) = match (i.ann("permanent-redirect"), i.ann("temporal-redirect")) {
        (Some(u), _) if !u.is_empty() => ("permanent-redirect", 301, u),
        (_, Some(u)) if !u.is_empty() => ("temporal-redirect", 302, u),
        _ => return None,
    };
    let Some(keys) = redirect_keys(url.trim()) else {
        note(
            skipped,
            i,
            key,
            format!("{url:?}: not an http(s) URL weir can redirect to (no nginx variables, query or fragment)"),
        );
        return None;
    };
    let code_key = format!("{key}-code");
    let code = match i.ann(&code_key).map(|c| c.trim().parse::<u16>()) {
        None => default_code,
        Some(Ok(c @ (301 | 302 | 303 | 307 | 308))) => c,
        // ingress-nginx falls back to its default for a code it does not take.
        Some(_) => {
            note(skipped, i, &code_key, format!("not a redirect status: {default_code}, as ingress-nginx uses then"));
            default_code
        }
    };
    // nginx's `return CODE URL` sends the URL as written: no query added.
    Some(format!("{keys}, status: {code}, keep_query: false"))
}

/// The `ssl-redirect` twin of a route: ingress-nginx answers plain-HTTP
/// requests for a host the Ingress has TLS for with 308 to https (default
/// `ssl-redirect: "true"`), or for any host with `force-ssl-redirect`.
pub(super) fn redirects_to_https(i: &Ingress, host: &str) -> bool {
    if i.ann("force-ssl-redirect") == Some("true") {
        return true;
    }
    i.ann("ssl-redirect") != Some("false") && !host.is_empty() && i.tls_hosts.iter().any(|h| h == host)
}

/// The route keys for the Ingress's other edge annotations, written into
/// `body` (indented as route keys). `regex`: the route's path is a regex.
pub(super) fn write_edge(body: &mut String, i: &Ingress, (regex, path): (bool, &str), skipped: &mut Vec<Skipped>) {
    if let Some(v) = i.ann("proxy-body-size") {
        match nginx_size(v) {
            // nginx: 0 turns the check off; weir's global limit still holds.
            Some(0) => {
                note(skipped, i, "proxy-body-size", "0 (no limit): weir's limits.max_request_body still applies")
            }
            Some(n) => {
                let _ = writeln!(body, "    max_request_body: {n}   # proxy-body-size {v}");
            }
            None => note(skipped, i, "proxy-body-size", format!("{v:?} is not an nginx size")),
        }
    }
    if let Some(v) = i.ann("proxy-read-timeout") {
        match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => {
                let s = s.min(31_536_000);
                let _ = writeln!(body, "    timeouts: {{backend: {s}s}}   # proxy-read-timeout");
            }
            _ => note(skipped, i, "proxy-read-timeout", format!("{v:?} is not a number of seconds")),
        }
    }
    for k in ["proxy-connect-timeout", "proxy-send-timeout"] {
        if i.ann(k).is_some() {
            note(skipped, i, k, "per upstream in weir: set upstreams.X.connect_timeout / body_timeout");
        }
    }
    let mut rewrite = Vec::new();
    if let Some(t) = i.ann("rewrite-target").filter(|t| !t.is_empty()) {
        if !t.starts_with('/') || t.contains(['?', '#', ' ']) {
            note(skipped, i, "rewrite-target", format!("{t:?}: not a path weir can rewrite to"));
        } else if t.as_bytes().windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_alphabetic()) {
            note(skipped, i, "rewrite-target", format!("{t:?}: nginx variables are not translated"));
        } else if http::uri::PathAndQuery::try_from(t).is_err() {
            note(skipped, i, "rewrite-target", format!("{t:?}: not a path weir can rewrite to"));
        } else if regex {
            rewrite.push(format!("path: {}", q(&fit_groups(t, path))));
        }
    }
    if let Some(h) = i.ann("upstream-vhost").map(str::trim).filter(|h| !h.is_empty()) {
        if crate::import::valid_host(&h.to_ascii_lowercase()) && !h.starts_with('*') {
            rewrite.push(format!("hostname: {}", q(&h.to_ascii_lowercase())));
        } else {
            note(skipped, i, "upstream-vhost", format!("{h:?}: not a host name (nginx variables are not translated)"));
        }
    }
    if !rewrite.is_empty() {
        let _ = writeln!(body, "    rewrite: {{{}}}", rewrite.join(", "));
    }
    // ingress-nginx sends it only where it rewrites (its template).
    if let Some(p) = i.ann("x-forwarded-prefix").filter(|p| !p.is_empty()) {
        if http::HeaderValue::from_str(p).is_err() {
            note(skipped, i, "x-forwarded-prefix", format!("{p:?} is not a header value"));
        } else if i.ann("rewrite-target").is_some_and(|t| !t.is_empty()) {
            let _ = writeln!(body, "    request_headers: {{set: {{x-forwarded-prefix: {}}}}}", q(p));
        } else {
            note(skipped, i, "x-forwarded-prefix", "without rewrite-target ingress-nginx sends nothing either");
        }
    }
    write_cors(body, i, skipped);
    write_rate_limit(body, i, skipped);
}

/// A rewrite target for one path: `$n` beyond the path's capture groups is
/// empty in nginx, so it is dropped here (weir's check refuses it).
fn fit_groups(target: &str, path: &str) -> String {
    let groups = crate::routing::PathRegex::new(path, true).map_or(0, |r| r.groups());
    let mut out = String::with_capacity(target.len());
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            if d as usize <= groups {
                out.push('$');
                out.push(char::from_digit(d, 10).unwrap_or('0'));
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `enable-cors` with ingress-nginx's defaults (`annotations/cors`).
fn write_cors(body: &mut String, i: &Ingress, skipped: &mut Vec<Skipped>) {
    if i.ann("enable-cors") != Some("true") {
        for k in ["cors-allow-origin", "cors-allow-methods", "cors-allow-headers", "cors-expose-headers"] {
            if i.ann(k).is_some() {
                note(skipped, i, k, "ignored without enable-cors: \"true\" (ingress-nginx ignores it then too)");
            }
        }
        return;
    }
    let list = |v: &str| v.split(',').map(|s| q(s.trim())).filter(|s| s != "\"\"").collect::<Vec<_>>().join(", ");
    // ingress-nginx keeps the origins its pattern takes and drops the
    // rest; none left is `*`. weir's own check decides what it can carry.
    let origins: Vec<String> = match i.ann("cors-allow-origin") {
        None => vec!["*".into()],
        Some(v) => {
            let (good, bad): (Vec<&str>, Vec<&str>) = v
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .partition(|o| crate::routing::edge::parse_origin(o).is_some());
            if !bad.is_empty() {
                note(skipped, i, "cors-allow-origin", format!("{bad:?}: not origins (scheme://host[:port]); dropped"));
            }
            if good.is_empty() { vec!["*".into()] } else { good.iter().map(|o| (*o).to_owned()).collect() }
        }
    };
    let any = origins.iter().any(|o| o == "*");
    let origins = origins.iter().map(|o| q(o)).collect::<Vec<_>>().join(", ");
    let mut out = format!("allow_origins: [{origins}]");
    if let Some(m) = i.ann("cors-allow-methods") {
        out.push_str(&format!(", allow_methods: [{}]", list(m)));
    }
    if let Some(h) = i.ann("cors-allow-headers") {
        out.push_str(&format!(", allow_headers: [{}]", list(h)));
    }
    if let Some(e) = i.ann("cors-expose-headers") {
        out.push_str(&format!(", expose_headers: [{}]", list(e)));
    }
    // ingress-nginx: credentials on, max age 1728000 s, unless set. With
    // the origin `*` it sends a literal `*`, with which browsers never share
    // a credentialed answer; weir would name the origin instead, so the
    // import turns credentials off there to keep what browsers allowed.
    let credentials = i.ann("cors-allow-credentials").is_none_or(|c| c.trim() == "true");
    if credentials && any {
        note(
            skipped,
            i,
            "cors-allow-credentials",
            "with the origin `*`: imported as allow_credentials: false, which is what browsers made of it \
             (list the origins to allow credentials)",
        );
    }
    out.push_str(&format!(", allow_credentials: {}", credentials && !any));
    let age = i.ann("cors-max-age").and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(1_728_000).min(31_536_000);
    out.push_str(&format!(", max_age: {age}s"));
    let _ = writeln!(body, "    cors: {{{out}}}   # enable-cors");
}

/// `limit-rps` (or `limit-rpm`) with `limit-burst-multiplier` (default 5),
/// keyed by the client's address, per replica as ingress-nginx counts.
fn write_rate_limit(body: &mut String, i: &Ingress, skipped: &mut Vec<Skipped>) {
    let number = |k: &str| i.ann(k).and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
    let (rate, per, key) = match (number("limit-rps"), number("limit-rpm")) {
        (Some(r), rpm) => {
            if rpm.is_some() {
                note(skipped, i, "limit-rpm", "weir takes one rate per route: limit-rps is used");
            }
            (r, "1s", "limit-rps")
        }
        (None, Some(r)) => (r, "1m", "limit-rpm"),
        (None, None) => {
            for k in ["limit-rps", "limit-rpm"] {
                if let Some(v) = i.ann(k) {
                    note(skipped, i, k, format!("{v:?} is not a positive whole number"));
                }
            }
            return;
        }
    };
    let mult = number("limit-burst-multiplier").unwrap_or(5);
    let (rate, burst) = (rate.min(1_000_000), rate.saturating_mul(mult).min(1_000_000));
    let _ = writeln!(
        body,
        "    rate_limit: {{requests: {rate}, per: {per}, burst: {burst}}}   # {key}; 429 where ingress-nginx's default is 503",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capture_groups_are_empty() {
        assert_eq!(fit_groups("/$2", "/api(/|$)(.*)"), "/$2");
        assert_eq!(fit_groups("/$2", "/"), "/");
        assert_eq!(fit_groups("/x/$1$2", "/a/(.*)"), "/x/$1");
    }

    #[test]
    fn nginx_sizes() {
        assert_eq!(nginx_size("8m"), Some(8 * 1024 * 1024));
        assert_eq!(nginx_size("512K"), Some(512 * 1024));
        assert_eq!(nginx_size("100"), Some(100));
        assert_eq!(nginx_size("0"), Some(0));
        assert_eq!(nginx_size("1t"), None);
        assert_eq!(nginx_size(""), None);
    }

    #[test]
    fn redirect_urls() {
        assert_eq!(
            redirect_keys("https://www.google.com").as_deref(),
            Some("scheme: https, hostname: \"www.google.com\", path: \"/\"")
        );
        assert_eq!(
            redirect_keys("http://a.b:8080/x/y").as_deref(),
            Some("scheme: http, hostname: \"a.b\", port: 8080, path: \"/x/y\"")
        );
        assert_eq!(redirect_keys("https://a.b/$request_uri"), None);
        assert_eq!(redirect_keys("ftp://a.b/"), None);
    }
}
