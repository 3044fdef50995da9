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

use super::{Backend, Imported, Skipped, dns_label, token, valid_host};
use serde_json::Value;

mod filters;
mod output;
mod wire;
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
    let mut imported = output::write(groups, skipped);
    imported.files = found.files;
    imported
}

/// Read one route object: each match of each rule it can take joins the
/// group of its hostnames, path, method and scheme.
fn read_route(
    o: &Value,
    groups: &mut Vec<Group>,
    skipped: &mut Vec<Skipped>,
    (cluster, found): (&Cluster<'_>, &mut Found),
) {
    let Some(route) = Route::of(o, skipped, cluster) else { return };
    for (ri, rule) in o["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{ri}]");
        let Some(target) = route.read_rule(rule, ri, &at, skipped, (cluster, &mut *found)) else { continue };
        let matches = rule["matches"].as_array().cloned().unwrap_or_default();
        let matches = if matches.is_empty() { vec![serde_json::json!({})] } else { matches };
        for (mi, m) in matches.iter().enumerate() {
            if let Some(g) = route.read_match(m, &format!("{at}.matches[{mi}]"), &target, skipped) {
                file(groups, g);
            }
        }
    }
}

/// Join a one-match group to the group of the same hostnames, path, method
/// and scheme, or add it. A later plain match for the same path never wins.
fn file(groups: &mut Vec<Group>, g: Group) {
    let same = |x: &&mut Group| {
        x.hosts == g.hosts && x.exact == g.exact && x.path == g.path && x.method == g.method && x.scheme == g.scheme
    };
    let Some(x) = groups.iter_mut().find(same) else {
        groups.push(g);
        return;
    };
    if x.base.is_none() {
        x.base = g.base;
    }
    x.conditional.extend(g.conditional);
}

/// One HTTPRoute or GRPCRoute being read: what all its rules share.
struct Route<'o> {
    id: String,
    ns: String,
    name: String,
    kind: &'o str,
    grpc: bool,
    hosts: Vec<String>,
    /// The scheme of the listener the route is attached to, if one.
    listener: Option<&'static str>,
}

impl<'o> Route<'o> {
    /// The route's identity, hostnames and listener; None when it has
    /// hostnames and none of them is valid (it serves nothing then).
    fn of(o: &'o Value, skipped: &mut Vec<Skipped>, cluster: &Cluster<'_>) -> Option<Self> {
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let kind = o["kind"].as_str().unwrap_or("HTTPRoute");
        let id = format!("{kind} {ns}/{name}");
        let mut hosts = Vec::new();
        for (i, h) in o["spec"]["hostnames"].as_array().into_iter().flatten().enumerate() {
            match h.as_str().map(str::to_ascii_lowercase) {
                Some(h) if valid_host(&h) => hosts.push(h),
                _ => skipped.push(Skipped {
                    object: id.clone(),
                    what: format!("spec.hostnames[{i}]"),
                    why: format!("{h} is not a host name or *.suffix"),
                }),
            }
        }
        if o["spec"]["hostnames"].as_array().is_some_and(|a| !a.is_empty()) && hosts.is_empty() {
            return None;
        }
        let listener = filters::listener_scheme(o, &cluster.gateways);
        Some(Route { id, ns, name, kind, grpc: kind == "GRPCRoute", hosts, listener })
    }

    fn skip(&self, skipped: &mut Vec<Skipped>, what: String, why: String) {
        skipped.push(Skipped { object: self.id.clone(), what, why });
    }

    /// What a rule does with the requests it matches (its policies,
    /// backends and mirror), as a match without conditions yet; None
    /// (listed) when weir cannot do the same.
    fn read_rule(
        &self,
        rule: &Value,
        ri: usize,
        at: &str,
        skipped: &mut Vec<Skipped>,
        (cluster, found): (&Cluster<'_>, &mut Found),
    ) -> Option<Match> {
        let all_prefix = rule["matches"]
            .as_array()
            .is_none_or(|ms| ms.iter().all(|m| m["path"]["type"].as_str().unwrap_or("PathPrefix") == "PathPrefix"));
        let edge = match filters::rule_edge(rule, all_prefix && !self.grpc) {
            Ok(e) => e,
            Err(why) => {
                self.skip(skipped, format!("{at}.filters"), format!("{why}; rule not imported"));
                return None;
            }
        };
        let refs_at = format!("{at}.backendRefs");
        let (mut backends, mods) = match backends(&rule["backendRefs"], &self.ns, &refs_at, &self.id, skipped) {
            Ok(b) => b,
            Err(why) => {
                self.skip(skipped, refs_at, format!("{why}; rule not imported"));
                return None;
            }
        };
        if let Err(why) = resolve_wires(backends.iter_mut().map(|(b, _)| b), self.kind, (cluster, &mut *found)) {
            self.skip(skipped, at.to_owned(), format!("{why}; rule not imported"));
            return None;
        }
        if edge.redirect.is_some() {
            // The redirect answers; backends, if any, are never reached.
            backends.clear();
        } else if backends.is_empty() {
            let why = "no Service backend with a weight above 0 (the Gateway answers 500 there)";
            self.skip(skipped, at.to_owned(), why.into());
            return None;
        }
        let mirror = rule_mirror(rule, (&self.ns, self.kind, at, &self.id), skipped, (cluster, found));
        Some(Match { headers: Vec::new(), query: Vec::new(), backends, mirror, rule: ri, edge, mods })
    }

    /// One `matches[]` entry of the rule `target` as a group of its own;
    /// None (listed) when weir cannot match it.
    fn read_match(&self, m: &Value, mat: &str, target: &Match, skipped: &mut Vec<Skipped>) -> Option<Group> {
        let (exact, path) = match self.match_path(m, mat) {
            Ok(p) => p,
            Err((what, why)) => {
                self.skip(skipped, what, why);
                return None;
            }
        };
        let method = if self.grpc { None } else { m["method"].as_str().map(str::to_ascii_uppercase) };
        if method.as_deref().is_some_and(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
            self.skip(skipped, format!("{mat}.method"), "not a method".into());
            return None;
        }
        let scheme = if target.edge.plain_only { Some("http") } else { self.listener };
        let (headers, query) = header_and_query_matches(m, mat, &self.id, skipped)?;
        let found = Match { headers, query, ..target.clone() };
        let (base, conditional) = if found.headers.is_empty() && found.query.is_empty() {
            (Some(found), Vec::new())
        } else {
            (None, vec![found])
        };
        Some(Group {
            route_id: self.id.clone(),
            ns: self.ns.clone(),
            name: self.name.clone(),
            hosts: self.hosts.clone(),
            exact,
            path,
            method,
            scheme,
            base,
            conditional,
        })
    }

    /// Whether the match is exact, and its path: a GRPCRoute's method as a
    /// path, else the path match. Err: the field, and why weir cannot take it.
    fn match_path(&self, m: &Value, mat: &str) -> Result<(bool, String), (String, String)> {
        if self.grpc {
            return grpc_method_path(&m["method"]).map_err(|why| (format!("{mat}.method"), why));
        }
        match (m["path"]["type"].as_str().unwrap_or("PathPrefix"), m["path"]["value"].as_str().unwrap_or("/")) {
            (_, v) if !v.starts_with('/') || v.bytes().any(|b| b.is_ascii_control() || b == b' ') => {
                Err((format!("{mat}.path"), format!("{v:?} is not a path")))
            }
            ("Exact", v) => Ok((true, v.to_owned())),
            ("PathPrefix", v) => Ok((false, v.to_owned())),
            (t, _) => Err((format!("{mat}.path"), format!("path type {t} is not translated"))),
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
