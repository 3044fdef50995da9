//! How weir speaks to a Gateway API backend: the Service port's
//! `appProtocol` (GEP-1911: `kubernetes.io/h2c`, `kubernetes.io/ws`), the
//! route's kind (a GRPCRoute's backends speak HTTP/2), and a
//! BackendTLSPolicy that targets the Service (TLS, the name to verify, the
//! CA: HTTP/2 over TLS for an HTTP/2 backend, HTTP/1.1 over TLS otherwise). What weir cannot speak makes the backend unusable, and the rule
//! that sends to it is not imported.

use crate::import::{Backend, Skipped, TlsOut, Wire, q};
use serde_json::Value;

/// The Services and BackendTLSPolicies of the input.
pub(super) struct Cluster<'a> {
    services: Vec<&'a Value>,
    policies: Vec<&'a Value>,
    /// Gateways (their listeners say which routes are plain HTTP or TLS).
    pub gateways: Vec<&'a Value>,
}

/// What resolving a backend's wire found beyond the wire itself.
#[derive(Default)]
pub(super) struct Found {
    /// Notes for the operator (listed as not translated).
    pub notes: Vec<Skipped>,
    /// Files the config names that the operator provides.
    pub files: Vec<String>,
}

impl<'a> Cluster<'a> {
    pub fn of(objects: &'a [Value]) -> Self {
        let kind = |k: &'static str| objects.iter().filter(move |o| o["kind"] == k);
        Self {
            services: kind("Service").collect(),
            policies: kind("BackendTLSPolicy").collect(),
            gateways: kind("Gateway").collect(),
        }
    }

    /// The Service port `b` names: its name and `appProtocol`, when the
    /// Service is in the input.
    fn port(&self, b: &Backend) -> Option<&'a Value> {
        let svc = self.services.iter().find(|s| {
            s["metadata"]["name"].as_str() == Some(&b.service)
                && s["metadata"]["namespace"].as_str().unwrap_or("default") == b.ns
        })?;
        svc["spec"]["ports"].as_array()?.iter().find(|p| p["port"].as_u64() == Some(u64::from(b.port)))
    }

    /// The oldest BackendTLSPolicy (then by name) that targets this
    /// Service, or this port of it by name (`sectionName`).
    fn policy(&self, b: &Backend, port_name: Option<&str>) -> Option<&'a Value> {
        let mut fits: Vec<&&Value> = self
            .policies
            .iter()
            .filter(|p| p["metadata"]["namespace"].as_str().unwrap_or("default") == b.ns)
            .filter(|p| {
                p["spec"]["targetRefs"].as_array().into_iter().flatten().any(|t| {
                    t["group"].as_str().unwrap_or("").is_empty()
                        && t["kind"].as_str() == Some("Service")
                        && t["name"].as_str() == Some(&b.service)
                        && t["sectionName"].as_str().is_none_or(|s| Some(s) == port_name)
                })
            })
            .collect();
        fits.sort_by_key(|p| {
            (
                p["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_owned(),
                p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        });
        fits.first().map(|p| **p)
    }

    /// The wire for `b` as a backend of a route of `kind`, or why weir
    /// cannot reach it as the Gateway would.
    pub fn wire(&self, b: &Backend, kind: &str, found: &mut Found) -> Result<Wire, String> {
        let port = self.port(b);
        let port_name = port.and_then(|p| p["name"].as_str());
        let h2c = speaks_h2c(b, port.and_then(|p| p["appProtocol"].as_str()), kind == "GRPCRoute")?;
        let Some(policy) = self.policy(b, port_name) else {
            return Ok(Wire { protocol: h2c.then_some("h2c"), tls: None });
        };
        let pid = format!(
            "BackendTLSPolicy {}/{}",
            policy["metadata"]["namespace"].as_str().unwrap_or("default"),
            policy["metadata"]["name"].as_str().unwrap_or("")
        );
        let v = &policy["spec"]["validation"];
        let hostname = verified_name(v, &pid)?;
        let ca_file = ca_file(v, &pid, b, found)?;
        if policy["spec"]["options"].as_object().is_some_and(|o| !o.is_empty()) {
            note(found, &pid, "spec.options", "not translated (weir's TLS client has no such options)");
        }
        // HTTP/2 over TLS for an h2c port (ALPN h2); HTTP/1.1 over TLS
        // otherwise (ALPN http/1.1).
        Ok(Wire {
            protocol: h2c.then_some("h2"),
            tls: Some(TlsOut { ca_file, server_name: Some(hostname.to_owned()), insecure_skip_verify: false }),
        })
    }
}

/// Whether the backend speaks HTTP/2 (else HTTP/1.1), from its port's
/// `appProtocol` (none: a GRPCRoute's backends do); Err when it speaks
/// something weir does not, or a GRPCRoute's backend does not speak HTTP/2.
fn speaks_h2c(b: &Backend, app: Option<&str>, grpc: bool) -> Result<bool, String> {
    let h2c = match app {
        Some("kubernetes.io/h2c") => true,
        Some("kubernetes.io/ws" | "http" | "HTTP") => false,
        None => grpc,
        Some(other) => {
            return Err(format!(
                "Service {}/{} port {} has appProtocol {other:?}, which weir does not speak to upstreams",
                b.ns, b.service, b.port
            ));
        }
    };
    if grpc && !h2c {
        return Err(format!(
            "Service {}/{} port {} says appProtocol {:?}: a GRPCRoute needs HTTP/2",
            b.ns,
            b.service,
            b.port,
            app.unwrap_or_default()
        ));
    }
    Ok(h2c)
}

/// The name the policy's `validation` verifies: its hostname, which
/// subjectAltNames may only repeat (weir verifies the name it sends).
fn verified_name<'v>(v: &'v Value, pid: &str) -> Result<&'v str, String> {
    let hostname = v["hostname"].as_str().filter(|h| crate::import::valid_host(h) && !h.starts_with("*."));
    let Some(hostname) = hostname else {
        return Err(format!("{pid}: spec.validation.hostname is missing or not a DNS name"));
    };
    // subjectAltNames replace the hostname for verification; weir
    // verifies the name it sends, so only that one SAN can be kept.
    let sans = v["subjectAltNames"].as_array().map(Vec::as_slice).unwrap_or_default();
    let same_name = |s: &Value| s["type"] == "Hostname" && s["hostname"].as_str() == Some(hostname);
    let kept = match sans {
        [] => true,
        [one] => same_name(one),
        _ => false,
    };
    if !kept {
        return Err(format!(
            "{pid}: spec.validation.subjectAltNames other than the hostname itself cannot be verified by weir"
        ));
    }
    Ok(hostname)
}

/// The CA the policy's `validation` trusts: None for the system roots
/// (noted), or the file the operator writes a ConfigMap's `ca.crt` to.
fn ca_file(v: &Value, pid: &str, b: &Backend, found: &mut Found) -> Result<Option<String>, String> {
    let refs = v["caCertificateRefs"].as_array().map(Vec::as_slice).unwrap_or_default();
    match (v["wellKnownCACertificates"].as_str(), refs) {
        (Some("System"), []) => {
            note(
                found,
                pid,
                "spec.validation.wellKnownCACertificates",
                "System: weir trusts the Mozilla root set it is built with (webpki-roots), not the node's store",
            );
            Ok(None)
        }
        (None, [r]) if r["kind"] == "ConfigMap" && r["group"].as_str().unwrap_or("").is_empty() => {
            let name = r["name"]
                .as_str()
                .filter(|n| crate::import::dns_label(n))
                .ok_or_else(|| format!("{pid}: spec.validation.caCertificateRefs[0] does not name a ConfigMap"))?;
            let path = format!("ca/{}/{name}/ca.crt", b.ns);
            note(
                found,
                pid,
                "spec.validation.caCertificateRefs[0]",
                &format!(
                    "write ConfigMap {}/{name}'s ca.crt to {} next to the config (mount it there); weir reads it at load",
                    b.ns,
                    q(&path)
                ),
            );
            if !found.files.contains(&path) {
                found.files.push(path.clone());
            }
            Ok(Some(path))
        }
        _ => Err(format!(
            "{pid}: spec.validation needs one ConfigMap in caCertificateRefs or wellKnownCACertificates System"
        )),
    }
}

fn note(found: &mut Found, object: &str, what: &str, why: &str) {
    let s = Skipped { object: object.to_owned(), what: what.to_owned(), why: why.to_owned() };
    if !found.notes.contains(&s) {
        found.notes.push(s);
    }
}
