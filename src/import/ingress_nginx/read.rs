//! Reading one Ingress object: whether its class is ours, its
//! ingress-nginx annotations, how weir speaks to its Services
//! (`backend-protocol` and `proxy-ssl-*`), its rules and default backend as
//! (host, path, pathType, Service port), and its TLS hosts.

use super::{ANN, Ingress, PathType, Rule};
use crate::import::{Backend, Skipped, TlsOut, Wire, dns_label, valid_host};
use serde_json::Value;
use std::collections::BTreeMap;

/// `Service` ports by (namespace, name, port name).
type Ports = BTreeMap<(String, String, String), u16>;

/// One Ingress as its annotations, rules and TLS hosts; None (listed) when
/// it is of another class or its backends speak what weir cannot.
pub(super) fn read_ingress(
    o: &Value,
    class: &str,
    ports: &Ports,
    (skipped, files): (&mut Vec<Skipped>, &mut Vec<String>),
) -> Option<Ingress> {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = o["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let id = format!("Ingress {ns}/{name}");
    if of_other_class(o, class, &id, skipped) {
        return None;
    }
    let ann = nginx_annotations(o);
    // A canary Ingress's own backend-protocol is ignored (ingress-nginx
    // keeps the primary's location); its Service gets the primary's wire
    // when the two are paired.
    let wire = if ann.get("canary").is_some_and(|v| v == "true") {
        Wire::default()
    } else {
        backend_wire(&ann, &id, skipped, files)?
    };
    let backends = Backends { ns: &ns, id: &id, ports, wire };
    let mut rules = read_rules(o, &backends, skipped);
    // v1beta1 called it `backend`.
    let default =
        if o["spec"]["defaultBackend"].is_null() { &o["spec"]["backend"] } else { &o["spec"]["defaultBackend"] };
    if !default.is_null()
        && let Some(backend) = backends.read(default, "spec.defaultBackend", skipped)
    {
        // What the Ingress serves for any path of any host it has no rule for.
        rules.push(Rule { host: String::new(), path: "/".into(), kind: PathType::Prefix, backend });
    }
    let tls_hosts = tls_hosts(o, &id, skipped);
    Some(Ingress { ns, name, ann, rules, tls_hosts })
}

/// Whether the Ingress names another class than `class` (listed: not
/// imported). One that names none is ours.
fn of_other_class(o: &Value, class: &str, id: &str, skipped: &mut Vec<Skipped>) -> bool {
    let annotations = o["metadata"]["annotations"].as_object();
    let their_class = o["spec"]["ingressClassName"]
        .as_str()
        .or_else(|| annotations.and_then(|a| a.get("kubernetes.io/ingress.class")).and_then(Value::as_str));
    if their_class.is_some_and(|c| c != class) {
        skipped.push(Skipped {
            object: id.to_owned(),
            what: "ingressClassName".into(),
            why: format!("class {:?}, not {class:?}: not imported", their_class.unwrap_or_default()),
        });
        return true;
    }
    false
}

/// The `nginx.ingress.kubernetes.io/` annotations by their short name, each
/// value as text.
fn nginx_annotations(o: &Value) -> BTreeMap<String, String> {
    let mut ann = BTreeMap::new();
    for (k, v) in o["metadata"]["annotations"].as_object().into_iter().flatten() {
        if let Some(short) = k.strip_prefix(ANN) {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            ann.insert(short.to_owned(), v);
        }
    }
    ann
}

/// `spec.rules[].http.paths[]` with a valid host, pathType, path and
/// backend (the others listed).
fn read_rules(o: &Value, backends: &Backends<'_>, skipped: &mut Vec<Skipped>) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (i, rule) in o["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
        let host = rule["host"].as_str().unwrap_or("").to_ascii_lowercase();
        if !host.is_empty() && !valid_host(&host) {
            skipped.push(Skipped {
                object: backends.id.to_owned(),
                what: format!("spec.rules[{i}].host"),
                why: format!("{host:?} is not a DNS name or *.suffix"),
            });
            continue;
        }
        for (j, p) in rule["http"]["paths"].as_array().into_iter().flatten().enumerate() {
            let what = format!("spec.rules[{i}].http.paths[{j}]");
            if let Some((kind, path)) = read_path(p, backends.id, &what, skipped)
                && let Some(backend) = backends.read(&p["backend"], &what, skipped)
            {
                rules.push(Rule { host: host.clone(), path, kind, backend });
            }
        }
    }
    rules
}

/// A path entry's pathType and path, or None (listed) when either is not
/// one ingress-nginx serves.
fn read_path(p: &Value, id: &str, what: &str, skipped: &mut Vec<Skipped>) -> Option<(PathType, String)> {
    let Some(kind) = PathType::parse(p["pathType"].as_str()) else {
        skipped.push(Skipped {
            object: id.to_owned(),
            what: what.to_owned(),
            why: format!("unknown pathType {}", p["pathType"]),
        });
        return None;
    };
    let path = p["path"].as_str().unwrap_or("/").to_owned();
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        skipped.push(Skipped {
            object: id.to_owned(),
            what: what.to_owned(),
            why: format!("path {path:?} does not start with /"),
        });
        return None;
    }
    Some((kind, path))
}

/// `spec.tls[].hosts` in lower case; a TLS section is listed, as the
/// certificates are weir's listener's.
fn tls_hosts(o: &Value, id: &str, skipped: &mut Vec<Skipped>) -> Vec<String> {
    let hosts = o["spec"]["tls"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["hosts"].as_array().into_iter().flatten().filter_map(Value::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    if o["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty()) {
        skipped.push(Skipped {
            object: id.to_owned(),
            what: "spec.tls".into(),
            why: "TLS is weir's listener's job: put the Secret's tls.crt and tls.key in listen[].tls.certs".into(),
        });
    }
    hosts
}

/// What an Ingress's backends share: its namespace, the Service ports of
/// the input, and how weir speaks to its Services.
struct Backends<'a> {
    ns: &'a str,
    id: &'a str,
    ports: &'a Ports,
    wire: Wire,
}

impl Backends<'_> {
    /// A backend as the Service port it sends to, or None (listed) when it
    /// is not a Service with a port weir can resolve.
    fn read(&self, b: &Value, what: &str, skipped: &mut Vec<Skipped>) -> Option<Backend> {
        let ns = self.ns;
        let skip = |skipped: &mut Vec<Skipped>, why: String| {
            skipped.push(Skipped { object: self.id.to_owned(), what: what.into(), why });
        };
        let v1beta1 = service_v1beta1(b);
        let svc = v1beta1.as_ref().unwrap_or(&b["service"]);
        if !dns_label(ns) {
            skip(skipped, format!("namespace {ns:?} is not a DNS label"));
            return None;
        }
        let Some(service) = svc["name"].as_str().filter(|s| dns_label(s)) else {
            skip(skipped, "backend is not a Service (resource backends are not supported)".into());
            return None;
        };
        let port = match (svc["port"]["number"].as_u64(), svc["port"]["name"].as_str()) {
            (Some(n), _) => u16::try_from(n).ok(),
            (None, Some(pn)) => match self.ports.get(&(ns.to_owned(), service.to_owned(), pn.to_owned())) {
                Some(p) => Some(*p),
                None => {
                    skip(
                        skipped,
                        format!(
                            "port name {pn:?} of Service {ns}/{service} not found: add the Service to the input, or use a port number"
                        ),
                    );
                    return None;
                }
            },
            (None, None) => None,
        };
        let Some(port) = port.filter(|p| *p > 0) else {
            skip(skipped, "backend without a valid port".into());
            return None;
        };
        Some(Backend { ns: ns.to_owned(), service: service.to_owned(), port, wire: self.wire.clone() })
    }
}

/// networking.k8s.io/v1beta1's `serviceName` and `servicePort` (a number or
/// a port name) as v1's `service: {name, port}`; None for a v1 backend.
fn service_v1beta1(b: &Value) -> Option<Value> {
    if !b["serviceName"].is_string() {
        return None;
    }
    Some(match &b["servicePort"] {
        Value::String(name) => serde_json::json!({"name": b["serviceName"], "port": {"name": name}}),
        port => serde_json::json!({"name": b["serviceName"], "port": {"number": port}}),
    })
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
