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

use super::{Backend, Imported, Skipped, TlsOut, Wire, dns_label, valid_host};
use serde_json::Value;
use std::collections::BTreeMap;

mod edge;
mod output;
use output::write;

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

fn read_ingress(
    o: &Value,
    class: &str,
    ports: &BTreeMap<(String, String, String), u16>,
    (skipped, files): (&mut Vec<Skipped>, &mut Vec<String>),
) -> Option<Ingress> {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let id = format!("Ingress {ns}/{name}");
    let annotations = o["metadata"]["annotations"].as_object();
    let their_class = o["spec"]["ingressClassName"]
        .as_str()
        .or_else(|| annotations.and_then(|a| a.get("kubernetes.io/ingress.class")).and_then(Value::as_str));
    if their_class.is_some_and(|c| c != class) {
        skipped.push(Skipped {
            object: id,
            what: "ingressClassName".into(),
            why: format!("class {:?}, not {class:?}: not imported", their_class.unwrap_or_default()),
        });
        return None;
    }
    let mut ann = BTreeMap::new();
    for (k, v) in annotations.into_iter().flatten() {
        if let Some(short) = k.strip_prefix(ANN) {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ann.insert(short.to_owned(), v);
        }
    }
    // A canary Ingress's own backend-protocol is ignored (ingress-nginx
    // keeps the primary's location); its Service gets the primary's wire
    // when the two are paired.
    let wire = if ann.get("canary").is_some_and(|v| v == "true") {
        Wire::default()
    } else {
        backend_wire(&ann, &id, skipped, files)?
    };
    let backend_of = |b: &Value, what: &str, skipped: &mut Vec<Skipped>| -> Option<Backend> {
        // networking.k8s.io/v1beta1: `serviceName` and `servicePort` (a
        // number or a port name), as v1's `service: {name, port}`.
        let v1beta1;
        let svc = if b["serviceName"].is_string() {
            v1beta1 = match &b["servicePort"] {
                Value::String(name) => serde_json::json!({"name": b["serviceName"], "port": {"name": name}}),
                port => serde_json::json!({"name": b["serviceName"], "port": {"number": port}}),
            };
            &v1beta1
        } else {
            &b["service"]
        };
        if !dns_label(&ns) {
            skipped.push(Skipped {
                object: id.clone(),
                what: what.into(),
                why: format!("namespace {ns:?} is not a DNS label"),
            });
            return None;
        }
        let Some(service) = svc["name"].as_str().filter(|s| dns_label(s)) else {
            skipped.push(Skipped {
                object: id.clone(),
                what: what.into(),
                why: "backend is not a Service (resource backends are not supported)".into(),
            });
            return None;
        };
        let port = match (svc["port"]["number"].as_u64(), svc["port"]["name"].as_str()) {
            (Some(n), _) => u16::try_from(n).ok(),
            (None, Some(pn)) => match ports.get(&(ns.clone(), service.to_owned(), pn.to_owned())) {
                Some(p) => Some(*p),
                None => {
                    skipped.push(Skipped {
                        object: id.clone(),
                        what: what.into(),
                        why: format!("port name {pn:?} of Service {ns}/{service} not found: add the Service to the input, or use a port number"),
                    });
                    return None;
                }
            },
            (None, None) => None,
        };
        let Some(port) = port.filter(|p| *p > 0) else {
            skipped.push(Skipped { object: id.clone(), what: what.into(), why: "backend without a valid port".into() });
            return None;
        };
        Some(Backend { ns: ns.clone(), service: service.to_owned(), port, wire: wire.clone() })
    };
    let mut rules = Vec::new();
    for (i, rule) in o["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
        let host = rule["host"].as_str().unwrap_or("").to_ascii_lowercase();
        if !host.is_empty() && !valid_host(&host) {
            skipped.push(Skipped {
                object: id.clone(),
                what: format!("spec.rules[{i}].host"),
                why: format!("{host:?} is not a DNS name or *.suffix"),
            });
            continue;
        }
        for (j, p) in rule["http"]["paths"].as_array().into_iter().flatten().enumerate() {
            let what = format!("spec.rules[{i}].http.paths[{j}]");
            let Some(kind) = PathType::parse(p["pathType"].as_str()) else {
                skipped.push(Skipped { object: id.clone(), what, why: format!("unknown pathType {}", p["pathType"]) });
                continue;
            };
            let path = p["path"].as_str().unwrap_or("/").to_owned();
            if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                skipped.push(Skipped { object: id.clone(), what, why: format!("path {path:?} does not start with /") });
                continue;
            }
            if let Some(backend) = backend_of(&p["backend"], &what, skipped) {
                rules.push(Rule { host: host.clone(), path, kind, backend });
            }
        }
    }
    // v1beta1 called it `backend`.
    let default =
        if o["spec"]["defaultBackend"].is_null() { &o["spec"]["backend"] } else { &o["spec"]["defaultBackend"] };
    if !default.is_null()
        && let Some(backend) = backend_of(default, "spec.defaultBackend", skipped)
    {
        // What the Ingress serves for any path of any host it has no rule for.
        rules.push(Rule { host: String::new(), path: "/".into(), kind: PathType::Prefix, backend });
    }
    let tls_hosts = o["spec"]["tls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["hosts"].as_array().into_iter().flatten().filter_map(Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    if o["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
        skipped.push(Skipped {
            object: id.clone(),
            what: "spec.tls".into(),
            why: "TLS is weir's listener's job: put the Secret's tls.crt and tls.key in listen[].tls.certs".into(),
        });
    }
    Some(Ingress { ns, name, ann, rules, tls_hosts })
}

/// How weir speaks to the Services of a primary Ingress, from
/// `backend-protocol` (ingress-nginx: case-insensitive, HTTP when absent or
/// not one it knows). None: the protocol is one weir cannot speak yet, and
/// the Ingress is not imported (its routes would send plain HTTP/1.1 to a
/// port that expects something else).
fn backend_wire(
    ann: &BTreeMap<String, String>,
    id: &str,
    skipped: &mut Vec<Skipped>,
    files: &mut Vec<String>,
) -> Option<Wire> {
    let Some(raw) = ann.get("backend-protocol") else { return Some(Wire::default()) };
    let what = format!("{ANN}backend-protocol");
    match raw.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Some(Wire::default()),
        // grpc_pass grpc://: HTTP/2 with prior knowledge.
        "GRPC" => Some(Wire { protocol: Some("h2c"), tls: None }),
        // grpc_pass grpcs://: ingress-nginx sets no grpc_ssl_verify, so
        // nginx does not verify the upstream's certificate; weir does the
        // same, explicitly (and `weir check` warns about it).
        "GRPCS" => {
            skipped.push(Skipped {
                object: id.to_owned(),
                what,
                why: "GRPCS: imported as protocol h2 with insecure_skip_verify, as ingress-nginx does not verify \
                      either; give the upstream a tls.ca_file and server_name to verify it"
                    .into(),
            });
            Some(Wire { protocol: Some("h2"), tls: Some(TlsOut { insecure_skip_verify: true, ..TlsOut::default() }) })
        }
        "HTTPS" => https_wire(ann, id, skipped, files),
        other @ ("AUTO_HTTP" | "FCGI") => {
            skipped.push(Skipped {
                object: id.to_owned(),
                what,
                why: format!("{other}: not a protocol weir speaks to upstreams; Ingress not imported"),
            });
            None
        }
        other => {
            skipped.push(Skipped {
                object: id.to_owned(),
                what,
                why: format!(
                    "{other:?} is not a backend protocol; imported as HTTP, which ingress-nginx uses then too"
                ),
            });
            Some(Wire::default())
        }
    }
}

/// `backend-protocol: HTTPS` (`proxy_pass https://`): HTTP/1.1 over TLS.
/// ingress-nginx verifies the upstream only with `proxy-ssl-secret` (its
/// `ca.crt`) and `proxy-ssl-verify: on`, against `proxy-ssl-name` (nginx's
/// default name is `upstream_balancer`); otherwise it does not verify, and
/// neither does the import (explicitly, listed).
fn https_wire(
    ann: &BTreeMap<String, String>,
    id: &str,
    skipped: &mut Vec<Skipped>,
    files: &mut Vec<String>,
) -> Option<Wire> {
    let note = |skipped: &mut Vec<Skipped>, key: &str, why: String| {
        skipped.push(Skipped { object: id.to_owned(), what: format!("{ANN}{key}"), why });
    };
    let verify = ann.get("proxy-ssl-verify").is_some_and(|v| v.trim() == "on");
    let Some(secret) = ann.get("proxy-ssl-secret").filter(|_| verify) else {
        note(
            skipped,
            "backend-protocol",
            "HTTPS without proxy-ssl-secret and proxy-ssl-verify on: ingress-nginx does not verify the upstream, \
             imported as tls with insecure_skip_verify; give it a ca_file and server_name to verify"
                .into(),
        );
        return Some(Wire { protocol: None, tls: Some(TlsOut { insecure_skip_verify: true, ..TlsOut::default() }) });
    };
    let ns = id.strip_prefix("Ingress ").and_then(|n| n.split_once('/')).map_or("", |(ns, _)| ns);
    let (secret_ns, name) = secret.trim().split_once('/').unwrap_or((ns, secret.trim()));
    if secret_ns != ns || !dns_label(name) {
        note(
            skipped,
            "proxy-ssl-secret",
            format!(
                "{secret:?}: not a Secret of this namespace (ingress-nginx denies the location); Ingress not imported"
            ),
        );
        return None;
    }
    let path = format!("ca/{ns}/{name}/ca.crt");
    note(
        skipped,
        "proxy-ssl-secret",
        format!(
            "write Secret {ns}/{name}'s ca.crt to {path:?} next to the config; if it also holds tls.crt and tls.key \
             (ingress-nginx's client certificate), add them as client_cert_file and client_key_file"
        ),
    );
    if !files.contains(&path) {
        files.push(path.clone());
    }
    let server_name = ann.get("proxy-ssl-name").map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if server_name.is_none() {
        note(
            skipped,
            "proxy-ssl-verify",
            "on without proxy-ssl-name: nginx verifies the name upstream_balancer; weir verifies the Service's DNS name"
                .into(),
        );
    }
    Some(Wire { protocol: None, tls: Some(TlsOut { ca_file: Some(path), server_name, insecure_skip_verify: false }) })
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
