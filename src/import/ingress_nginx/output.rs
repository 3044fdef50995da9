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

/// What the config says first: where it came from and what weir does
/// differently.
const HEADER: [&str; 10] = [
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

pub(super) fn write(routes: &[Planned<'_>], regex_hosts: &BTreeSet<String>, skipped: Vec<Skipped>) -> Imported {
    let mut out = Out {
        body: String::new(),
        names: BTreeSet::new(),
        app_roots: BTreeSet::new(),
        upstreams: BTreeSet::new(),
        mirrors: BTreeMap::new(),
        skipped,
        count: 0,
    };
    for p in routes {
        out.route(p, routes, regex_hosts.contains(&p.rule.host));
    }
    let yaml = config_text(&HEADER, &out.upstreams, &out.mirrors, &out.body);
    Imported { yaml, routes: out.count, skipped: out.skipped, files: Vec::new() }
}

/// The routes written so far and what they need besides.
struct Out {
    body: String,
    names: BTreeSet<String>,
    /// Hosts whose app-root redirect is written.
    app_roots: BTreeSet<String>,
    upstreams: BTreeSet<Backend>,
    mirrors: BTreeMap<String, String>,
    skipped: Vec<Skipped>,
    /// Routes written.
    count: usize,
}

impl Out {
    /// One planned path: its redirect to https and its host's app-root
    /// first, where they apply, then the route itself.
    fn route(&mut self, p: &Planned<'_>, routes: &[Planned<'_>], regex: bool) {
        let r = p.rule;
        let name = route_name(&self.names, p);
        if regex && crate::routing::PathRegex::new(&r.path, true).is_err() {
            self.skipped.push(Skipped {
                object: p.primary.id(),
                what: format!("host {:?} path {}", r.host, r.path),
                why:
                    "a regex path (use-regex or rewrite-target on this host) Rust's regex does not take (look-around, \
                      back-references): not imported"
                        .into(),
            });
            return;
        }
        self.names.insert(name.clone());
        self.count += 1;
        let _ = writeln!(
            self.body,
            "  # {} host {} path {} ({})",
            p.primary.id(),
            if r.host.is_empty() { "(any)".to_owned() } else { r.host.clone() },
            r.path,
            r.kind.as_str()
        );
        let m = match_keys(r, regex);
        if super::edge::redirects_to_https(p.primary, &r.host) {
            self.https_redirect(p.primary, &name, &m);
        }
        if let Some(root) = app_root(routes, &r.host).filter(|_| self.app_roots.insert(r.host.clone())) {
            self.app_root(&name, &m, root);
        }
        let _ = writeln!(self.body, "  - name: {}", q(&name));
        if !m.is_empty() {
            let _ = writeln!(self.body, "    match: {{{}}}", m.join(", "));
        }
        if let Some(keys) = super::edge::whole_redirect(p.primary, &mut self.skipped) {
            let _ = writeln!(self.body, "    redirect: {{{keys}}}");
            if let Some((c, _)) = p.canary {
                self.skipped.push(Skipped {
                    object: c.id(),
                    what: format!("canary for host {:?} path {}", r.host, r.path),
                    why: "its primary answers with a redirect: nothing reaches either Service".into(),
                });
            }
            return;
        }
        self.versions(p, regex);
    }

    /// Plain-HTTP requests get 308 to https first (ssl-redirect).
    fn https_redirect(&mut self, i: &Ingress, name: &str, m: &[String]) {
        let twin = fresh(&mut self.names, &format!("{name}-to-https"));
        self.count += 1;
        let mut tm = m.to_vec();
        tm.push("scheme: http".into());
        let why = if i.ann("force-ssl-redirect") == Some("true") { "force-ssl-redirect" } else { "ssl-redirect" };
        let _ = writeln!(self.body, "  - name: {}   # {why}", q(&twin));
        let _ = writeln!(self.body, "    match: {{{}}}", tm.join(", "));
        let _ = writeln!(self.body, "    redirect: {{scheme: https, status: 308}}");
    }

    /// The host's `/` redirected to its app-root.
    fn app_root(&mut self, name: &str, m: &[String], root: &str) {
        let twin = fresh(&mut self.names, &format!("{name}-app-root"));
        self.count += 1;
        let mut tm: Vec<String> = m.iter().filter(|x| x.starts_with("hosts")).cloned().collect();
        tm.push("path: \"/\", path_type: exact".into());
        let _ = writeln!(self.body, "  - name: {}   # app-root", q(&twin));
        let _ = writeln!(self.body, "    match: {{{}}}", tm.join(", "));
        let _ = writeln!(self.body, "    redirect: {{path: {}, status: 302, keep_query: false}}", q(root));
    }

    /// Where a route that does not redirect sends: the primary's Service
    /// (with its edge policies), the canary's, affinity and the mirror.
    fn versions(&mut self, p: &Planned<'_>, regex: bool) {
        let r = p.rule;
        self.upstreams.insert(r.backend.clone());
        let _ = writeln!(self.body, "    stable: {{upstream: {}}}", q(&r.backend.upstream()));
        super::edge::write_edge(&mut self.body, p.primary, (regex, &r.path), &mut self.skipped);
        if let Some((c, cr)) = p.canary {
            // The canary's Service is spoken to as the primary's location says.
            let cr = Rule { backend: Backend { wire: r.backend.wire.clone(), ..cr.backend.clone() }, ..cr.clone() };
            self.upstreams.insert(cr.backend.clone());
            write_canary(&mut self.body, c, &cr, &mut self.skipped);
        }
        write_affinity(&mut self.body, p, &mut self.skipped);
        write_mirror(&mut self.body, p.primary, &mut self.mirrors, &mut self.skipped);
    }
}

/// The route's name from its Ingress, host and path, unique among `names`
/// (not taken yet).
fn route_name(names: &BTreeSet<String>, p: &Planned<'_>) -> String {
    let r = p.rule;
    let base = slug(&[&p.primary.ns, &p.primary.name, if r.host.is_empty() { "any" } else { &r.host }, &r.path]);
    let mut name = if base.is_empty() { "route".to_owned() } else { base };
    let mut n = 2;
    while names.contains(&name) {
        name = format!("{}-{n}", name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-'));
        n += 1;
    }
    name
}

/// The route's `match` keys: its host and its path as nginx takes it.
fn match_keys(r: &Rule, regex: bool) -> Vec<String> {
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
    m
}

/// The host's app-root, from the first of its Ingresses that has one, if
/// it is a path weir can redirect to. It is the server's (`if ($uri = /)`).
fn app_root<'a>(routes: &[Planned<'a>], host: &str) -> Option<&'a str> {
    let root = routes.iter().filter(|o| o.rule.host == host).find_map(|o| o.primary.ann("app-root"));
    root.filter(|a| a.starts_with('/') && !a.contains(['?', '#']) && http::uri::PathAndQuery::try_from(*a).is_ok())
}

/// The canary's Service and weight, and its header and cookie segments in
/// ingress-nginx's order.
fn write_canary(body: &mut String, c: &Ingress, cr: &Rule, skipped: &mut Vec<Skipped>) {
    let _ = writeln!(body, "    # canary from {}", c.id());
    let _ = writeln!(body, "    canary: {{upstream: {}}}", q(&cr.backend.upstream()));
    write_weight(body, c, skipped);
    let mut segments = header_segments(c, skipped);
    segments.extend(cookie_segments(c, skipped));
    if !segments.is_empty() {
        let _ = writeln!(body, "    # checked in order, as ingress-nginx does: header, then cookie, then the weight");
        let _ = writeln!(body, "    segments:");
        for s in segments {
            let _ = writeln!(body, "      - {s}");
        }
    }
}

/// `canary-weight` of `canary-weight-total` as the route's weight.
fn write_weight(body: &mut String, c: &Ingress, skipped: &mut Vec<Skipped>) {
    let total = whole_number(c, "canary-weight-total", 100, skipped).max(1);
    let weight = whole_number(c, "canary-weight", 0, skipped);
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
}

/// The annotation `key` as a whole number, or `default` when it is absent
/// or not one (listed).
fn whole_number(c: &Ingress, key: &str, default: u64, skipped: &mut Vec<Skipped>) -> u64 {
    match c.ann(key) {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            skipped.push(Skipped {
                object: c.id(),
                what: format!("{ANN}{key}"),
                why: format!("{v:?} is not a whole number; used {default}"),
            });
            default
        }),
    }
}

/// List the canary annotation `key` with value `v` as not translated.
fn bad(c: &Ingress, key: &str, v: &str, why: &str, skipped: &mut Vec<Skipped>) {
    skipped.push(Skipped { object: c.id(), what: format!("{ANN}{key}"), why: format!("{v:?}: {why}") });
}

/// `canary-by-header-pattern` as the import can carry it.
enum Pattern<'a> {
    /// None, or one PCRE takes but Rust's regex does not (listed).
    Absent,
    Usable(&'a str),
    /// It does not compile: ingress-nginx's Lua gets an error from
    /// ngx.re.match for every request with the header and sends it to the
    /// mainline, the cookie and weight unread (balancer.lua; e2e canary.go
    /// "should routes to mainline upstream when the given Regex causes
    /// error").
    Broken,
}

/// `canary-by-header` if it is a header name (listed if not).
fn header_name<'a>(c: &'a Ingress, skipped: &mut Vec<Skipped>) -> Option<&'a str> {
    match c.ann("canary-by-header").filter(|h| !h.is_empty()) {
        Some(h) if !token(h) => {
            bad(c, "canary-by-header", h, "not a header name", skipped);
            None
        }
        other => other,
    }
}

/// `canary-by-header-pattern`, and whether Rust's regex takes it. A pattern
/// PCRE takes but Rust's regex does not (look-around, back-references)
/// cannot be carried and is listed.
fn header_pattern<'a>(c: &'a Ingress, skipped: &mut Vec<Skipped>) -> Pattern<'a> {
    match c.ann("canary-by-header-pattern").filter(|v| !v.is_empty()) {
        Some(pat) if pat.len() > 1024 || regex::Regex::new(pat).is_err() => {
            if pcre_only(pat) {
                bad(
                    c,
                    "canary-by-header-pattern",
                    pat,
                    "uses PCRE features Rust's regex does not have (look-around, back-references): not translated",
                    skipped,
                );
                Pattern::Absent
            } else {
                bad(
                    c,
                    "canary-by-header-pattern",
                    pat,
                    "does not compile: ingress-nginx sends every request with the header to the mainline, and so \
                     does this import",
                    skipped,
                );
                Pattern::Broken
            }
        }
        Some(pat) => Pattern::Usable(pat),
        None => Pattern::Absent,
    }
}

/// The segments `canary-by-header` decides: by its value, else its
/// pattern, else `always` and `never`.
fn header_segments(c: &Ingress, skipped: &mut Vec<Skipped>) -> Vec<String> {
    let header = header_name(c, skipped);
    let pattern = header_pattern(c, skipped);
    let Some(h) = header else {
        if c.ann("canary-by-header-value").is_some() || c.ann("canary-by-header-pattern").is_some() {
            skipped.push(Skipped {
                object: c.id(),
                what: format!("{ANN}canary-by-header-value/pattern"),
                why: "ignored: no canary-by-header names the header (ingress-nginx ignores them then too)".into(),
            });
        }
        return Vec::new();
    };
    match (c.ann("canary-by-header-value").filter(|v| !v.is_empty()), pattern) {
        (Some(v), pattern) => {
            if let Pattern::Usable(_) = pattern {
                skipped.push(Skipped {
                    object: c.id(),
                    what: format!("{ANN}canary-by-header-pattern"),
                    why: "ignored: canary-by-header-value is set (ingress-nginx ignores the pattern then too)".into(),
                });
            }
            vec![format!("{{name: by-header-value, match: {{header: {{{}: {}}}}}, weight: 100}}", q(h), q(v))]
        }
        (None, Pattern::Usable(pattern)) => vec![format!(
            "{{name: by-header-pattern, match: {{header_regex: {{{}: {}}}}}, weight: 100}}",
            q(h),
            q(pattern)
        )],
        (None, Pattern::Broken) => {
            vec![format!("{{name: by-header-pattern-error, match: {{header_regex: {{{}: \"\"}}}}, weight: 0}}", q(h))]
        }
        (None, Pattern::Absent) => vec![
            format!("{{name: by-header-always, match: {{header: {{{}: always}}}}, weight: 100}}", q(h)),
            format!("{{name: by-header-never, match: {{header: {{{}: never}}}}, weight: 0}}", q(h)),
        ],
    }
}

/// The segments `canary-by-cookie` decides: `always` and `never` (listed
/// if it is not a cookie name).
fn cookie_segments(c: &Ingress, skipped: &mut Vec<Skipped>) -> Vec<String> {
    if let Some(ck) = c.ann("canary-by-cookie").filter(|v| !v.is_empty() && !token(v)) {
        bad(c, "canary-by-cookie", ck, "not a cookie name", skipped);
    }
    let Some(ck) = c.ann("canary-by-cookie").filter(|v| token(v)) else { return Vec::new() };
    vec![
        format!("{{name: by-cookie-always, match: {{cookie: {{{}: always}}}}, weight: 100}}", q(ck)),
        format!("{{name: by-cookie-never, match: {{cookie: {{{}: never}}}}, weight: 0}}", q(ck)),
    ]
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
