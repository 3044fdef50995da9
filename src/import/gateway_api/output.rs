//! Writing the imported HTTPRoute groups as weir routes: the Gateway API's
//! order, a path's plain rule as the route with its conditional matches as
//! segments (or, where they cannot be, as routes of their own before it),
//! redirect routes, names, and the config text.

use super::{Group, Match};
use crate::import::{Backend, Imported, Skipped, config_text, fresh, q};
use std::collections::BTreeSet;
use std::fmt::Write as _;

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
    let mut name = crate::import::slug(&[&g.ns, &g.name, g.hosts.first().map_or("any", String::as_str), &g.path]);
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

/// What the config says first: where it came from and what weir does
/// differently.
const HEADER: [&str; 9] = [
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

pub(super) fn write(mut groups: Vec<Group>, mut skipped: Vec<Skipped>) -> Imported {
    groups.sort_by_key(order);
    let mut upstreams: BTreeSet<Backend> = BTreeSet::new();
    let mut body = String::new();
    let mut names = BTreeSet::new();
    let mut count = 0;
    for g in &mut groups {
        count += write_group(&mut body, (&mut names, &mut upstreams, &mut skipped), g);
    }
    let out = config_text(&HEADER, &upstreams, &std::collections::BTreeMap::new(), &body);
    Imported { yaml: out, routes: count, skipped, files: Vec::new() }
}

/// One path's routes: its redirect, or its plain rule split between two
/// versions with the conditional matches as segments, or (where there is
/// no plain rule it can be) each match its own route. How many routes were
/// written.
fn write_group(body: &mut String, (names, upstreams, skipped): Out<'_>, g: &mut Group) -> usize {
    let what = format!("hostnames {:?} path {} ({})", g.hosts, g.path, if g.exact { "Exact" } else { "PathPrefix" });
    // The Gateway API's precedence among a path's matches: more header
    // matches first, then more query matches, then reading order.
    g.conditional.sort_by_key(|c| (std::cmp::Reverse(c.headers.len()), std::cmp::Reverse(c.query.len())));
    if let Some(r) = g.base.as_ref().and_then(|b| b.edge.redirect.clone()) {
        return write_redirect(body, (names, upstreams, skipped), g, (&r, &what));
    }
    let Some(base) = g.base.take() else {
        // Only conditional matches: each its own route, which takes only
        // the requests with its headers and query (others fall through).
        return write_all_alone(body, (names, upstreams, skipped), g);
    };
    if base.backends.len() > 2 {
        skipped.push(Skipped {
            object: g.route_id.clone(),
            what: what.clone(),
            why: format!("{} backends: weir splits a path between two versions", base.backends.len()),
        });
        // Its conditional matches still take their own requests.
        return write_all_alone(body, (names, upstreams, skipped), g);
    }
    write_split(body, (names, upstreams, skipped), g, &base, &what)
}

/// The plain rule `base` as a route split between its two versions, its
/// conditional matches as segments; those that cannot be are written as
/// routes of their own before it (they take fewer requests). How many
/// routes were written.
fn write_split(
    body: &mut String,
    (names, upstreams, skipped): Out<'_>,
    g: &mut Group,
    base: &Match,
    what: &str,
) -> usize {
    // If any conditional match cannot be a segment of the plain route,
    // every one becomes its own route (in precedence order, before the
    // plain route): a segment is only tried after all routes before it,
    // so mixing the two could put a match with fewer headers first.
    let all_alone = !all_segmentable(base, &g.conditional);
    let mut alone: Vec<Match> = if all_alone { std::mem::take(&mut g.conditional) } else { Vec::new() };
    let v = Versions::of(base, &g.conditional);
    let name = unique_name(names, g);
    upstreams.insert(v.stable.clone());
    let start = body.len();
    let _ = writeln!(body, "  # {} {what}", g.route_id);
    let _ = writeln!(body, "  - name: {}", q(&name));
    let _ = writeln!(body, "    match: {{{}}}", match_keys(g).join(", "));
    let _ = writeln!(body, "    stable: {}", version(&v.stable, &v.stable_mods));
    for line in &base.edge.lines {
        let _ = writeln!(body, "    {line}");
    }
    // A match with its own policies becomes its own route, before this one.
    g.conditional.retain(|c| {
        if v.differs(base, c) {
            alone.push(c.clone());
        }
        !v.differs(base, c)
    });
    let segments = segments(&g.conditional, &v, &mut alone);
    if let Some(c) = &v.canary {
        upstreams.insert(c.clone());
        write_canary(body, base, &v, c);
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
    let mut before = String::new();
    let mut written = 1;
    for c in &alone {
        written += usize::from(write_alone(&mut before, names, g, c, upstreams, skipped));
    }
    body.insert_str(start, &before);
    written
}

/// A version as the route writes it: its upstream and its own filters.
fn version(b: &Backend, mods: &Option<String>) -> String {
    match mods {
        Some(m) => format!("{{upstream: {}, {m}}}", q(&b.upstream())),
        None => format!("{{upstream: {}}}", q(&b.upstream())),
    }
}

/// A path's two versions and each one's own filters.
struct Versions {
    stable: Backend,
    canary: Option<Backend>,
    stable_mods: Option<String>,
    canary_mods: Option<String>,
}

impl Versions {
    /// The plain rule's first backend is stable, its second the canary.
    fn of(base: &Match, conditional: &[Match]) -> Self {
        let stable = base.backends[0].0.clone();
        // The Gateway API guide's first canary step: the plain rule to v1
        // alone and a header rule to v2 alone. v2 is then the canary, at
        // weight 0 but for the header's segment.
        let conditional_canary = || {
            let others: BTreeSet<&Backend> =
                conditional.iter().flat_map(|c| c.backends.iter().map(|(b, _)| b)).filter(|b| **b != stable).collect();
            (others.len() == 1).then(|| others.into_iter().next().cloned()).flatten()
        };
        let canary = base.backends.get(1).map(|(b, _)| b.clone()).or_else(conditional_canary);
        // A version's own filters: from the plain rule, else from the first
        // rule that sends to it; every rule must agree.
        let mods_of = |b: &Backend| {
            std::iter::once(base)
                .chain(conditional.iter())
                .find_map(|m| m.backends.iter().position(|(x, _)| x == b).map(|i| m.mods.get(i).cloned().flatten()))
                .flatten()
        };
        let (stable_mods, canary_mods) = (mods_of(&stable), canary.as_ref().and_then(mods_of));
        Self { stable, canary, stable_mods, canary_mods }
    }

    /// Whether the match's filters differ from the plain rule's, so that it
    /// cannot be its segment.
    fn differs(&self, base: &Match, c: &Match) -> bool {
        c.edge != base.edge
            || c.backends.iter().zip(&c.mods).any(|((b, _), m)| {
                (Some(b) == Some(&self.stable) && *m != self.stable_mods)
                    || (Some(b) == self.canary.as_ref() && *m != self.canary_mods)
            })
    }
}

/// The conditional matches as segments weighted by their share of the
/// canary; one that sends to other backends than the path's two versions
/// goes to `alone`.
fn segments(conditional: &[Match], v: &Versions, alone: &mut Vec<Match>) -> Vec<String> {
    let mut segments = Vec::new();
    for (i, c) in conditional.iter().enumerate() {
        match canary_bp(&c.backends, &v.stable, v.canary.as_ref()) {
            // Without a canary everything goes to stable anyway.
            Some(0) if v.canary.is_none() => {}
            Some(bp) if v.canary.is_some() => {
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
    segments
}

/// The canary version `c` and the plain rule's weight for it.
fn write_canary(body: &mut String, base: &Match, v: &Versions, c: &Backend) {
    let bp = canary_bp(&base.backends, &v.stable, Some(c)).unwrap_or(0);
    let _ = writeln!(body, "    canary: {}", version(c, &v.canary_mods));
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
