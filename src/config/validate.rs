//! Checks a raw config and compiles it into a `Snapshot`, collecting every
//! problem (with its field path) instead of stopping at the first.

use super::raw::{RawConfig, SizeValue};
use super::{DEFAULT_ADMIN, Limits, Problem, Shutdown, Snapshot, sha256_hex};
use crate::routing::Table;
use crate::units::{parse_duration, parse_size, weight_to_bp};
use http::HeaderName;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod analysis;
mod edge;
mod matching;
mod operations;
mod route;
mod upstreams;

use operations::{compile_journal, compile_notify};
use route::compile_route;
use upstreams::compile_upstreams;

/// Collects problems while walking the config.
#[derive(Default)]
pub(super) struct Problems(Vec<Problem>, Vec<Problem>);

impl Problems {
    fn at(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), location: None, message: message.into() });
    }

    /// Not an error: the file loads, and the warning is printed and logged.
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.1.push(Problem { path: path.into(), location: None, message: message.into() });
    }

    fn duration(&mut self, path: &str, v: Option<&String>, default: Duration) -> Duration {
        match v.map(|s| parse_duration(s)) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.at(path, e);
                default
            }
        }
    }

    fn size(&mut self, path: &str, v: Option<&SizeValue>, default: u64) -> u64 {
        match v {
            None => default,
            Some(SizeValue::Bytes(b)) => *b,
            Some(SizeValue::Text(s)) => parse_size(s).unwrap_or_else(|e| {
                self.at(path, e);
                default
            }),
        }
    }

    fn weight(&mut self, path: &str, w: f64) -> u16 {
        weight_to_bp(w).unwrap_or_else(|e| {
            self.at(path, e);
            0
        })
    }
}

/// Parse and validate config bytes; `base` resolves relative file paths.
pub fn validate(bytes: &[u8], base: &Path) -> Result<Snapshot, Vec<Problem>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| vec![Problem { path: String::new(), location: None, message: format!("not UTF-8: {e}") }])?;
    // YAML 1.2 booleans only: under YAML 1.1 rules `NO` (Norway) in a market
    // list would silently become `false`.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let raw: RawConfig = serde_saphyr::from_str_with_options(text, options).map_err(|e| vec![syntax_problem(&e)])?;
    let mut p = Problems::default();
    let mut snapshot = compile(raw, base, sha256_hex(bytes), &mut p);
    snapshot.warnings = std::mem::take(&mut p.1);
    if p.0.is_empty() { Ok(snapshot) } else { Err(p.0) }
}

fn syntax_problem(e: &serde_saphyr::Error) -> Problem {
    let location = e.location().map(|l| (l.line(), l.column()));
    // The first line is "error: line L column C: <what>"; we print the
    // location ourselves, so keep <what> and the snippet that follows.
    let full = e.to_string();
    let (first, rest) = full.split_once('\n').unwrap_or((full.as_str(), ""));
    let what = first.strip_prefix("error: ").unwrap_or(first);
    let what = match what.strip_prefix("line ") {
        Some(after) => after.split_once(": ").map_or(what, |(_, w)| w),
        None => what,
    };
    let message = if rest.is_empty() { what.to_string() } else { format!("{what}\n{rest}") };
    Problem { path: String::new(), location, message }
}

fn compile(raw: RawConfig, base: &Path, sha256: String, p: &mut Problems) -> Snapshot {
    if raw.listen.is_empty() {
        p.at("listen", "at least one listener is required");
    }
    let mut listen = Vec::new();
    let mut tls = Vec::new();
    let mut proxy_protocol = Vec::new();
    for (i, l) in raw.listen.iter().enumerate() {
        let t = l.tls.as_ref().and_then(|t| compile_tls(t, &format!("listen[{i}].tls"), base, p));
        match l.address.parse::<SocketAddr>() {
            Ok(a) if listen.contains(&a) && a.port() != 0 => {
                p.at(format!("listen[{i}].address"), format!("{a} is listed twice"));
            }
            Ok(a) => {
                listen.push(a);
                tls.push(t);
                proxy_protocol.push(l.proxy_protocol.unwrap_or(false));
            }
            Err(_) => p.at(format!("listen[{i}].address"), format!("`{}` is not an ip:port", l.address)),
        }
    }
    let admin_text = raw.admin.as_ref().and_then(|a| a.address.clone());
    let admin = admin_text.as_deref().unwrap_or(DEFAULT_ADMIN).parse::<SocketAddr>().unwrap_or_else(|_| {
        p.at("admin.address", "not an ip:port");
        SocketAddr::from(([127, 0, 0, 1], 9901))
    });
    if admin.port() != 0 && listen.contains(&admin) {
        p.at("admin.address", format!("{admin} conflicts with a proxy listener"));
    }
    let admin_token_file = raw.admin.as_ref().and_then(|a| a.token_file.as_deref()).map(|f| resolve(base, f));
    if let Some(f) = &admin_token_file
        && let Err(why) = crate::files::read_token(f)
    {
        p.at("admin.token_file", why);
    }
    let limits = compile_limits(&raw, p);
    let shutdown = Shutdown {
        delay: p.duration("shutdown.delay", raw.shutdown.as_ref().and_then(|s| s.delay.as_ref()), Duration::ZERO),
        grace: p.duration(
            "shutdown.grace",
            raw.shutdown.as_ref().and_then(|s| s.grace.as_ref()),
            Duration::from_secs(30),
        ),
    };
    let upstreams = compile_upstreams(&raw, base, p);
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !names.insert(r.name.as_str()) {
            p.at(format!("{path}.name"), format!("duplicate route name `{}`", r.name));
        }
        if let Some(route) = compile_route(r, &path, &upstreams, base, p) {
            routes.push(route);
        }
    }
    Snapshot {
        sha256,
        listen,
        tls,
        admin,
        admin_token_file,
        state_dir: resolve(base, raw.state_dir.as_deref().unwrap_or("weir-state")),
        journal: compile_journal(&raw, p),
        notify: raw
            .notify
            .iter()
            .enumerate()
            .filter_map(|(i, n)| compile_notify(n, &format!("notify[{i}]"), base, p))
            .collect(),
        limits,
        shutdown,
        access_log: raw.access_log.unwrap_or(true),
        proxy_protocol,
        real_ip: raw.real_ip.as_ref().and_then(|r| edge::compile_real_ip(r, p)).map(Arc::new),
        upstreams: upstreams.into(),
        table: Table::new(routes),
        warnings: Vec::new(),
    }
}

fn compile_limits(raw: &RawConfig, p: &mut Problems) -> Limits {
    let d = Limits::default();
    let Some(l) = &raw.limits else { return d };
    let count = |p: &mut Problems, name: &str, v: Option<u64>, def: usize, min: u64| match v {
        None => def,
        Some(n) if n < min => {
            p.at(format!("limits.{name}"), format!("must be at least {min}"));
            def
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let header_bytes = p.size("limits.max_header_bytes", l.max_header_bytes.as_ref(), d.max_header_bytes as u64);
    if header_bytes < 8192 {
        p.at("limits.max_header_bytes", "must be at least 8KiB");
    }
    Limits {
        header_read_timeout: p.duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_ref(),
            d.header_read_timeout,
        ),
        body_timeout: {
            let t = p.duration("limits.body_timeout", l.body_timeout.as_ref(), d.body_timeout);
            if t.is_zero() {
                p.at("limits.body_timeout", "must be more than 0s");
            }
            t
        },
        idle_timeout: {
            let t = p.duration("limits.idle_timeout", l.idle_timeout.as_ref(), d.idle_timeout);
            if t < Duration::from_secs(1) {
                p.at("limits.idle_timeout", "must be at least 1s");
            }
            t
        },
        max_headers: count(p, "max_headers", l.max_headers, d.max_headers, 1),
        max_header_bytes: usize::try_from(header_bytes.max(8192)).unwrap_or(usize::MAX),
        max_request_body: p.size("limits.max_request_body", l.max_request_body.as_ref(), d.max_request_body),
        max_connections: count(p, "max_connections", l.max_connections, d.max_connections, 1),
        max_in_flight: count(p, "max_in_flight", l.max_in_flight, d.max_in_flight, 1),
    }
}

fn is_label_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn compile_tls(t: &super::raw::RawTls, path: &str, base: &Path, p: &mut Problems) -> Option<Arc<crate::tls::Tls>> {
    if t.certs.is_empty() {
        p.at(format!("{path}.certs"), "list at least one {cert, key} pair");
        return None;
    }
    let certs: Vec<crate::tls::CertPaths> =
        t.certs.iter().map(|c| crate::tls::CertPaths { cert: base.join(&c.cert), key: base.join(&c.key) }).collect();
    let required = match t.client_auth.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            p.at(format!("{path}.client_auth"), format!("`{other}`: use `required` or `optional`"));
            return None;
        }
    };
    let client_auth = match (&t.client_ca, &t.client_auth) {
        (Some(ca), _) => Some(crate::tls::ClientAuthPaths { ca: base.join(ca), required }),
        (None, Some(_)) => {
            p.at(format!("{path}.client_auth"), "needs `client_ca`, the CA that signs the client certificates");
            return None;
        }
        (None, None) => None,
    };
    match crate::tls::load(&certs, client_auth.as_ref()) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(problems) => {
            for e in problems {
                if e.field == "client_ca" {
                    p.at(format!("{path}.client_ca"), e.message);
                } else {
                    p.at(format!("{path}.certs[{}].{}", e.index, e.field), e.message);
                }
            }
            None
        }
    }
}

fn header_name(path: &str, h: &str, p: &mut Problems) -> Option<HeaderName> {
    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
        .map_err(|_| p.at(path, format!("`{h}` is not a valid header name")))
        .ok()
}

fn resolve(base: &Path, f: &str) -> PathBuf {
    let path = Path::new(f);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}
