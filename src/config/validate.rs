//! Checks a raw config and compiles it into a `Snapshot`, collecting every
//! problem (with its field path) instead of stopping at the first.

use super::raw::{RawConfig, RawProgression, RawRoute, RawShadow, RawWebsocket, SizeValue};
use super::{
    DEFAULT_ADMIN, Limits, Problem, Progression, Shadow, Shutdown, Snapshot, UpstreamSpec, WebSocketPolicy, sha256_hex,
};
use crate::routing::{Backend, BucketCookie, HostMatch, KeySource, Override, Route, Segment, Sticky, Table};
use crate::units::{parse_duration, parse_rate, parse_size, weight_to_bp};
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
mod upstreams;

use analysis::compile_analysis;
use matching::{compile_path, compile_segment_match};
use operations::{compile_journal, compile_notify};
use upstreams::compile_upstreams;

/// Round-trip probe period when `max_ws_rtt_p95` is set and
/// `websocket.rtt_interval` is not.
const DEFAULT_RTT_INTERVAL: Duration = Duration::from_secs(5);

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
        upstreams,
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

fn backend(path: &str, v: &super::raw::RawVersion, ups: &[UpstreamSpec], p: &mut Problems) -> Option<Backend> {
    let modifiers = edge::compile_modifiers(v.request_headers.as_ref(), v.response_headers.as_ref(), path, p);
    match ups.iter().position(|u| *u.name == v.upstream) {
        Some(idx) => Some(Backend {
            upstream: idx,
            upstream_name: Arc::from(v.upstream.as_str()),
            revision: Arc::from(v.revision.as_deref().unwrap_or("")),
            modifiers: (!modifiers.is_empty()).then(|| Arc::new(modifiers)),
        }),
        None => {
            p.at(format!("{path}.upstream"), format!("unknown upstream `{}`", v.upstream));
            None
        }
    }
}

/// A redirect route's stand-in backend: it sends nothing upstream, and an
/// index no upstream has finds none.
fn no_backend() -> Backend {
    Backend { upstream: usize::MAX, upstream_name: Arc::from("-"), revision: Arc::from(""), modifiers: None }
}

fn compile_route(r: &RawRoute, path: &str, ups: &[UpstreamSpec], base: &Path, p: &mut Problems) -> Option<Route> {
    if !is_label_safe(&r.name) {
        p.at(format!("{path}.name"), "names may use letters, digits, `-`, `_` and `.` only");
    }
    let hosts = compile_hosts(r, path, p);
    let path_match = compile_path(r.match_.as_ref(), &format!("{path}.match"), p);
    let filter = edge::compile_filter(r.match_.as_ref(), &format!("{path}.match"), p);
    let edge = edge::compile_edge(r, path, &path_match, &filter, p);
    let stable = match (&r.stable, &r.redirect) {
        (Some(s), None) => backend(&format!("{path}.stable"), s, ups, p),
        (_, Some(_)) => Some(no_backend()),
        (None, None) => {
            p.at(format!("{path}.stable"), "required (only a `redirect` route has no upstream)");
            None
        }
    };
    let canary = r.canary.as_ref().and_then(|c| backend(&format!("{path}.canary"), c, ups, p));
    let weight_bp = p.weight(&format!("{path}.weight"), r.weight.unwrap_or(0.0));
    if r.canary.is_none() && (weight_bp > 0 || !r.segments.is_empty() || r.override_.is_some()) {
        p.at(path, "weight, segments and override need a `canary`");
    }
    let sticky = r.sticky.as_ref().and_then(|s| compile_sticky(s, &r.name, &format!("{path}.sticky"), base, p));
    let override_ = r.override_.as_ref().map(|o| {
        if o.header.is_none() && o.cookie.is_none() {
            p.at(format!("{path}.override"), "set `header`, `cookie` or both");
        }
        Override {
            header: o.header.as_ref().and_then(|h| header_name(&format!("{path}.override.header"), h, p)),
            cookie: o.cookie.clone(),
        }
    });
    let mut seg_names = HashSet::new();
    let segments = r
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let sp = format!("{path}.segments[{i}]");
            if !seg_names.insert(s.name.as_str()) {
                p.at(format!("{sp}.name"), format!("duplicate segment name `{}`", s.name));
            }
            Segment {
                name: s.name.clone(),
                matchers: compile_segment_match(&s.match_, &format!("{sp}.match"), p),
                weight_bp: p.weight(&format!("{sp}.weight"), s.weight),
            }
        })
        .collect();
    let analysis = r.analysis.as_ref().map(|a| Arc::new(compile_analysis(a, &format!("{path}.analysis"), p)));
    let progression =
        r.progression.as_ref().map(|g| Arc::new(compile_progression(g, &format!("{path}.progression"), p)));
    if r.canary.is_none() && (analysis.is_some() || progression.is_some()) {
        p.at(path, "analysis and progression need a `canary`");
    }
    let mut websocket =
        r.websocket.as_ref().map(|w| compile_websocket(w, &format!("{path}.websocket"), p)).unwrap_or_default();
    if analysis.as_ref().is_some_and(|a| a.max_ws_rtt_p95.is_some()) && websocket.rtt_interval.is_zero() {
        if r.websocket.as_ref().is_some_and(|w| w.rtt_interval.is_some()) {
            p.at(format!("{path}.websocket.rtt_interval"), "max_ws_rtt_p95 needs round-trip probes (more than 0s)");
        } else {
            websocket.rtt_interval = DEFAULT_RTT_INTERVAL;
        }
    }
    if progression.is_some() && analysis.as_ref().is_some_and(|a| a.mode == crate::config::AnalysisMode::Observe) {
        p.warn(format!("{path}.analysis.mode"), "observe never acts: progression stays on its first step");
    }
    if r.control == Some(crate::routing::policy::Control::External) && analysis.is_none() {
        p.warn(format!("{path}.control"), "control: external without `analysis`: nothing to judge or export");
    }
    if progression.is_some() && analysis.is_none() {
        p.at(format!("{path}.progression"), "progression needs `analysis`: steps advance only after a `pass`");
    }
    Some(Route {
        name: Arc::from(r.name.as_str()),
        name_header: http::HeaderValue::from_str(&r.name).unwrap_or_else(|_| http::HeaderValue::from_static("invalid")),
        hosts,
        path: path_match,
        filter,
        stable: stable?,
        canary,
        config_weight_bp: weight_bp,
        config_killed: r.kill_switch.unwrap_or(false),
        overlay: crate::routing::Overlay::of_config(weight_bp, r.kill_switch.unwrap_or(false)),
        analysis,
        progression,
        expose_version: r.expose_version.unwrap_or(false),
        shadow: r.shadow.as_ref().and_then(|sh| compile_shadow(sh, &format!("{path}.shadow"), ups, p)).map(Arc::new),
        websocket,
        control: r.control.unwrap_or_default(),
        sticky,
        override_,
        segments,
        grpc_errors: compile_grpc_errors(r, path, p),
        edge,
    })
}

/// `routes[i].grpc.error_codes` as a bit set (default: the server-side codes).
fn compile_grpc_errors(r: &RawRoute, path: &str, p: &mut Problems) -> u32 {
    let Some(g) = r.grpc.as_ref() else { return crate::labels::GRPC_DEFAULT_ERRORS };
    let mut mask = 0u32;
    for (i, c) in g.error_codes.iter().enumerate() {
        match crate::labels::grpc_code(c) {
            Some(0) => p.at(format!("{path}.grpc.error_codes[{i}]"), "OK is never an error"),
            Some(n) => mask |= 1 << n,
            None => p.at(format!("{path}.grpc.error_codes[{i}]"), format!("`{c}` is not a gRPC status code")),
        }
    }
    mask
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

fn compile_shadow(sh: &RawShadow, path: &str, ups: &[UpstreamSpec], p: &mut Problems) -> Option<Shadow> {
    let upstream = ups.iter().position(|u| *u.name == *sh.upstream);
    if upstream.is_none() {
        p.at(format!("{path}.upstream"), format!("unknown upstream `{}`", sh.upstream));
    }
    let percent_bp = p.weight(&format!("{path}.percent"), sh.percent.unwrap_or(100.0));
    let methods = match &sh.methods {
        None => vec![http::Method::GET, http::Method::HEAD],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                if upper == "CONNECT" || !upper.bytes().all(|b| b.is_ascii_uppercase()) || upper.is_empty() {
                    p.at(format!("{path}.methods[{i}]"), format!("`{m}` is not a method that can be mirrored"));
                    return None;
                }
                http::Method::from_bytes(upper.as_bytes()).ok()
            })
            .collect(),
    };
    let max_body = p.size(&format!("{path}.max_body"), sh.max_body.as_ref(), 64 * 1024);
    let max_in_flight = sh.max_in_flight.unwrap_or(100);
    if max_in_flight == 0 {
        p.at(format!("{path}.max_in_flight"), "must be at least 1");
    }
    let timeout = p.duration(&format!("{path}.timeout"), sh.timeout.as_ref(), Duration::from_secs(2));
    if timeout.is_zero() {
        p.at(format!("{path}.timeout"), "must be more than 0s");
    }
    Some(Shadow {
        upstream: upstream?,
        upstream_name: Arc::from(sh.upstream.as_str()),
        percent_bp,
        methods,
        max_body,
        max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
        timeout,
    })
}

fn compile_websocket(w: &RawWebsocket, path: &str, p: &mut Problems) -> WebSocketPolicy {
    let d = WebSocketPolicy::default();
    let close_on_rollback = match w.on_rollback.as_deref() {
        None | Some("close") => true,
        Some("keep") => false,
        Some(other) => {
            p.at(format!("{path}.on_rollback"), format!("`{other}` is not `close` or `keep`"));
            true
        }
    };
    let close_rate_per_s = match w.close_rate.as_deref().map(parse_rate) {
        None => d.close_rate_per_s,
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            p.at(format!("{path}.close_rate"), e);
            d.close_rate_per_s
        }
    };
    let idle_timeout = p.duration(&format!("{path}.idle_timeout"), w.idle_timeout.as_ref(), d.idle_timeout);
    let ping_interval = p.duration(&format!("{path}.ping_interval"), w.ping_interval.as_ref(), d.ping_interval);
    if idle_timeout < Duration::from_secs(1) {
        p.at(format!("{path}.idle_timeout"), "must be at least 1s");
    }
    if !ping_interval.is_zero() && ping_interval >= idle_timeout {
        p.at(format!("{path}.ping_interval"), "must be shorter than idle_timeout (0s turns pings off)");
    }
    let rtt_interval = p.duration(&format!("{path}.rtt_interval"), w.rtt_interval.as_ref(), d.rtt_interval);
    if !rtt_interval.is_zero() && rtt_interval < Duration::from_millis(100) {
        p.at(format!("{path}.rtt_interval"), "must be at least 100ms (0s turns round-trip probes off)");
    }
    WebSocketPolicy { close_on_rollback, close_rate_per_s, idle_timeout, ping_interval, rtt_interval }
}

fn compile_progression(g: &RawProgression, path: &str, p: &mut Problems) -> Progression {
    let steps: Vec<u16> =
        g.steps.iter().enumerate().map(|(i, w)| p.weight(&format!("{path}.steps[{i}]"), *w)).collect();
    if steps.is_empty() {
        p.at(format!("{path}.steps"), "list at least one step, e.g. [1, 5, 25, 100]");
    }
    if let Some(i) = steps.windows(2).position(|w| w[0] >= w[1]) {
        p.at(format!("{path}.steps[{}]", i + 1), "steps must increase strictly");
    }
    let hold = p.duration(&format!("{path}.hold"), g.hold.as_ref(), Duration::from_secs(300));
    Progression { steps, hold }
}

fn compile_hosts(r: &RawRoute, path: &str, p: &mut Problems) -> Vec<HostMatch> {
    let Some(m) = &r.match_ else { return Vec::new() };
    m.hosts
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let h = h.to_ascii_lowercase();
            let (suffix, name) = match h.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, h.as_str()),
            };
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            {
                p.at(format!("{path}.match.hosts[{i}]"), format!("`{h}` is not a host name or `*.suffix` (no ports)"));
                return None;
            }
            Some(if suffix { HostMatch::Suffix(format!(".{name}")) } else { HostMatch::Exact(name.to_string()) })
        })
        .collect()
}

fn header_name(path: &str, h: &str, p: &mut Problems) -> Option<HeaderName> {
    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
        .map_err(|_| p.at(path, format!("`{h}` is not a valid header name")))
        .ok()
}

fn compile_sticky(s: &super::raw::RawSticky, route: &str, path: &str, base: &Path, p: &mut Problems) -> Option<Sticky> {
    let keys = s
        .keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let kp = format!("{path}.keys[{i}]");
            match k.split_once(':') {
                Some(("header", h)) => header_name(&kp, h, p).map(KeySource::Header),
                Some(("cookie", c)) if !c.is_empty() => Some(KeySource::Cookie(c.to_string())),
                Some(("query", q)) if !q.is_empty() => Some(KeySource::Query(q.to_string())),
                _ => {
                    p.at(kp, format!("`{k}` must be header:NAME, cookie:NAME or query:NAME"));
                    None
                }
            }
        })
        .collect();
    let mut salt_sep = s.salt.as_deref().unwrap_or(route).as_bytes().to_vec();
    salt_sep.push(0x1f);
    let cookie = s.cookie.as_ref().and_then(|c| {
        let cp = format!("{path}.cookie");
        let max_age = p.duration(&format!("{cp}.max_age"), c.max_age.as_ref(), Duration::from_secs(30 * 86400));
        let secret = match &c.secret_file {
            None => None,
            Some(f) => match crate::files::read_capped(&resolve(base, f), crate::files::MAX_SECRET) {
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        bytes.pop();
                    }
                    Some(bytes)
                }
                Err(e) => {
                    p.at(format!("{cp}.secret_file"), format!("cannot read {f}: {e}"));
                    return None;
                }
            },
        };
        let name = c.name.clone().unwrap_or_else(|| "weir_bucket".into());
        if !is_label_safe(&name) {
            p.at(format!("{cp}.name"), "cookie names may use letters, digits, `-`, `_` and `.` only");
        }
        BucketCookie::new(name, max_age.as_secs(), secret.as_deref())
            .map_err(|e| p.at(format!("{cp}.secret_file"), e))
            .ok()
    });
    Some(Sticky { keys, salt_sep, cookie })
}

fn resolve(base: &Path, f: &str) -> PathBuf {
    let path = Path::new(f);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}
