//! `routes[i]`: one route compiled: its backends, override, segments,
//! sticky keys, shadow, WebSocket policy and progression, and how its
//! analysis, progression and `control` fit together.

use super::analysis::compile_analysis;
use super::matching::{compile_path, compile_segment_match};
use super::{Problems, edge, header_name, is_label_safe, resolve};
use crate::config::raw::{RawOverride, RawProgression, RawRoute, RawShadow, RawSticky, RawVersion, RawWebsocket};
use crate::config::{Analysis, Progression, Shadow, UpstreamSpec, WebSocketPolicy};
use crate::routing::{Backend, BucketCookie, HostMatch, KeySource, Override, Route, Segment, Sticky};
use crate::units::parse_rate;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Round-trip probe period when `max_ws_rtt_p95` is set and
/// `websocket.rtt_interval` is not.
const DEFAULT_RTT_INTERVAL: Duration = Duration::from_secs(5);

fn backend(path: &str, v: &RawVersion, ups: &[UpstreamSpec], p: &mut Problems) -> Option<Backend> {
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

/// `routes[i]`, checked and compiled; None when it cannot serve (no usable
/// stable backend).
pub(super) fn compile_route(
    r: &RawRoute,
    path: &str,
    ups: &[UpstreamSpec],
    base: &Path,
    p: &mut Problems,
) -> Option<Route> {
    if !is_label_safe(&r.name) {
        p.at(format!("{path}.name"), "names may use letters, digits, `-`, `_` and `.` only");
    }
    let hosts = compile_hosts(r, path, p);
    let path_match = compile_path(r.match_.as_ref(), &format!("{path}.match"), p);
    let filter = edge::compile_filter(r.match_.as_ref(), &format!("{path}.match"), p);
    let edge = edge::compile_edge(r, path, &path_match, &filter, p);
    let stable = compile_stable(r, path, ups, p);
    let canary = r.canary.as_ref().and_then(|c| backend(&format!("{path}.canary"), c, ups, p));
    let weight_bp = p.weight(&format!("{path}.weight"), r.weight.unwrap_or(0.0));
    if r.canary.is_none() && (weight_bp > 0 || !r.segments.is_empty() || r.override_.is_some()) {
        p.at(path, "weight, segments and override need a `canary`");
    }
    let sticky = r.sticky.as_ref().and_then(|s| compile_sticky(s, &r.name, &format!("{path}.sticky"), base, p));
    let override_ = r.override_.as_ref().map(|o| compile_override(o, &format!("{path}.override"), p));
    let segments = compile_segments(r, path, p);
    let analysis = r.analysis.as_ref().map(|a| Arc::new(compile_analysis(a, &format!("{path}.analysis"), p)));
    let progression =
        r.progression.as_ref().map(|g| Arc::new(compile_progression(g, &format!("{path}.progression"), p)));
    if r.canary.is_none() && (analysis.is_some() || progression.is_some()) {
        p.at(path, "analysis and progression need a `canary`");
    }
    let websocket = route_websocket(r, path, analysis.as_deref(), p);
    check_judgement(r, path, analysis.as_deref(), progression.is_some(), p);
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

/// The stable backend: the named upstream, or a redirect's stand-in.
fn compile_stable(r: &RawRoute, path: &str, ups: &[UpstreamSpec], p: &mut Problems) -> Option<Backend> {
    match (&r.stable, &r.redirect) {
        (Some(s), None) => backend(&format!("{path}.stable"), s, ups, p),
        (_, Some(_)) => Some(no_backend()),
        (None, None) => {
            p.at(format!("{path}.stable"), "required (only a `redirect` route has no upstream)");
            None
        }
    }
}

fn compile_override(o: &RawOverride, path: &str, p: &mut Problems) -> Override {
    if o.header.is_none() && o.cookie.is_none() {
        p.at(path, "set `header`, `cookie` or both");
    }
    Override {
        header: o.header.as_ref().and_then(|h| header_name(&format!("{path}.header"), h, p)),
        cookie: o.cookie.clone(),
    }
}

/// `routes[i].segments`, each name once.
fn compile_segments(r: &RawRoute, path: &str, p: &mut Problems) -> Vec<Segment> {
    let mut seg_names = HashSet::new();
    r.segments
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
        .collect()
}

/// The route's WebSocket policy; `max_ws_rtt_p95` turns round-trip probes
/// on at the default period unless `rtt_interval` was set (to 0s: an error).
fn route_websocket(r: &RawRoute, path: &str, analysis: Option<&Analysis>, p: &mut Problems) -> WebSocketPolicy {
    let mut websocket =
        r.websocket.as_ref().map(|w| compile_websocket(w, &format!("{path}.websocket"), p)).unwrap_or_default();
    if analysis.is_some_and(|a| a.max_ws_rtt_p95.is_some()) && websocket.rtt_interval.is_zero() {
        if r.websocket.as_ref().is_some_and(|w| w.rtt_interval.is_some()) {
            p.at(format!("{path}.websocket.rtt_interval"), "max_ws_rtt_p95 needs round-trip probes (more than 0s)");
        } else {
            websocket.rtt_interval = DEFAULT_RTT_INTERVAL;
        }
    }
    websocket
}

/// How analysis, progression and `control` fit together.
fn check_judgement(r: &RawRoute, path: &str, analysis: Option<&Analysis>, progression: bool, p: &mut Problems) {
    if progression && analysis.is_some_and(|a| a.mode == crate::config::AnalysisMode::Observe) {
        p.warn(format!("{path}.analysis.mode"), "observe never acts: progression stays on its first step");
    }
    if r.control == Some(crate::routing::policy::Control::External) && analysis.is_none() {
        p.warn(format!("{path}.control"), "control: external without `analysis`: nothing to judge or export");
    }
    if progression && analysis.is_none() {
        p.at(format!("{path}.progression"), "progression needs `analysis`: steps advance only after a `pass`");
    }
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

fn compile_sticky(s: &RawSticky, route: &str, path: &str, base: &Path, p: &mut Problems) -> Option<Sticky> {
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
