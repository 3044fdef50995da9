//! ingress-nginx Ingresses → weir routes.
//!
//! How ingress-nginx decides, from its source (`balancer.lua`,
//! `route_to_alternative_balancer`), not only its docs:
//!
//! 1. A canary Ingress (`canary: "true"`) joins the primary Ingress that
//!    serves the same host, path and pathType; alone it serves nothing.
//! 2. `canary-by-header` H, if the request has H:
//!    - with `canary-by-header-value` V: H == V → canary; else go on;
//!    - else with `canary-by-header-pattern` P: P matches H (a search,
//!      not anchored) → canary; else go on;
//!    - else H == `always` → canary, H == `never` → stable (the cookie and
//!      weight are not looked at), anything else → go on.
//! 3. `canary-by-cookie` C: `always` → canary, `never` → stable, else go on.
//! 4. `canary-weight` W of `canary-weight-total` T (default 100): canary
//!    with chance W/T, drawn per request.
//!
//! weir's segments are checked in order and the first that matches decides
//! with its weight (100 = canary, 0 = stable), then the route's weight: the
//! same precedence, written out. Paths: `Exact` and `Prefix` keep their
//! Kubernetes meaning (weir's `path_type`); `ImplementationSpecific` and a
//! missing pathType are `Prefix`, as ingress-nginx's store has made them
//! since 2020 (`SetDefaultNGINXPathType`); routes are written the way nginx
//! picks a location (exact first, then the longest prefix), hosts before
//! rules without a host.

use super::{Backend, Imported, Skipped};
use serde_json::Value;
use std::collections::BTreeMap;

mod edge;
mod output;
mod read;
use output::write;
use read::read_ingress;

const ANN: &str = "nginx.ingress.kubernetes.io/";

/// Annotations of a canary Ingress that are translated.
const CANARY_KEYS: [&str; 8] = [
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
    "affinity-canary-behavior",
];

/// Annotations of a primary Ingress that are translated.
const PRIMARY_KEYS: [&str; 6] =
    ["mirror-target", "mirror-request-body", "mirror-host", "affinity", "session-cookie-name", "backend-protocol"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathType {
    Exact,
    Prefix,
}

impl PathType {
    /// `ImplementationSpecific` and no pathType are `Prefix` in ingress-nginx.
    fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            Some("Exact") => Some(PathType::Exact),
            Some("Prefix" | "ImplementationSpecific") | None => Some(PathType::Prefix),
            Some(_) => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    host: String,
    path: String,
    kind: PathType,
    backend: Backend,
}

#[derive(Debug, Clone)]
struct Ingress {
    ns: String,
    name: String,
    ann: BTreeMap<String, String>,
    rules: Vec<Rule>,
    /// `spec.tls[].hosts` (lower case): where `ssl-redirect` applies.
    tls_hosts: Vec<String>,
}

impl Ingress {
    fn id(&self) -> String {
        format!("Ingress {}/{}", self.ns, self.name)
    }

    fn ann(&self, key: &str) -> Option<&str> {
        self.ann.get(key).map(String::as_str)
    }

    fn is_canary(&self) -> bool {
        self.ann("canary") == Some("true")
    }
}

/// Import every Ingress of class `class` in `objects`.
pub fn import(objects: &[Value], class: &str) -> Imported {
    let mut skipped = Vec::new();
    let ports = service_ports(objects);
    let mut ingresses = Vec::new();
    let mut files = Vec::new();
    let objects = super::latest(objects);
    for o in objects.iter().filter(|o| o["kind"] == "Ingress") {
        if let Some(i) = read_ingress(o, class, &ports, (&mut skipped, &mut files)) {
            ingresses.push(i);
        }
    }
    let (primaries, canaries): (Vec<&Ingress>, Vec<&Ingress>) = ingresses.iter().partition(|i| !i.is_canary());
    let mut routes = Vec::new();
    for p in &primaries {
        note_proxy_ssl(p, &mut skipped);
        let translated_or_noted = |k: &&String| {
            PRIMARY_KEYS.contains(&k.as_str()) || edge::EDGE_KEYS.contains(&k.as_str()) || k.starts_with("proxy-ssl-")
        };
        for k in p.ann.keys().filter(|k| !translated_or_noted(k)) {
            skipped.push(Skipped { object: p.id(), what: format!("{ANN}{k}"), why: "not translated".into() });
        }
        for r in &p.rules {
            routes.push(Planned { primary: p, rule: r, canary: None });
        }
    }
    // Pair each canary path with the primary path of the same host, path
    // and pathType; ingress-nginx uses the first canary that joins.
    for c in &canaries {
        note_unused(c, &CANARY_KEYS, "ignored on a canary Ingress (ingress-nginx ignores it too)", &mut skipped);
        for r in &c.rules {
            let joined =
                routes.iter_mut().find(|p| p.rule.host == r.host && p.rule.path == r.path && p.rule.kind == r.kind);
            match joined {
                Some(p) if p.canary.is_none() => p.canary = Some((c, r)),
                Some(p) => skipped.push(Skipped {
                    object: c.id(),
                    what: format!("host {:?} path {} ({})", r.host, r.path, r.kind.as_str()),
                    why: format!(
                        "a second canary for the same path; only the first ({}) is used",
                        p.canary.map(|(c, _)| c.id()).unwrap_or_default()
                    ),
                }),
                None => skipped.push(Skipped {
                    object: c.id(),
                    what: format!("host {:?} path {} ({})", r.host, r.path, r.kind.as_str()),
                    why: "unpaired canary: no primary Ingress serves this host, path and pathType, so ingress-nginx \
                          serves nothing from it either"
                        .into(),
                }),
            }
        }
    }
    // ingress-nginx's `enforceRegex`: one Ingress with use-regex or
    // rewrite-target makes every path of its hosts a case-insensitive
    // regex anchored at the start (`location ~* "^path"`).
    let regex_hosts: std::collections::BTreeSet<String> = primaries
        .iter()
        .filter(|i| edge::wants_regex(i))
        .flat_map(|i| i.rules.iter().map(|r| r.host.clone()))
        .collect();
    routes.sort_by_key(|a| order(a.rule, regex_hosts.contains(&a.rule.host)));
    let mut imported = write(&routes, &regex_hosts, skipped);
    imported.files = files;
    imported
}

struct Planned<'a> {
    primary: &'a Ingress,
    rule: &'a Rule,
    canary: Option<(&'a Ingress, &'a Rule)>,
}

/// How nginx would pick: named hosts first (exact names, then wildcards),
/// rules without a host last; per host exact paths, then longer prefixes.
/// On a regex host every path is a regex, tried longest first
/// (ingress-nginx's "Path Priority").
fn order(r: &Rule, regex: bool) -> (u8, String, u8, std::cmp::Reverse<usize>, String) {
    let host_rank = if r.host.is_empty() {
        2
    } else if r.host.starts_with("*.") {
        1
    } else {
        0
    };
    let path_rank = u8::from(r.kind != PathType::Exact && !regex);
    (host_rank, r.host.clone(), path_rank, std::cmp::Reverse(r.path.len()), r.path.clone())
}

/// `Service` ports by name, to resolve `port.name` in backends.
fn service_ports(objects: &[Value]) -> BTreeMap<(String, String, String), u16> {
    let mut out = BTreeMap::new();
    for s in objects.iter().filter(|o| o["kind"] == "Service") {
        let ns = s["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let name = s["metadata"]["name"].as_str().unwrap_or("").to_owned();
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            if let (Some(pn), Some(port)) = (p["name"].as_str(), p["port"].as_u64()) {
                out.insert((ns.clone(), name.clone(), pn.to_owned()), u16::try_from(port).unwrap_or(0));
            }
        }
    }
    out
}

/// `proxy-ssl-*` configures TLS to `backend-protocol: HTTPS` upstreams
/// only: ingress-nginx never applies it to gRPC (no `grpc_ssl_*`), and over
/// plain HTTP it changes nothing. With HTTPS, `proxy-ssl-secret`, `-verify`
/// and `-name` are translated (`https_wire`); the rest is listed.
fn note_proxy_ssl(i: &Ingress, skipped: &mut Vec<Skipped>) {
    let protocol = i.ann("backend-protocol").map(|p| p.trim().to_ascii_uppercase());
    let https = protocol.as_deref() == Some("HTTPS");
    let why = match protocol.as_deref() {
        Some("GRPCS" | "GRPC") => {
            "ingress-nginx does not apply proxy-ssl-* to gRPC upstreams either; nothing to translate"
        }
        Some("HTTPS") => {
            "not translated: weir's TLS client speaks TLS 1.2 and 1.3 with its own ciphers, verifies the whole chain \
             and always sends the verified name as SNI"
        }
        _ => "changes nothing without backend-protocol HTTPS; nothing to translate",
    };
    let translated = ["proxy-ssl-secret", "proxy-ssl-verify", "proxy-ssl-name"];
    for k in i.ann.keys().filter(|k| k.starts_with("proxy-ssl-")) {
        if https && translated.contains(&k.as_str()) {
            continue;
        }
        skipped.push(Skipped { object: i.id(), what: format!("{ANN}{k}"), why: why.into() });
    }
}

/// List the annotations of `i` that are not among `used`.
fn note_unused(i: &Ingress, used: &[&str], why: &str, skipped: &mut Vec<Skipped>) {
    for k in i.ann.keys().filter(|k| !used.contains(&k.as_str())) {
        skipped.push(Skipped { object: i.id(), what: format!("{ANN}{k}"), why: why.into() });
    }
}

#[cfg(test)]
mod tests {
    use super::output::percent;
    use crate::import::slug;

    #[test]
    fn percent_keeps_two_decimals_and_says_when_it_rounds() {
        assert_eq!(percent(10, 100), (10.0, true));
        assert_eq!(percent(1, 3), (33.33, false));
        assert_eq!(percent(250, 1000), (25.0, true));
        assert_eq!(percent(150, 100), (100.0, true), "over the total is all");
    }

    #[test]
    fn slugs_are_safe_route_names() {
        assert_eq!(
            slug(&["games", "bet-api", "bet.example.com", "/v1/place_bet"]),
            "games-bet-api-bet.example.com-v1-place-bet"
        );
        assert_eq!(slug(&["a", "", "/"]), "a");
    }
}
