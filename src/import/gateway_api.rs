//! Gateway API HTTPRoutes and GRPCRoutes → weir routes.
//!
//! A GRPCRoute is read as the HTTPRoute it amounts to (GEP-1016): a method
//! match with service and method is the exact path `/service/method`, one
//! with the service alone the prefix `/service`; its backends speak HTTP/2
//! (`h2c`, or `h2` with a BackendTLSPolicy; see `wire`).
//!
//! An HTTPRoute rule sends requests that fit one of its `matches` to its
//! `backendRefs` by weight. weir's route splits one path between two
//! versions, with segments for requests that carry given headers or query
//! parameters. So per (hostnames, path) the rule without header or query
//! matches becomes the route (first backend stable, second canary, the
//! weight the second's share) and each rule with header or query matches
//! for the same path becomes a segment, ordered as the Gateway API orders
//! them (more header matches first, then more query matches, then rule
//! order) and weighted by the share of the canary among its backends.
//! `RequestMirror` becomes a `shadow`; the other filters and `timeouts`
//! become the route's policies, a backendRef's header modifiers its
//! version's (`filters`); a method match is the route's `match.methods`.
//! Paths: `Exact` and `PathPrefix`
//! (whole segments); header `RegularExpression` is matched whole
//! (`^(?:…)$`). What does not fit this shape is listed, not dropped.

use super::{Backend, Imported, Skipped, config_text, dns_label, fresh, q, token, valid_host};
use serde_json::Value;

mod filters;
mod wire;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use wire::{Cluster, Found};

/// One `matches[]` entry of a rule, with the rule's backends.
#[derive(Debug, Clone)]
struct Match {
    headers: Vec<(String, String, bool)>,
    query: Vec<(String, String)>,
    /// Backends with weight > 0, in rule order.
    backends: Vec<(Backend, u64)>,
    mirror: Option<(Backend, f64)>,
    rule: usize,
    /// The rule's filters and timeouts as route keys, or its redirect.
    edge: filters::RuleEdge,
    /// Each backend's own filters (index-aligned with `backends`).
    mods: Vec<Option<String>>,
}

struct Group {
    route_id: String,
    ns: String,
    name: String,
    hosts: Vec<String>,
    exact: bool,
    path: String,
    /// `matches[].method` (an HTTPRoute's).
    method: Option<String>,
    /// `http` or `https`: the listener the route is attached to, or a
    /// redirect to https that must only take plain requests.
    scheme: Option<&'static str>,
    base: Option<Match>,
    conditional: Vec<Match>,
}

/// Import every HTTPRoute and GRPCRoute in `objects` (with the Services
/// and BackendTLSPolicies there, for how to speak to each backend).
pub fn import(objects: &[Value]) -> Imported {
    let mut skipped = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let cluster = Cluster::of(objects);
    let mut found = Found::default();
    // The same route twice in one input: the last, as `kubectl apply` leaves it.
    let mut routes: Vec<&Value> =
        super::latest(objects).into_iter().filter(|o| o["kind"] == "HTTPRoute" || o["kind"] == "GRPCRoute").collect();
    // Oldest first, then by namespace/name: the Gateway API's tie-break.
    routes.sort_by_key(|o| {
        (
            o["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_owned(),
            o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
            o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    });
    for o in routes {
        read_route(o, &mut groups, &mut skipped, (&cluster, &mut found));
    }
    skipped.append(&mut found.notes);
    let mut imported = write(groups, skipped);
    imported.files = found.files;
    imported
}

fn read_route(
    o: &Value,
    groups: &mut Vec<Group>,
    skipped: &mut Vec<Skipped>,
    (cluster, found): (&Cluster<'_>, &mut Found),
) {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let kind = o["kind"].as_str().unwrap_or("HTTPRoute");
    let grpc = kind == "GRPCRoute";
    let id = format!("{kind} {ns}/{name}");
    let skip =
        |skipped: &mut Vec<Skipped>, what: String, why: String| skipped.push(Skipped { object: id.clone(), what, why });
    let mut hosts = Vec::new();
    for (i, h) in o["spec"]["hostnames"].as_array().into_iter().flatten().enumerate() {
        match h.as_str().map(str::to_ascii_lowercase) {
            Some(h) if valid_host(&h) => hosts.push(h),
            _ => skip(skipped, format!("spec.hostnames[{i}]"), format!("{h} is not a host name or *.suffix")),
        }
    }
    if o["spec"]["hostnames"].as_array().is_some_and(|a| !a.is_empty()) && hosts.is_empty() {
        return;
    }
    let listener = filters::listener_scheme(o, &cluster.gateways);
    for (ri, rule) in o["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let all_prefix = rule["matches"]
            .as_array()
            .is_none_or(|ms| ms.iter().all(|m| m["path"]["type"].as_str().unwrap_or("PathPrefix") == "PathPrefix"));
        let edge = match filters::rule_edge(rule, all_prefix && !grpc) {
            Ok(e) => e,
            Err(why) => {
                skip(skipped, format!("{at}.filters"), format!("{why}; rule not imported"));
                continue;
            }
        };
        let (mut backends, mods) = match backends(&rule["backendRefs"], &ns, &format!("{at}.backendRefs"), &id, skipped)
        {
            Ok(b) => b,
            Err(why) => {
                skip(skipped, format!("{at}.backendRefs"), format!("{why}; rule not imported"));
                continue;
            }
        };
        if let Err(why) = resolve_wires(backends.iter_mut().map(|(b, _)| b), kind, (cluster, &mut *found)) {
            skip(skipped, at.clone(), format!("{why}; rule not imported"));
            continue;
        }
        if edge.redirect.is_some() {
            // The redirect answers; backends, if any, are never reached.
            backends.clear();
        } else if backends.is_empty() {
            skip(
                skipped,
                at.clone(),
                "no Service backend with a weight above 0 (the Gateway answers 500 there)".into(),
            );
            continue;
        }
        let mirror = rule_mirror(rule, (&ns, kind, &at, &id), skipped, (cluster, &mut *found));
        let matches = rule["matches"].as_array().cloned().unwrap_or_default();
        let matches = if matches.is_empty() { vec![serde_json::json!({})] } else { matches };
        for (mi, m) in matches.iter().enumerate() {
            let mat = format!("{at}.matches[{mi}]");
            let method_path = if grpc {
                match grpc_method_path(&m["method"]) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        skip(skipped, format!("{mat}.method"), why);
                        continue;
                    }
                }
            } else {
                None
            };
            let (exact, path) = if let Some(p) = method_path {
                p
            } else {
                match (m["path"]["type"].as_str().unwrap_or("PathPrefix"), m["path"]["value"].as_str().unwrap_or("/")) {
                    (_, v) if !v.starts_with('/') || v.bytes().any(|b| b.is_ascii_control() || b == b' ') => {
                        skip(skipped, format!("{mat}.path"), format!("{v:?} is not a path"));
                        continue;
                    }
                    ("Exact", v) => (true, v.to_owned()),
                    ("PathPrefix", v) => (false, v.to_owned()),
                    (t, _) => {
                        skip(skipped, format!("{mat}.path"), format!("path type {t} is not translated"));
                        continue;
                    }
                }
            };
            let method = if grpc { None } else { m["method"].as_str().map(str::to_ascii_uppercase) };
            if method.as_deref().is_some_and(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
                skip(skipped, format!("{mat}.method"), "not a method".into());
                continue;
            }
            let scheme = if edge.plain_only { Some("http") } else { listener };
            let Some((headers, query)) = header_and_query_matches(m, &mat, &id, skipped) else { continue };
            let found = Match {
                headers,
                query,
                backends: backends.clone(),
                mirror: mirror.clone(),
                rule: ri,
                edge: edge.clone(),
                mods: mods.clone(),
            };
            let same = |g: &Group| {
                g.hosts == hosts && g.exact == exact && g.path == path && g.method == method && g.scheme == scheme
            };
            let g = match groups.iter_mut().position(|g| same(g)) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group {
                        route_id: id.clone(),
                        ns: ns.clone(),
                        name: name.clone(),
                        hosts: hosts.clone(),
                        exact,
                        path,
                        method,
                        scheme,
                        base: None,
                        conditional: Vec::new(),
                    });
                    let last = groups.len() - 1;
                    &mut groups[last]
                }
            };
            if found.headers.is_empty() && found.query.is_empty() {
                if g.base.is_none() {
                    g.base = Some(found);
                } // a later plain match for the same path never wins
            } else {
                g.conditional.push(found);
            }
        }
    }
}

/// A match's header and query conditions, as the Gateway API reads them
/// (a repeated name: its first entry). None: one weir cannot match (listed).
#[allow(clippy::type_complexity)]
fn header_and_query_matches(
    m: &Value,
    mat: &str,
    id: &str,
    skipped: &mut Vec<Skipped>,
) -> Option<(Vec<(String, String, bool)>, Vec<(String, String)>)> {
    let skip = |skipped: &mut Vec<Skipped>, what: String, why: String| {
        skipped.push(Skipped { object: id.to_owned(), what, why })
    };
    let mut headers = Vec::new();
    let mut ok = true;
    for (hi, h) in m["headers"].as_array().into_iter().flatten().enumerate() {
        let (Some(n), Some(v)) = (h["name"].as_str(), h["value"].as_str()) else {
            ok = false;
            break;
        };
        let regex = h["type"].as_str() == Some("RegularExpression");
        let valid = token(n)
            && (!regex || (v.len() <= 1000 && regex::Regex::new(&format!("^(?:{v})$")).is_ok()))
            && (regex || http::HeaderValue::from_str(v).is_ok());
        if !valid {
            skip(skipped, format!("{mat}.headers[{hi}]"), format!("{n:?}: {v:?} cannot be matched by weir"));
            ok = false;
            break;
        }
        let name = n.to_ascii_lowercase();
        if headers.iter().any(|(seen, _, _)| *seen == name) {
            // The Gateway API considers only the first entry of a
            // header name (case-insensitive) and ignores the rest.
            skip(
                skipped,
                format!("{mat}.headers[{hi}]"),
                format!("{n:?} repeats a header name: only the first is matched"),
            );
            continue;
        }
        headers.push((name, v.to_owned(), regex));
    }
    let mut query = Vec::new();
    for (qi, qp) in m["queryParams"].as_array().into_iter().flatten().enumerate() {
        match (qp["name"].as_str(), qp["value"].as_str(), qp["type"].as_str().unwrap_or("Exact")) {
            // As for headers, only the first entry of a name counts.
            (Some(n), Some(_), "Exact") if query.iter().any(|(seen, _)| seen == n) => skip(
                skipped,
                format!("{mat}.queryParams[{qi}]"),
                format!("{n:?} repeats a query parameter name: only the first is matched"),
            ),
            (Some(n), Some(v), "Exact") if !n.is_empty() => query.push((n.to_owned(), v.to_owned())),
            _ => {
                skip(skipped, format!("{mat}.queryParams[{qi}]"), "only Exact query matches are translated".into());
                ok = false;
            }
        }
    }
    ok.then_some((headers, query))
}

/// The rule's `RequestMirror` as a shadow backend and percent (one per
/// route; a second, or one weir cannot reach, is listed).
fn rule_mirror(
    rule: &Value,
    (ns, kind, at, id): (&str, &str, &str, &str),
    skipped: &mut Vec<Skipped>,
    (cluster, found): (&Cluster<'_>, &mut Found),
) -> Option<(Backend, f64)> {
    let skip = |skipped: &mut Vec<Skipped>, what: String, why: String| {
        skipped.push(Skipped { object: id.to_owned(), what, why })
    };
    let mut mirror = None;
    // The other filters are read by `filters::rule_edge`.
    for (fi, f) in rule["filters"].as_array().into_iter().flatten().enumerate() {
        let fat = format!("{at}.filters[{fi}]");
        if f["type"].as_str() == Some("RequestMirror") {
            let m = &f["requestMirror"];
            let b = backends_of(&m["backendRef"], ns);
            let pct = match (m["percent"].as_f64(), m["fraction"]["numerator"].as_f64()) {
                (Some(p), _) => p,
                (None, Some(n)) => n * 100.0 / m["fraction"]["denominator"].as_f64().unwrap_or(100.0).max(1.0),
                (None, None) => 100.0,
            };
            let b = b.and_then(|mut b| match cluster.wire(&b, kind, found) {
                Ok(w) => {
                    b.wire = w;
                    Some(b)
                }
                Err(why) => {
                    skip(skipped, fat.clone(), format!("mirror: {why}"));
                    None
                }
            });
            match b {
                Some(b) if mirror.is_none() => mirror = Some((b, (pct.clamp(0.0, 100.0) * 100.0).round() / 100.0)),
                Some(_) => skip(skipped, fat, "a second mirror: weir mirrors to one shadow per route".into()),
                None => skip(skipped, fat, "mirror backendRef is not a Service with a port".into()),
            }
        }
    }
    mirror
}

/// A GRPCRoute method match as a path (GEP-1016): service and method →
/// exactly `/service/method`; the service alone → the prefix `/service`;
/// no method match → every path.
fn grpc_method_path(m: &Value) -> Result<(bool, String), String> {
    if m.is_null() {
        return Ok((false, "/".into()));
    }
    if m["type"].as_str().is_some_and(|t| t != "Exact") {
        return Err(format!(
            "method match type {} is not translated (weir matches paths exactly or by prefix)",
            m["type"]
        ));
    }
    // Names as protobuf writes them; anything else could not be in a path.
    let name = |s: &str, dots: bool| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || (dots && b == b'.'))
    };
    match (m["service"].as_str(), m["method"].as_str()) {
        (Some(s), Some(me)) if name(s, true) && name(me, false) => Ok((true, format!("/{s}/{me}"))),
        (Some(s), None) if name(s, true) => Ok((false, format!("/{s}"))),
        (None, Some(_)) => Err("a method without its service matches every service's method: not translated".into()),
        (None, None) => Ok((false, "/".into())),
        _ => Err(format!("{m} is not a service and method name")),
    }
}

/// Each backend's wire (protocol, TLS); the first that weir cannot reach
/// as the Gateway would fails the rule.
fn resolve_wires<'b>(
    backends: impl Iterator<Item = &'b mut Backend>,
    kind: &str,
    (cluster, found): (&Cluster<'_>, &mut Found),
) -> Result<(), String> {
    for b in backends {
        b.wire = cluster.wire(b, kind, found)?;
    }
    Ok(())
}

fn backends_of(b: &Value, ns: &str) -> Option<Backend> {
    if b["kind"].as_str().is_some_and(|k| k != "Service") || b["group"].as_str().is_some_and(|g| !g.is_empty()) {
        return None;
    }
    let service = b["name"].as_str().filter(|s| dns_label(s))?;
    let ns = b["namespace"].as_str().unwrap_or(ns);
    let port = u16::try_from(b["port"].as_u64()?).ok().filter(|p| *p > 0)?;
    dns_label(ns).then(|| Backend {
        ns: ns.to_owned(),
        service: service.to_owned(),
        port,
        wire: super::Wire::default(),
    })
}

/// The rule's Service backends with a weight, and each one's own filters
/// (Err: a filter weir cannot carry).
#[allow(clippy::type_complexity)]
fn backends(
    refs: &Value,
    ns: &str,
    at: &str,
    id: &str,
    skipped: &mut Vec<Skipped>,
) -> Result<(Vec<(Backend, u64)>, Vec<Option<String>>), String> {
    let mut out = Vec::new();
    let mut mods = Vec::new();
    for (i, r) in refs.as_array().into_iter().flatten().enumerate() {
        let weight = r["weight"].as_u64().unwrap_or(1);
        match backends_of(r, ns) {
            Some(b) if weight > 0 => {
                out.push((b, weight));
                mods.push(filters::backend_edge(r).map_err(|why| format!("backendRefs[{i}]: {why}"))?);
            }
            Some(_) => {}
            None => skipped.push(Skipped {
                object: id.to_owned(),
                what: format!("{at}[{i}]"),
                why: "not a Service with a port in a valid namespace".into(),
            }),
        }
    }
    Ok((out, mods))
}

/// The canary's share of a match's traffic, basis points; None when its
/// backends are not the route's stable and canary.
fn canary_bp(backends: &[(Backend, u64)], stable: &Backend, canary: Option<&Backend>) -> Option<u64> {
    let total: u64 = backends.iter().map(|(_, w)| w).sum();
    let mut to_canary = 0;
    for (b, w) in backends {
        if Some(b) == canary {
            to_canary += w;
        } else if b != stable {
            return None;
        }
    }
    Some((to_canary * 10_000 + total / 2) / total.max(1))
}

/// The Gateway API's order: exact hostnames, then wildcards (longer first),
/// then routes without hostnames; per hostnames exact paths, then longer
/// prefixes.
#[allow(clippy::type_complexity)]
fn order(g: &Group) -> (u8, std::cmp::Reverse<usize>, String, u8, std::cmp::Reverse<usize>, u8, u8) {
    let host_rank = match g.hosts.first() {
        None => 2,
        Some(h) if h.starts_with("*.") => 1,
        Some(_) => 0,
    };
    let longest = g.hosts.iter().map(String::len).max().unwrap_or(0);
    (
        host_rank,
        std::cmp::Reverse(longest),
        g.hosts.join(","),
        u8::from(!g.exact),
        std::cmp::Reverse(g.path.trim_end_matches('/').len()),
        // Then a method match before none (the Gateway API's precedence),
        // and a scheme-bound route before one that takes either.
        u8::from(g.method.is_none()),
        u8::from(g.scheme.is_none()),
    )
}

/// A route name from the group, unique among `names`.
fn unique_name(names: &mut BTreeSet<String>, g: &Group) -> String {
    let mut name = base_name(g);
    if g.base.as_ref().is_some_and(|b| b.edge.redirect.is_some()) {
        name.push_str("-redirect");
    }
    fresh(names, &name)
}

/// The group's name before it is made unique: at most 100 characters, so
/// the suffixes added after it stay within a route name's 128.
fn base_name(g: &Group) -> String {
    let mut name = super::slug(&[&g.ns, &g.name, g.hosts.first().map_or("any", String::as_str), &g.path]);
    if name.is_empty() {
        name = "route".into();
    }
    if let Some(m) = &g.method {
        name = format!("{name}-{}", m.to_ascii_lowercase());
    }
    name.truncate(100);
    name
}

/// Whether every conditional match can be a segment of the plain rule
/// `base`: the same policies, and backends among the path's two versions
/// (with the same per-version filters).
fn all_segmentable(base: &Match, conditional: &[Match]) -> bool {
    let Some((stable, _)) = base.backends.first() else { return false };
    let segmentable = |c: &Match| {
        c.edge == base.edge
            && c.backends.iter().all(|(b, _)| b == stable || base.backends.get(1).is_none_or(|(x, _)| x == b))
            && c.mods.iter().zip(&c.backends).all(|(m, (b, _))| {
                let i = base.backends.iter().position(|(x, _)| x == b);
                i.is_none_or(|i| base.mods.get(i) == Some(m))
            })
    };
    let others: BTreeSet<&Backend> =
        conditional.iter().flat_map(|c| c.backends.iter().map(|(b, _)| b)).filter(|b| *b != stable).collect();
    conditional.iter().all(segmentable) && (base.backends.len() > 1 || others.len() <= 1)
}

/// The shared state `write` threads through its helpers.
type Out<'a> = (&'a mut BTreeSet<String>, &'a mut BTreeSet<Backend>, &'a mut Vec<Skipped>);

/// Every conditional match of `g` as its own route; how many were written.
fn write_all_alone(body: &mut String, (names, upstreams, skipped): Out<'_>, g: &Group) -> usize {
    g.conditional.iter().map(|c| usize::from(write_alone(body, names, g, c, upstreams, skipped))).sum()
}

/// A path whose plain rule redirects: its conditional matches first, each
/// its own route, then the redirect route. How many routes were written.
fn write_redirect(
    body: &mut String,
    (names, upstreams, skipped): Out<'_>,
    g: &Group,
    (r, what): (&str, &str),
) -> usize {
    let written = write_all_alone(body, (&mut *names, &mut *upstreams, &mut *skipped), g);
    let name = unique_name(names, g);
    let _ = writeln!(body, "  # {} {what}: RequestRedirect", g.route_id);
    let _ = writeln!(body, "  - name: {}", q(&name));
    let _ = writeln!(body, "    match: {{{}}}", match_keys(g).join(", "));
    let _ = writeln!(body, "    redirect: {{{r}}}");
    written + 1
}

/// A conditional match's header, header_regex and query conditions as
/// `match` keys (a regex matches the whole value, as the Gateway API says).
fn conditions(c: &Match) -> Vec<String> {
    let plain: Vec<String> = c.headers.iter().filter(|h| !h.2).map(|(n, v, _)| format!("{}: {}", q(n), q(v))).collect();
    let regex: Vec<String> =
        c.headers.iter().filter(|h| h.2).map(|(n, v, _)| format!("{}: {}", q(n), q(&format!("^(?:{v})$")))).collect();
    let query: Vec<String> = c.query.iter().map(|(n, v)| format!("{}: {}", q(n), q(v))).collect();
    let mut out = Vec::new();
    for (key, list) in [("header", plain), ("header_regex", regex), ("query", query)] {
        if !list.is_empty() {
            out.push(format!("{key}: {{{}}}", list.join(", ")));
        }
    }
    out
}

/// A match that is not a segment of its path's plain rule, as a route of
/// its own that takes only requests with its headers and query. False: it
/// could not be written (listed).
fn write_alone(
    body: &mut String,
    names: &mut BTreeSet<String>,
    g: &Group,
    c: &Match,
    upstreams: &mut BTreeSet<Backend>,
    skipped: &mut Vec<Skipped>,
) -> bool {
    let what = format!("spec.rules[{}] (hostnames {:?} path {})", c.rule, g.hosts, g.path);
    if c.edge.redirect.is_none() && (c.backends.is_empty() || c.backends.len() > 2) {
        skipped.push(Skipped {
            object: g.route_id.clone(),
            what,
            why: format!("{} backends: weir splits a route between two versions", c.backends.len()),
        });
        return false;
    }
    let name = fresh(names, &format!("{}-rule-{}", base_name(g), c.rule));
    let mut m = match_keys(g);
    m.extend(conditions(c));
    let _ = writeln!(body, "  # {} {what}: its own matches", g.route_id);
    let _ = writeln!(body, "  - name: {}", q(&name));
    let _ = writeln!(body, "    match: {{{}}}", m.join(", "));
    if let Some(r) = &c.edge.redirect {
        let _ = writeln!(body, "    redirect: {{{r}}}");
        return true;
    }
    let version = |b: &Backend, i: usize| match c.mods.get(i).cloned().flatten() {
        Some(mods) => format!("{{upstream: {}, {mods}}}", q(&b.upstream())),
        None => format!("{{upstream: {}}}", q(&b.upstream())),
    };
    let stable = &c.backends[0].0;
    upstreams.insert(stable.clone());
    let _ = writeln!(body, "    stable: {}", version(stable, 0));
    if let Some((canary, w)) = c.backends.get(1) {
        upstreams.insert(canary.clone());
        let bp = canary_bp(&c.backends, stable, Some(canary)).unwrap_or(0);
        let _ = writeln!(body, "    canary: {}", version(canary, 1));
        let _ = writeln!(body, "    weight: {}   # backendRefs weights {} : {w}", bp as f64 / 100.0, c.backends[0].1);
    }
    for line in &c.edge.lines {
        let _ = writeln!(body, "    {line}");
    }
    if let Some((mirror, pct)) = &c.mirror {
        upstreams.insert(mirror.clone());
        let _ = writeln!(body, "    shadow: {{upstream: {}, percent: {pct}}}   # RequestMirror", q(&mirror.upstream()));
    }
    true
}

/// The route's `match` keys.
fn match_keys(g: &Group) -> Vec<String> {
    let mut m = Vec::new();
    if !g.hosts.is_empty() {
        m.push(format!("hosts: [{}]", g.hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ")));
    }
    m.push(format!("path: {}, path_type: {}", q(&g.path), if g.exact { "exact" } else { "prefix" }));
    if let Some(method) = &g.method {
        m.push(format!("methods: [{method}]"));
    }
    if let Some(s) = g.scheme {
        m.push(format!("scheme: {s}"));
    }
    m
}

fn write(mut groups: Vec<Group>, mut skipped: Vec<Skipped>) -> Imported {
    groups.sort_by_key(order);
    let mut upstreams: BTreeSet<Backend> = BTreeSet::new();
    let mut body = String::new();
    let mut names = BTreeSet::new();
    let mut count = 0;
    for g in &mut groups {
        let what =
            format!("hostnames {:?} path {} ({})", g.hosts, g.path, if g.exact { "Exact" } else { "PathPrefix" });
        // The Gateway API's precedence among a path's matches: more header
        // matches first, then more query matches, then reading order.
        g.conditional.sort_by_key(|c| (std::cmp::Reverse(c.headers.len()), std::cmp::Reverse(c.query.len())));
        if let Some(r) = g.base.as_ref().and_then(|b| b.edge.redirect.clone()) {
            count += write_redirect(&mut body, (&mut names, &mut upstreams, &mut skipped), g, (&r, &what));
            continue;
        }
        let Some(base) = g.base.take() else {
            // Only conditional matches: each its own route, which takes only
            // the requests with its headers and query (others fall through).
            count += write_all_alone(&mut body, (&mut names, &mut upstreams, &mut skipped), g);
            continue;
        };
        if base.backends.len() > 2 {
            skipped.push(Skipped {
                object: g.route_id.clone(),
                what: what.clone(),
                why: format!("{} backends: weir splits a path between two versions", base.backends.len()),
            });
            // Its conditional matches still take their own requests.
            count += write_all_alone(&mut body, (&mut names, &mut upstreams, &mut skipped), g);
            continue;
        }
        let stable = base.backends[0].0.clone();
        // If any conditional match cannot be a segment of the plain route,
        // every one becomes its own route (in precedence order, before the
        // plain route): a segment is only tried after all routes before it,
        // so mixing the two could put a match with fewer headers first.
        let all_alone = !all_segmentable(&base, &g.conditional);
        let mut alone: Vec<Match> = if all_alone { std::mem::take(&mut g.conditional) } else { Vec::new() };
        // The Gateway API guide's first canary step: the plain rule to v1
        // alone and a header rule to v2 alone. v2 is then the canary, at
        // weight 0 but for the header's segment.
        let conditional_canary = || {
            let others: BTreeSet<&Backend> = g
                .conditional
                .iter()
                .flat_map(|c| c.backends.iter().map(|(b, _)| b))
                .filter(|b| **b != stable)
                .collect();
            (others.len() == 1).then(|| others.into_iter().next().cloned()).flatten()
        };
        let canary = base.backends.get(1).map(|(b, _)| b.clone()).or_else(conditional_canary);
        // A version's own filters: from the plain rule, else from the first
        // rule that sends to it; every rule must agree.
        let mods_of = |b: &Backend| {
            std::iter::once(&base)
                .chain(g.conditional.iter())
                .find_map(|m| m.backends.iter().position(|(x, _)| x == b).map(|i| m.mods.get(i).cloned().flatten()))
                .flatten()
        };
        let (stable_mods, canary_mods) = (mods_of(&stable), canary.as_ref().and_then(mods_of));
        let name = unique_name(&mut names, g);
        count += 1;
        upstreams.insert(stable.clone());
        let start = body.len();
        let _ = writeln!(body, "  # {} {what}", g.route_id);
        let _ = writeln!(body, "  - name: {}", q(&name));
        let _ = writeln!(body, "    match: {{{}}}", match_keys(g).join(", "));
        let version = |b: &Backend, mods: &Option<String>| match mods {
            Some(m) => format!("{{upstream: {}, {m}}}", q(&b.upstream())),
            None => format!("{{upstream: {}}}", q(&b.upstream())),
        };
        let _ = writeln!(body, "    stable: {}", version(&stable, &stable_mods));
        for line in &base.edge.lines {
            let _ = writeln!(body, "    {line}");
        }
        // Rules whose filters differ from the plain rule's cannot be its segments.
        let differs = |c: &Match| {
            c.edge != base.edge
                || c.backends.iter().zip(&c.mods).any(|((b, _), m)| {
                    (Some(b) == Some(&stable) && *m != stable_mods) || (Some(b) == canary.as_ref() && *m != canary_mods)
                })
        };
        // A match with its own policies becomes its own route, before this one.
        g.conditional.retain(|c| {
            if differs(c) {
                alone.push(c.clone());
            }
            !differs(c)
        });
        let mut segments = Vec::new();
        for (i, c) in g.conditional.iter().enumerate() {
            match canary_bp(&c.backends, &stable, canary.as_ref()) {
                // Without a canary everything goes to stable anyway.
                Some(0) if canary.is_none() => {}
                Some(bp) if canary.is_some() => {
                    segments.push(format!(
                        "{{name: {}, match: {{{}}}, weight: {}}}",
                        q(&format!("rule-{}-segment-{i}", c.rule)),
                        conditions(c).join(", "),
                        bp as f64 / 100.0
                    ));
                }
                // Other backends than the path's two versions: its own route.
                _ => alone.push(c.clone()),
            }
        }
        if let Some(c) = &canary {
            upstreams.insert(c.clone());
            let bp = canary_bp(&base.backends, &stable, Some(c)).unwrap_or(0);
            let _ = writeln!(body, "    canary: {}", version(c, &canary_mods));
            match base.backends.get(1) {
                Some((_, w)) => {
                    let _ = writeln!(
                        body,
                        "    weight: {}   # backendRefs weights {} : {w}",
                        bp as f64 / 100.0,
                        base.backends[0].1
                    );
                }
                None => {
                    let _ = writeln!(body, "    weight: 0   # the plain rule sends everything to the first backend");
                }
            }
        }
        if !segments.is_empty() {
            let _ = writeln!(body, "    # the rules with header or query matches, in the Gateway API's precedence");
            let _ = writeln!(body, "    segments:");
            for s in segments {
                let _ = writeln!(body, "      - {s}");
            }
        }
        if let Some((m, pct)) = &base.mirror {
            upstreams.insert(m.clone());
            let _ = writeln!(body, "    shadow: {{upstream: {}, percent: {pct}}}   # RequestMirror", q(&m.upstream()));
        }
        // The matches that could not be segments, each its own route, before
        // the path's plain route (they take fewer requests).
        let mut before = String::new();
        for c in &alone {
            count += usize::from(write_alone(&mut before, &mut names, g, c, &mut upstreams, &mut skipped));
        }
        body.insert_str(start, &before);
    }
    let header = [
        "Imported from Gateway API HTTPRoutes and GRPCRoutes by `weir import gateway-api`.",
        "Check it with `weir check -c FILE`; set listen and admin for your deployment.",
        "",
        "What weir does differently from a Gateway:",
        "- parentRefs are read only for a listener's protocol (a route on an HTTP listener takes",
        "  plain requests only, on an HTTPS listener TLS ones); every route is served on weir's listeners;",
        "- a path's rules with header/query matches become segments of the rule without them;",
        "- RegularExpression header matches use Rust `regex` syntax, matched whole;",
        "- a GRPCRoute method match is a path: /service/method exactly, or the prefix /service.",
    ];
    let out = config_text(&header, &upstreams, &std::collections::BTreeMap::new(), &body);
    Imported { yaml: out, routes: count, skipped, files: Vec::new() }
}
