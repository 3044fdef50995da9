//! Writing the imported routes as a weir config: names, upstreams, the
//! canary's segments in ingress-nginx's order, affinity and mirrors, each
//! with a comment saying where it came from.

use super::{ANN, Ingress, PathType, Planned, Rule};
use crate::import::{Backend, Imported, Skipped, config_text, fresh, q, slug, token, valid_host};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A pattern Rust's regex refuses for using what only PCRE has.
fn pcre_only(p: &str) -> bool {
    ["(?=", "(?!", "(?<=", "(?<!", "(?>", "\\1", "\\2", "\\3", "\\k<", "(?P=", "*+", "++", "?+"]
        .iter()
        .any(|f| p.contains(f))
}

/// The canary weight in percent with weir's two decimals; and whether that
/// is exact.
pub(super) fn percent(weight: u64, total: u64) -> (f64, bool) {
    let bp = (weight.min(total) as f64 * 10_000.0 / total as f64).round();
    let exact = (weight.min(total) * 10_000).is_multiple_of(total);
    (bp / 100.0, exact)
}

pub(super) fn write(routes: &[Planned<'_>], regex_hosts: &BTreeSet<String>, mut skipped: Vec<Skipped>) -> Imported {
    let mut upstreams: BTreeSet<Backend> = BTreeSet::new();
    let mut mirrors: BTreeMap<String, String> = BTreeMap::new();
    let mut body = String::new();
    let mut names = BTreeSet::new();
    let mut app_roots = BTreeSet::new();
    let mut count = 0;
    for p in routes {
        let r = p.rule;
        let base = slug(&[&p.primary.ns, &p.primary.name, if r.host.is_empty() { "any" } else { &r.host }, &r.path]);
        let mut name = if base.is_empty() { "route".to_owned() } else { base };
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{}-{n}", name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-'));
            n += 1;
        }
        let regex = regex_hosts.contains(&r.host);
        if regex && crate::routing::PathRegex::new(&r.path, true).is_err() {
            skipped.push(Skipped {
                object: p.primary.id(),
                what: format!("host {:?} path {}", r.host, r.path),
                why:
                    "a regex path (use-regex or rewrite-target on this host) Rust's regex does not take (look-around, \
                      back-references): not imported"
                        .into(),
            });
            continue;
        }
        names.insert(name.clone());
        count += 1;
        let _ = writeln!(
            body,
            "  # {} host {} path {} ({})",
            p.primary.id(),
            if r.host.is_empty() { "(any)".to_owned() } else { r.host.clone() },
            r.path,
            r.kind.as_str()
        );
        let mut m = Vec::new();
        if !r.host.is_empty() {
            m.push(format!("hosts: [{}]", q(&r.host)));
        }
        match r.kind {
            _ if regex => m.push(format!("path: {}, path_type: regex, ignore_case: true", q(&r.path))),
            PathType::Exact => m.push(format!("path: {}, path_type: exact", q(&r.path))),
            // ingress-nginx writes a Prefix path as `location <path>/` plus
            // `location = <path>` (location.go): one ending in `/` takes
            // that string prefix only, so `/foo/bar/` does not take
            // `/foo/bar` (its docs' "Path Priority" sends that to a
            // `/foo/bar` path), whatever the Kubernetes API says.
            PathType::Prefix if r.path == "/" => {}
            PathType::Prefix if r.path.ends_with('/') => m.push(format!("path_prefix: {}", q(&r.path))),
            PathType::Prefix => m.push(format!("path: {}, path_type: prefix", q(&r.path))),
        }
        let i = p.primary;
        if super::edge::redirects_to_https(i, &r.host) {
            // Plain-HTTP requests get 308 to https first (ssl-redirect).
            let twin = fresh(&mut names, &format!("{name}-to-https"));
            count += 1;
            let mut tm = m.clone();
            tm.push("scheme: http".into());
            let why = if i.ann("force-ssl-redirect") == Some("true") { "force-ssl-redirect" } else { "ssl-redirect" };
            let _ = writeln!(body, "  - name: {}   # {why}", q(&twin));
            let _ = writeln!(body, "    match: {{{}}}", tm.join(", "));
            let _ = writeln!(body, "    redirect: {{scheme: https, status: 308}}");
        }
        // app-root is the server's (`if ($uri = /)`): once per host, first.
        let root = routes.iter().filter(|o| o.rule.host == r.host).find_map(|o| o.primary.ann("app-root"));
        let root = root
            .filter(|a| a.starts_with('/') && !a.contains(['?', '#']) && http::uri::PathAndQuery::try_from(*a).is_ok());
        if let Some(root) = root.filter(|_| app_roots.insert(r.host.clone())) {
            let twin = fresh(&mut names, &format!("{name}-app-root"));
            count += 1;
            let mut tm: Vec<String> = m.iter().filter(|x| x.starts_with("hosts")).cloned().collect();
            tm.push("path: \"/\", path_type: exact".into());
            let _ = writeln!(body, "  - name: {}   # app-root", q(&twin));
            let _ = writeln!(body, "    match: {{{}}}", tm.join(", "));
            let _ = writeln!(body, "    redirect: {{path: {}, status: 302, keep_query: false}}", q(root));
        }
        let _ = writeln!(body, "  - name: {}", q(&name));
        if !m.is_empty() {
            let _ = writeln!(body, "    match: {{{}}}", m.join(", "));
        }
        if let Some(keys) = super::edge::whole_redirect(i, &mut skipped) {
            let _ = writeln!(body, "    redirect: {{{keys}}}");
            if let Some((c, _)) = p.canary {
                skipped.push(Skipped {
                    object: c.id(),
                    what: format!("canary for host {:?} path {}", r.host, r.path),
                    why: "its primary answers with a redirect: nothing reaches either Service".into(),
                });
            }
            continue;
        }
        upstreams.insert(r.backend.clone());
        let _ = writeln!(body, "    stable: {{upstream: {}}}", q(&r.backend.upstream()));
        super::edge::write_edge(&mut body, i, (regex, &r.path), &mut skipped);
        if let Some((c, cr)) = p.canary {
            // The canary's Service is spoken to as the primary's location says.
            let cr = Rule { backend: Backend { wire: r.backend.wire.clone(), ..cr.backend.clone() }, ..cr.clone() };
            upstreams.insert(cr.backend.clone());
            write_canary(&mut body, c, &cr, &mut skipped);
        }
        write_affinity(&mut body, p, &mut skipped);
        write_mirror(&mut body, p.primary, &mut mirrors, &mut skipped);
    }
    let header = [
        "Imported from ingress-nginx Ingresses by `weir import ingress-nginx`.",
        "Check it with `weir check -c FILE`; set listen and admin for your deployment.",
        "",
        "What weir does differently from ingress-nginx:",
        "- a request for a named host that matches none of its paths falls through to the rules",
        "  without a host (ingress-nginx answers 404 from its default backend there);",
        "- canary-by-header-pattern is a Rust `regex` (linear time, no look-around or",
        "  back-references) searched in the value like ngx.re.match, not PCRE;",
        "- weights have two decimals (a canary-weight-total that does not divide evenly is rounded);",
        "- weir judges the canary and can roll it back by itself once `analysis` is added to a route.",
    ];
    let out = config_text(&header, &upstreams, &mirrors, &body);
    Imported { yaml: out, routes: count, skipped, files: Vec::new() }
}

fn write_canary(body: &mut String, c: &Ingress, cr: &Rule, skipped: &mut Vec<Skipped>) {
    let _ = writeln!(body, "    # canary from {}", c.id());
    let _ = writeln!(body, "    canary: {{upstream: {}}}", q(&cr.backend.upstream()));
    let number = |key: &str, default: u64, skipped: &mut Vec<Skipped>| match c.ann(key) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            skipped.push(Skipped {
                object: c.id(),
                what: format!("{ANN}{key}"),
                why: format!("{v:?} is not a whole number; used {default}"),
            });
            default
        }),
    };
    let total = number("canary-weight-total", 100, skipped).max(1);
    let weight = number("canary-weight", 0, skipped);
    let (pct, exact) = percent(weight, total);
    let _ = writeln!(
        body,
        "    weight: {pct}{}",
        if exact {
            format!("   # canary-weight {weight} of {total}")
        } else {
            format!("   # canary-weight {weight} of {total}, rounded")
        }
    );
    let mut segments = Vec::new();
    let bad = |key: &str, v: &str, why: &str, skipped: &mut Vec<Skipped>| {
        skipped.push(Skipped { object: c.id(), what: format!("{ANN}{key}"), why: format!("{v:?}: {why}") });
    };
    let header = c.ann("canary-by-header").filter(|h| !h.is_empty());
    let header = match header {
        Some(h) if !token(h) => {
            bad("canary-by-header", h, "not a header name", skipped);
            None
        }
        other => other,
    };
    // A pattern that does not compile: ingress-nginx's Lua gets an error
    // from ngx.re.match for every request with the header and sends it to
    // the mainline, the cookie and weight unread (balancer.lua; e2e
    // canary.go "should routes to mainline upstream when the given Regex
    // causes error"). A pattern PCRE takes but Rust's regex does not
    // (look-around, back-references) cannot be carried and is listed.
    let mut pattern_error = false;
    let pattern = match c.ann("canary-by-header-pattern").filter(|v| !v.is_empty()) {
        Some(pat) if pat.len() > 1024 || regex::Regex::new(pat).is_err() => {
            if pcre_only(pat) {
                bad(
                    "canary-by-header-pattern",
                    pat,
                    "uses PCRE features Rust's regex does not have (look-around, back-references): not translated",
                    skipped,
                );
            } else {
                pattern_error = true;
                bad(
                    "canary-by-header-pattern",
                    pat,
                    "does not compile: ingress-nginx sends every request with the header to the mainline, and so \
                     does this import",
                    skipped,
                );
            }
            None
        }
        other => other,
    };
    if let Some(h) = header {
        match (c.ann("canary-by-header-value").filter(|v| !v.is_empty()), pattern) {
            (Some(v), pattern) => {
                segments.push(format!(
                    "{{name: by-header-value, match: {{header: {{{}: {}}}}}, weight: 100}}",
                    q(h),
                    q(v)
                ));
                if pattern.is_some() {
                    skipped.push(Skipped {
                        object: c.id(),
                        what: format!("{ANN}canary-by-header-pattern"),
                        why: "ignored: canary-by-header-value is set (ingress-nginx ignores the pattern then too)"
                            .into(),
                    });
                }
            }
            (None, Some(pattern)) => {
                segments.push(format!(
                    "{{name: by-header-pattern, match: {{header_regex: {{{}: {}}}}}, weight: 100}}",
                    q(h),
                    q(pattern)
                ));
            }
            (None, None) if pattern_error => {
                segments.push(format!(
                    "{{name: by-header-pattern-error, match: {{header_regex: {{{}: \"\"}}}}, weight: 0}}",
                    q(h)
                ));
            }
            (None, None) => {
                segments
                    .push(format!("{{name: by-header-always, match: {{header: {{{}: always}}}}, weight: 100}}", q(h)));
                segments.push(format!("{{name: by-header-never, match: {{header: {{{}: never}}}}, weight: 0}}", q(h)));
            }
        }
    } else if c.ann("canary-by-header-value").is_some() || c.ann("canary-by-header-pattern").is_some() {
        skipped.push(Skipped {
            object: c.id(),
            what: format!("{ANN}canary-by-header-value/pattern"),
            why: "ignored: no canary-by-header names the header (ingress-nginx ignores them then too)".into(),
        });
    }
    if let Some(ck) = c.ann("canary-by-cookie").filter(|v| !v.is_empty() && !token(v)) {
        bad("canary-by-cookie", ck, "not a cookie name", skipped);
    }
    if let Some(ck) = c.ann("canary-by-cookie").filter(|v| token(v)) {
        segments.push(format!("{{name: by-cookie-always, match: {{cookie: {{{}: always}}}}, weight: 100}}", q(ck)));
        segments.push(format!("{{name: by-cookie-never, match: {{cookie: {{{}: never}}}}, weight: 0}}", q(ck)));
    }
    if !segments.is_empty() {
        let _ = writeln!(body, "    # checked in order, as ingress-nginx does: header, then cookie, then the weight");
        let _ = writeln!(body, "    segments:");
        for s in segments {
            let _ = writeln!(body, "      - {s}");
        }
    }
}

/// Session affinity on the primary: weir keeps a user on one version by a
/// sticky key instead (`affinity-canary-behavior: sticky`, the default).
fn write_affinity(body: &mut String, p: &Planned<'_>, skipped: &mut Vec<Skipped>) {
    if p.primary.ann("affinity") != Some("cookie") {
        return;
    }
    if p.canary.is_none() {
        skipped.push(Skipped {
            object: p.primary.id(),
            what: format!("{ANN}affinity (host {:?} path {})", p.rule.host, p.rule.path),
            why:
                "pins users to one pod, which weir does not do (it keeps users on one version where there is a canary)"
                    .into(),
        });
        return;
    }
    let legacy = p.canary.is_some_and(|(c, _)| c.ann("affinity-canary-behavior") == Some("legacy"));
    if legacy {
        let _ = writeln!(body, "    # affinity-canary-behavior: legacy — the version is drawn per request, as there");
        return;
    }
    let cookie = p.primary.ann("session-cookie-name").unwrap_or("INGRESSCOOKIE");
    let _ = writeln!(body, "    # affinity: cookie — weir keeps each user on one version by this cookie's value;");
    let _ = writeln!(body, "    # ingress-nginx sets the cookie itself, weir reads the one the application sets");
    let _ = writeln!(body, "    sticky: {{keys: [{}]}}", q(&format!("cookie:{cookie}")));
}

/// `mirror-target` on the primary: every request copied to the shadow.
fn write_mirror(body: &mut String, i: &Ingress, mirrors: &mut BTreeMap<String, String>, skipped: &mut Vec<Skipped>) {
    let Some(target) = i.ann("mirror-target") else { return };
    let rest =
        target.strip_prefix("http://").map(|r| (r, 80)).or_else(|| target.strip_prefix("https://").map(|r| (r, 443)));
    let Some((rest, default_port)) = rest else {
        skipped.push(Skipped {
            object: i.id(),
            what: format!("{ANN}mirror-target"),
            why: format!("{target:?} is not an http(s) URL"),
        });
        return;
    };
    let (authority, path) = rest.split_at(rest.find(['/', '$']).unwrap_or(rest.len()));
    if !(path.is_empty() || path == "/$request_uri" || path == "$request_uri") {
        skipped.push(Skipped {
            object: i.id(),
            what: format!("{ANN}mirror-target"),
            why: format!("path {path:?}: weir mirrors to the request's own path"),
        });
    }
    if target.starts_with("https://") {
        skipped.push(Skipped {
            object: i.id(),
            what: format!("{ANN}mirror-target"),
            why: "https: weir's shadow speaks plain HTTP/1.1 to the mirror".into(),
        });
    }
    let (host, port) = crate::headers::split_port(authority);
    let port = match port.map(str::parse::<u16>) {
        None => Some(default_port),
        Some(Ok(p)) if p > 0 => Some(p),
        Some(_) => None,
    };
    let (Some(port), true) = (port, valid_host(&host.to_ascii_lowercase()) && !host.starts_with('*')) else {
        skipped.push(Skipped {
            object: i.id(),
            what: format!("{ANN}mirror-target"),
            why: format!("{target:?}: no valid host and port"),
        });
        return;
    };
    let endpoint = format!("{}:{port}", host.to_ascii_lowercase());
    let name = slug(&["mirror", authority]);
    mirrors.insert(name.clone(), endpoint);
    let _ = writeln!(body, "    # mirror-target {target}");
    let mut shadow = format!("upstream: {}, percent: 100", q(&name));
    if i.ann("mirror-request-body") == Some("off") {
        shadow.push_str(", methods: [GET, HEAD, OPTIONS]");
        let _ = writeln!(body, "    # mirror-request-body: off — weir mirrors only requests without a body instead");
    }
    let _ = writeln!(body, "    shadow: {{{shadow}}}");
    if i.ann("mirror-host").is_some() {
        skipped.push(Skipped {
            object: i.id(),
            what: format!("{ANN}mirror-host"),
            why: "weir sends the mirror the request's own Host".into(),
        });
    }
}
