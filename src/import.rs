//! `weir import`: a weir config from what a cluster already has — the
//! canary annotations of ingress-nginx Ingresses (`ingress_nginx`) and
//! Gateway API HTTPRoutes (`gateway_api`).
//!
//! The output is YAML text with comments that say where each route came
//! from and what weir does differently; whatever cannot be translated is
//! listed (object and annotation or field), never silently dropped. The
//! caller checks the output with `config::validate` like any config.

pub mod cli;
pub mod gateway_api;
pub mod ingress_nginx;

/// Something of the input that the output does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `Kind namespace/name`.
    pub object: String,
    /// The annotation or field.
    pub what: String,
    pub why: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.what, self.why)
    }
}

/// What an import produced.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The weir config, ready for `weir check` once `files` exist.
    pub yaml: String,
    pub routes: usize,
    pub skipped: Vec<Skipped>,
    /// Files the config names that the cluster holds and the import cannot
    /// write (a CA bundle from a ConfigMap), relative to the config file's
    /// directory; each is also listed in `skipped` with where it comes from.
    pub files: Vec<String>,
}

/// Check an import's output as `weir check` would, except that the files
/// it names for the operator to provide may be missing yet.
pub fn check(imported: &Imported, base: &std::path::Path) -> Result<(), Vec<crate::config::Problem>> {
    match crate::config::validate(imported.yaml.as_bytes(), base) {
        Ok(_) => Ok(()),
        Err(problems) => {
            let missing = |p: &crate::config::Problem| {
                imported.files.iter().any(|f| p.message.starts_with(&format!("cannot read {}", base.join(f).display())))
            };
            let left: Vec<_> = problems.into_iter().filter(|p| !missing(p)).collect();
            if left.is_empty() { Ok(()) } else { Err(left) }
        }
    }
}

/// How weir speaks to a Service port: `protocol` (None: HTTP/1.1, the
/// default) and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Wire {
    pub protocol: Option<&'static str>,
    pub tls: Option<TlsOut>,
}

/// `upstreams.X.tls` as the import writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TlsOut {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// A Service port a route sends to, named as a weir upstream.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Backend {
    pub ns: String,
    pub service: String,
    pub port: u16,
    pub wire: Wire,
}

impl Backend {
    /// The upstream's name; the same Service port spoken to another way is
    /// another upstream.
    pub fn upstream(&self) -> String {
        let base = format!("{}-{}-{}", self.service, self.ns, self.port);
        match (self.wire.protocol, &self.wire.tls) {
            (None, None) => base,
            (Some(p), None) => format!("{base}-{p}"),
            (p, Some(_)) => format!("{base}-{}-tls", p.unwrap_or("http1")),
        }
    }

    /// `endpoints` and, when not the defaults, `protocol` and `tls`.
    pub fn spec(&self) -> String {
        let mut out = format!("endpoints: [{}]", q(&self.endpoint()));
        if let Some(p) = self.wire.protocol {
            out.push_str(&format!(", protocol: {p}"));
        }
        if let Some(t) = &self.wire.tls {
            let mut parts = Vec::new();
            if let Some(ca) = &t.ca_file {
                parts.push(format!("ca_file: {}", q(ca)));
            }
            if let Some(n) = &t.server_name {
                parts.push(format!("server_name: {}", q(n)));
            }
            if t.insecure_skip_verify {
                parts.push("insecure_skip_verify: true".into());
            }
            out.push_str(&format!(", tls: {{{}}}", parts.join(", ")));
        }
        out
    }

    pub fn endpoint(&self) -> String {
        format!("{}.{}.svc.cluster.local:{}", self.service, self.ns, self.port)
    }
}

/// The whole config: `header` comment lines, defaults for listen and admin,
/// every upstream (Services and extra `name → host:port`), then the routes.
pub(crate) fn config_text(
    header: &[&str],
    upstreams: &std::collections::BTreeSet<Backend>,
    extra: &std::collections::BTreeMap<String, String>,
    routes: &str,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for line in header {
        let _ = writeln!(out, "#{}{line}", if line.is_empty() { "" } else { " " });
    }
    let _ = writeln!(out, "listen: [{{address: \"0.0.0.0:8080\"}}]");
    let _ = writeln!(out, "admin: {{address: \"127.0.0.1:9901\"}}");
    let _ = writeln!(out, "upstreams:{}", if upstreams.is_empty() && extra.is_empty() { " {}" } else { "" });
    for b in upstreams {
        let _ = writeln!(out, "  {}: {{{}}}", q(&b.upstream()), b.spec());
    }
    for (name, endpoint) in extra {
        let _ = writeln!(out, "  {}: {{endpoints: [{}]}}", q(name), q(endpoint));
    }
    if routes.is_empty() {
        let _ = writeln!(out, "routes: []");
    } else {
        let _ = writeln!(out, "routes:");
        out.push_str(routes);
    }
    out
}

/// The Kubernetes objects of a YAML stream: multi-document, and `kind: List`
/// (what `kubectl get … -o yaml` prints) unpacked.
pub fn objects(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in docs {
        match d.get("items").and_then(serde_json::Value::as_array) {
            Some(items) if d.get("kind").and_then(serde_json::Value::as_str).is_some_and(|k| k.ends_with("List")) => {
                out.extend(items.iter().cloned());
            }
            _ if d.is_null() => {}
            _ => out.push(d),
        }
    }
    Ok(out)
}

/// The objects with each (kind, namespace, name) kept once: its last
/// occurrence, as `kubectl apply -f` leaves it (each is applied in turn),
/// in the order of those last occurrences.
pub(crate) fn latest(objects: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    let key = |o: &serde_json::Value| {
        (
            o["kind"].as_str().unwrap_or("").to_owned(),
            o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
            o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let mut last = std::collections::HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        last.insert(key(o), i);
    }
    objects.iter().enumerate().filter(|(i, o)| last.get(&key(o)) == Some(i)).map(|(_, o)| o).collect()
}

/// `want`, or `want-2`, `want-3`… whichever no route has yet (taken).
pub(crate) fn fresh(names: &mut std::collections::BTreeSet<String>, want: &str) -> String {
    let mut name = want.to_owned();
    let mut n = 2;
    while names.contains(&name) {
        name = format!("{want}-{n}");
        n += 1;
    }
    names.insert(name.clone());
    name
}

/// A string as a YAML scalar (JSON strings are valid YAML).
pub(crate) fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A lower-case DNS name, or `*.` and one.
pub(crate) fn valid_host(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty() && name.len() <= 253 && name.split('.').all(dns_label)
}

/// A DNS-1123 label: `a-z`, `0-9`, `-` inside, at most 63.
pub(crate) fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An HTTP token (header and cookie names).
pub(crate) fn token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Slug for route and upstream names: lower-case letters, digits, `.`, `-`.
pub(crate) fn slug(parts: &[&str]) -> String {
    let raw = parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("-");
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').to_owned()
}
