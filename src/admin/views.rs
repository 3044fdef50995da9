//! Read-only admin views: /metrics, /routes, /routes/{name}, /config,
//! /explain. Pure functions of what is serving; no side effects.

use crate::explain::{self, Query};
use crate::live::{Live, Serving};
use crate::metrics::{self, Globals, RouteView};
use crate::units::bp_to_percent;

use crate::reload::Reloader;
use crate::routing::Version;
use serde_json::{Value, json};
use std::time::Instant;

pub fn metrics_text(
    live: &Live,
    served: &Serving,
    reloader: &Reloader,
    access_log_dropped: u64,
    ready: bool,
) -> String {
    let views: Vec<RouteView<'_>> = served
        .snapshot
        .table
        .routes
        .iter()
        .zip(&served.route_metrics)
        .zip(served.limiters.iter().chain(std::iter::repeat(&None)))
        .map(|((r, m), l)| RouteView {
            metrics: m,
            config_weight_bp: r.config_weight_bp,
            effective_weight_bp: r.effective_weight_bp(),
            phase: r.overlay.phase,
            shadow: r.shadow.is_some(),
            revision: r.canary.as_ref().map(|c| &*c.revision),
            segments: r.segments.iter().map(|s| s.name.as_str()).collect(),
            limiter: l.as_deref(),
        })
        .collect();
    metrics::render(
        &views,
        &Globals {
            generation: served.generation,
            start_time_s: live.started_s,
            access_log_dropped,
            fleet_queries: live.fleet_queries.load(std::sync::atomic::Ordering::Relaxed),
            fleet_bytes: live.fleet_bytes.load(std::sync::atomic::Ordering::Relaxed),
            unrouted: live.registry.unrouted.load(std::sync::atomic::Ordering::Relaxed),
            reloads_success: reloader.successes(),
            reloads_failure: reloader.failures(),
            ready,
            notifications: live
                .notifier
                .stats()
                .into_iter()
                .map(|(name, s)| {
                    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                    (name, [n(&s.sent), n(&s.failed), n(&s.dropped), n(&s.retried)])
                })
                .collect(),
            unsolicited: served
                .upstreams
                .iter()
                .flat_map(|u| u.unsolicited().into_iter().map(|(ep, n)| (u.spec().name.to_string(), ep, n)))
                .collect(),
            upstreams: served.upstreams.iter().map(|u| upstream_row(u)).collect(),
        },
    )
}

fn upstream_row(u: &crate::upstream::Upstream) -> crate::metrics::UpstreamRow {
    use crate::upstream::EndpointState;
    let stats = u.endpoint_stats();
    let by_state = EndpointState::ALL.map(|s| stats.iter().filter(|e| e.state == s).count() as u64);
    let endpoints = stats
        .into_iter()
        .filter(|e| e.state != EndpointState::Draining)
        .take(crate::metrics::MAX_ENDPOINT_SERIES)
        .map(|e| (e.address, e.requests, e.failures))
        .collect();
    crate::metrics::UpstreamRow {
        name: u.spec().name.to_string(),
        by_state,
        endpoints,
        dns_failures: u.dns_view().map(|d| d.failures),
    }
}

pub fn route_json(live: &Live, served: &Serving, idx: usize) -> Option<Value> {
    let r = served.snapshot.table.routes.get(idx)?;
    let m = served.route_metrics.get(idx)?;
    let now = Instant::now();
    let version = |v: Version| {
        let b = r.backend(v);
        let vm = m.version(v);
        let endpoints = served.upstream(b.upstream).map(|u| {
            let stats = u.endpoint_stats();
            let n = |s: crate::upstream::EndpointState| stats.iter().filter(|e| e.state == s).count();
            use crate::upstream::EndpointState::{Draining, Ejected, Healthy};
            json!({"healthy": n(Healthy), "ejected": n(Ejected), "draining": n(Draining)})
        });
        json!({"upstream": &*b.upstream_name, "revision": &*b.revision, "window": vm.window.stats(now),
               "websockets": vm.websockets_active(), "endpoints": endpoints,
               "retried_attempts": vm.retried_attempts()})
    };
    let st = live.rollout_state(&r.name);
    let rolled_back = st
        .as_ref()
        .and_then(|s| s.rolled_back)
        .map(|l| json!({"reason": l.reason.as_str(), "at": crate::clock::rfc3339_ms(l.at_ms)}));
    Some(json!({
        "name": &*r.name,
        "state": r.overlay.phase.as_str(),
        "step": r.overlay.step,
        "weight": {"config": bp_to_percent(r.config_weight_bp), "effective": bp_to_percent(r.effective_weight_bp())},
        "kill_switch": {"config": r.config_killed, "admin": st.as_ref().is_some_and(|s| s.killed)},
        "rolled_back": rolled_back,
        "streak": st.as_ref().map_or(0, |s| s.streak),
        "held": st.as_ref().is_some_and(|s| s.held),
        "fleet": live.fleet_view(&r.name),
        "evidence": evidence_json(m, st.as_ref()),
        "analysis": r.analysis.as_deref(),
        "progression": r.progression.as_deref().map(|p| json!({
            "steps": p.steps.iter().map(|b| bp_to_percent(*b)).collect::<Vec<_>>(),
            "hold_ms": p.hold.as_millis() as u64,
            "step_since": st.as_ref().map(|s| crate::clock::rfc3339_ms(s.step_since_ms)),
        })),
        "websocket": &r.websocket,
        "control": r.control.as_str(),
        "window_ms": m.canary.window.length().as_millis() as u64,
        "stable": version(Version::Stable),
        "canary": if r.canary.is_some() { version(Version::Canary) } else { Value::Null },
        "verdicts": m.recent_verdicts(),
    }))
}

/// Version of the `GET /routes/{name}/verdict` answer. Fields are only ever
/// added under one version; a change of meaning gets a new one.
pub const VERDICT_API_VERSION: u32 = 1;

/// `GET /routes/{name}/verdict`: the route's outcome and latest verdict in
/// a stable shape for outside controllers (Argo Rollouts' `web` metric
/// provider, Flagger webhooks, pipeline gates). Also: whether it is
/// `healthy` (no fail and no rollback or kill) and whether the rollout is
/// `done` (promoted, rolled back or killed).
pub fn verdict_json(live: &Live, served: &Serving, idx: usize) -> Option<Value> {
    use crate::routing::Phase;
    let r = served.snapshot.table.routes.get(idx)?;
    let m = served.route_metrics.get(idx)?;
    let phase = r.overlay.phase;
    let latest = m.recent_verdicts().pop();
    let field = |k: &str| latest.as_ref().map_or(Value::Null, |v| v[k].clone());
    let verdict = field("verdict");
    let outcome = match phase {
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled_back",
        Phase::Killed => "killed",
        _ => "running",
    };
    let healthy = !matches!(phase, Phase::RolledBack | Phase::Killed) && verdict != "fail";
    let st = live.rollout_state(&r.name);
    let rolled_back = st.as_ref().and_then(|s| s.rolled_back).map(|l| l.reason.as_str());
    Some(json!({
        "api_version": VERDICT_API_VERSION,
        "route": &*r.name,
        "revision": r.canary.as_ref().map(|c| &*c.revision),
        "control": r.control.as_str(),
        "state": phase.as_str(),
        "outcome": outcome,
        "done": outcome != "running",
        "healthy": healthy,
        "step": r.overlay.step,
        "weight": bp_to_percent(r.effective_weight_bp()),
        "verdict": verdict,
        "reason": field("reason"),
        "at": field("at"),
        "test": field("test"),
        "rollback_reason": rolled_back,
        "tests": m.standings().iter().map(|s| json!({
            "test": s.test.as_str(), "e_weighted": s.e_weighted, "threshold": s.threshold,
            "e_revision": s.e_revision, "threshold_revision": s.threshold_revision, "progress": s.progress(),
        })).collect::<Vec<_>>(),
    }))
}

/// Each test's e-values against their thresholds, and what the judge has
/// counted since the revision started.
fn evidence_json(m: &crate::metrics::RouteMetrics, st: Option<&crate::analysis::machine::RouteState>) -> Value {
    let Some(st) = st else { return Value::Null };
    let t = &st.judge.revision().map(|s| s.totals).unwrap_or_default();
    let e = crate::analysis::Event::Error;
    let version = |v: usize| {
        let rank = crate::analysis::rank::mean_rank(&t.rank, v);
        json!({"requests": t.n(e, v), "errors": t.x(e, v), "timed": t.ranked(v), "mean_rank": rank})
    };
    json!({
        "epoch": st.judge.epoch,
        "tests": m.standings().iter().map(|s| json!({
            "test": s.test.as_str(),
            "e_weighted": s.e_weighted, "threshold": s.threshold,
            "e_revision": s.e_revision, "threshold_revision": s.threshold_revision,
            "epoch": s.epoch, "e_epoch": s.e_epoch, "threshold_epoch": s.threshold_epoch,
            "progress": s.progress(),
            "e_slo": s.e_slo, "breaking": s.breaking,
        })).collect::<Vec<_>>(),
        "since_revision": {"stable": version(0), "canary": version(1)},
    })
}

pub fn routes_json(live: &Live, served: &Serving) -> Value {
    Value::Array((0..served.snapshot.table.routes.len()).filter_map(|i| route_json(live, served, i)).collect())
}

/// `GET /upstreams` (design §13): per upstream, its balance, its DNS source
/// (if any: lookups, failures, the last error while failing) and per
/// endpoint its state (`healthy`, `ejected`, or `draining`: gone from its
/// source with requests in flight), ejections, and the attempts in flight,
/// made and failed. Counters cover the endpoint's life in this process
/// (a reloaded upstream keeps the endpoints it still has).
pub fn upstreams_json(served: &Serving) -> Value {
    let upstreams: Vec<Value> = served
        .upstreams
        .iter()
        .map(|u| {
            let endpoints: Vec<Value> = u
                .endpoint_stats()
                .into_iter()
                .map(|e| {
                    json!({"address": e.address, "state": e.state.as_str(),
                           "ejections": e.ejections, "in_flight": e.in_flight,
                           "requests": e.requests, "failures": e.failures, "check": e.check})
                })
                .collect();
            let dns = u.dns_view().map(|d| {
                json!({"name": d.name, "port": d.port, "resolutions": d.resolutions, "failures": d.failures,
                       "last_error": d.last_error})
            });
            json!({"name": &*u.spec().name, "balance": u.spec().balance.as_str(), "dns": dns, "endpoints": endpoints})
        })
        .collect();
    json!({"upstreams": upstreams})
}

fn ops_json(o: &crate::routing::edge::HeaderOps) -> Value {
    let pairs = |v: &[(http::HeaderName, http::HeaderValue)]| {
        v.iter()
            .map(|(n, v)| (n.to_string(), Value::from(String::from_utf8_lossy(v.as_bytes()))))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({"set": pairs(&o.set), "add": pairs(&o.add), "remove": o.remove.iter().map(|n| n.as_str()).collect::<Vec<_>>()})
}

fn path_change_json(c: &crate::routing::edge::PathChange) -> Value {
    match c {
        crate::routing::edge::PathChange::Full(p) => json!({"path": p}),
        crate::routing::edge::PathChange::Prefix(p) => json!({"path_prefix": p}),
    }
}

/// A route's edge policies as `/config` shows them.
fn edge_json(e: &crate::routing::edge::Edge) -> Value {
    let ms = |d: Option<std::time::Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    json!({
        "request_timeout_ms": ms(e.request_timeout),
        "backend_timeout_ms": ms(e.backend_timeout),
        "max_request_body": e.max_request_body,
        "request_headers": ops_json(&e.modifiers.request),
        "response_headers": ops_json(&e.modifiers.response),
        "rewrite": e.rewrite.as_ref().map(|w| json!({
            "path": w.path.as_ref().map(path_change_json),
            "hostname": w.hostname.as_ref().map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        })),
        "rate_limit": e.rate_limit.as_ref().map(|l| json!({
            "requests": l.requests, "per_ms": ms(Some(l.per)), "burst": l.burst, "max_keys": l.max_keys,
            "key": match &l.key {
                crate::ratelimit::Key::ClientIp => "client_ip".to_owned(),
                crate::ratelimit::Key::Header(h) => format!("header:{h}"),
            },
        })),
        "cors": e.cors.as_ref().map(|c| json!({
            "allow_origins": c.origins.iter().map(|o| match o {
                crate::routing::edge::OriginMatch::Any => "*".to_owned(),
                crate::routing::edge::OriginMatch::Exact(e) => e.clone(),
                crate::routing::edge::OriginMatch::Subdomain { scheme, suffix } => format!("{scheme}://*.{suffix}"),
            }).collect::<Vec<_>>(),
            "allow_methods": String::from_utf8_lossy(c.methods.as_bytes()),
            "allow_headers": String::from_utf8_lossy(c.headers.as_bytes()),
            "allow_credentials": c.credentials,
        })),
        "redirect": e.redirect.as_ref().map(|r| json!({
            "scheme": r.scheme, "hostname": r.hostname, "port": r.port,
            "path": r.path.as_ref().map(path_change_json), "status": r.status.as_u16(),
            "keep_query": r.keep_query,
        })),
    })
}

/// Effective config, secrets redacted.
pub fn config_json(served: &Serving) -> Value {
    let s = &served.snapshot;
    let routes: Vec<Value> = s
        .table
        .routes
        .iter()
        .map(|r| {
            let sticky = r.sticky.as_ref().map(|st| {
                json!({
                    "keys": st.keys.iter().map(|k| k.describe()).collect::<Vec<_>>(),
                    "salt": String::from_utf8_lossy(&st.salt_sep[..st.salt_sep.len().saturating_sub(1)]),
                    "cookie": st.cookie.as_ref().map(|c| json!({
                        "name": c.name, "max_age_seconds": c.max_age_secs,
                        "secret": if c.mac.is_some() { "<redacted>" } else { "none" },
                    })),
                })
            });
            json!({
                "name": &*r.name,
                "hosts": r.hosts.iter().map(|h| match h {
                    crate::routing::HostMatch::Exact(e) => e.clone(),
                    crate::routing::HostMatch::Suffix(s) => format!("*{s}"),
                }).collect::<Vec<_>>(),
                "path": r.path.describe(),
                "also": r.filter.describe(),
                "edge": r.edge.as_deref().map(edge_json),
                "stable": {"upstream": &*r.stable.upstream_name, "revision": &*r.stable.revision},
                "canary": r.canary.as_ref().map(|c| json!({"upstream": &*c.upstream_name, "revision": &*c.revision})),
                "weight": bp_to_percent(r.config_weight_bp),
                "kill_switch": r.config_killed,
                "analysis": r.analysis.as_deref(),
                "progression": r.progression.as_deref().map(|p| json!({
                    "steps": p.steps.iter().map(|b| bp_to_percent(*b)).collect::<Vec<_>>(),
                    "hold_ms": p.hold.as_millis() as u64,
                })),
                "websocket": &r.websocket,
                "expose_version": r.expose_version,
                "sticky": sticky,
                "override": r.override_.as_ref().map(|o| json!({
                    "header": o.header.as_ref().map(|h| h.to_string()), "cookie": o.cookie,
                })),
                "segments": r.segments.iter().map(|sg| json!({"name": sg.name, "weight": bp_to_percent(sg.weight_bp)})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "generation": served.generation,
        "sha256": s.sha256,
        "listen": s.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "admin": {"address": s.admin.to_string(), "token_file": s.admin_token_file.as_ref().map(|_| "<redacted>")},
        "state_dir": s.state_dir.display().to_string(),
        "access_log": s.access_log,
        "limits": {
            "header_read_timeout_ms": s.limits.header_read_timeout.as_millis() as u64,
            "idle_timeout_ms": s.limits.idle_timeout.as_millis() as u64,
            "max_headers": s.limits.max_headers, "max_header_bytes": s.limits.max_header_bytes,
            "max_request_body": s.limits.max_request_body, "max_connections": s.limits.max_connections,
            "max_in_flight": s.limits.max_in_flight,
        },
        "shutdown": {"delay_ms": s.shutdown.delay.as_millis() as u64, "grace_ms": s.shutdown.grace.as_millis() as u64},
        "upstreams": s.upstreams.iter().map(|u| json!({
            "name": &*u.name, "endpoints": u.endpoints,
            "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
            "request_timeout_ms": u.request_timeout.as_millis() as u64,
        })).collect::<Vec<_>>(),
        "routes": routes,
    })
}

/// `/explain?host=&path=&header=K:V&cookie=K=V&query=...`
pub fn explain_json(served: &Serving, query: Option<&str>, draw: u16) -> Result<Value, String> {
    let mut q = Query { path: "/".into(), ..Query::default() };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "host" => q.host = v,
            "path" => q.path = v,
            "query" => q.query = Some(v),
            "header" => {
                let (name, value) = v.split_once(':').ok_or("header must be K:V")?;
                q.headers.push((name.trim().to_string(), value.trim().to_string()));
            }
            "cookie" => {
                let (name, value) = v.split_once('=').ok_or("cookie must be K=V")?;
                q.cookies.push((name.trim().to_string(), value.trim().to_string()));
            }
            other => return Err(format!("unknown parameter `{other}`")),
        }
    }
    let x = explain::explain(&served.snapshot, &q, draw)?;
    serde_json::to_value(x).map_err(|e| e.to_string())
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("x-player-id%3A42+a").as_deref(), Ok("x-player-id:42 a"));
        assert!(super::percent_decode("%4").is_err());
        assert!(super::percent_decode("%zz").is_err());
    }
}
