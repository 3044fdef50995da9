//! `upstreams:` and `resolver:`: where each upstream's endpoints come from,
//! how one is picked, when one is ejected and when an attempt is retried.

use super::{Problems, is_label_safe};
use crate::config::raw::PercentValue;
use crate::config::raw::{
    RawActive, RawConfig, RawDns, RawPassive, RawRetry, RawUpstream, RawUpstreamTls, StatusOrWord,
};
use crate::config::{Active, Balance, DnsSource, Passive, Protocol, ResolverSpec, Retry, RetryOn, UpstreamSpec};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn compile_upstreams(raw: &RawConfig, base: &Path, p: &mut Problems) -> Vec<UpstreamSpec> {
    let resolver = compile_resolver(raw, p);
    let mut out = Vec::new();
    for (name, u) in &raw.upstreams {
        let path = format!("upstreams.{name}");
        if !is_label_safe(name) {
            p.at(&path, "names may use letters, digits, `-`, `_` and `.` only");
        }
        let dns = u.dns.as_ref().map(|d| compile_dns(d, &resolver, &format!("{path}.dns"), p));
        match (u.endpoints.is_empty(), dns.is_some()) {
            (true, false) => p.at(format!("{path}.endpoints"), "at least one endpoint (or a `dns` source) is required"),
            (false, true) => p.at(&path, "give either `endpoints` or `dns`, not both"),
            _ => {}
        }
        for (i, e) in u.endpoints.iter().enumerate() {
            if let Err(msg) = check_endpoint(e) {
                p.at(format!("{path}.endpoints[{i}]"), msg);
            }
        }
        out.push(compile_upstream(name, u, dns, (base, &path), p));
    }
    out
}

fn compile_upstream(
    name: &str,
    u: &RawUpstream,
    dns: Option<DnsSource>,
    (base, path): (&Path, &str),
    p: &mut Problems,
) -> UpstreamSpec {
    let connect_timeout =
        p.duration(&format!("{path}.connect_timeout"), u.connect_timeout.as_ref(), Duration::from_secs(1));
    let request_timeout =
        p.duration(&format!("{path}.request_timeout"), u.request_timeout.as_ref(), Duration::from_secs(30));
    let body_timeout = p.duration(&format!("{path}.body_timeout"), u.body_timeout.as_ref(), Duration::from_secs(30));
    if connect_timeout.is_zero() || request_timeout.is_zero() || body_timeout.is_zero() {
        p.at(path, "timeouts must be greater than zero");
    }
    let balance = match u.balance.as_deref() {
        None | Some("p2c") => Balance::P2c,
        Some("round_robin") => Balance::RoundRobin,
        Some(other) => {
            p.at(format!("{path}.balance"), format!("`{other}` is not a balance; use p2c or round_robin"));
            Balance::P2c
        }
    };
    let protocol = match u.protocol.as_deref() {
        None | Some("http1") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some("h2") => Protocol::H2,
        Some("auto") => Protocol::Auto,
        Some(other) => {
            p.at(format!("{path}.protocol"), format!("`{other}` is not a protocol; use http1, h2c, h2 or auto"));
            Protocol::Http1
        }
    };
    let tls = u.tls.as_ref().and_then(|t| compile_upstream_tls(t, protocol, base, &format!("{path}.tls"), p));
    match (protocol, u.tls.is_some()) {
        (Protocol::H2, false) => p.at(format!("{path}.tls"), "protocol h2 is HTTP/2 over TLS: give `tls` (or use h2c)"),
        (Protocol::Auto, false) => {
            p.at(format!("{path}.tls"), "protocol auto lets TLS's ALPN choose between h2 and http/1.1: give `tls`")
        }
        (Protocol::H2c, true) => p.at(format!("{path}.tls"), "h2c is HTTP/2 without TLS: use protocol h2 with `tls`"),
        _ => {}
    }
    let active = u.health.as_ref().and_then(|h| h.active.as_ref()).map(|a| compile_active(a, path, p));
    // gRPC's health service is HTTP/2: over HTTP/1.1 it would fail every
    // time and take every endpoint out.
    if active.as_ref().is_some_and(|a| a.grpc_service.is_some()) && protocol == Protocol::Http1 {
        p.at(
            format!("{path}.health.active.grpc_service"),
            "a gRPC health check needs HTTP/2: set protocol h2c, h2 or auto (or check a `path` instead)",
        );
    }
    UpstreamSpec {
        name: Arc::from(name),
        protocol,
        tls,
        endpoints: u.endpoints.clone(),
        dns,
        retry: compile_retry(u.retry.as_ref(), path, p),
        balance,
        passive: compile_passive(u.health.as_ref().and_then(|h| h.passive.as_ref()), path, p),
        active,
        connect_timeout,
        request_timeout,
        body_timeout,
    }
}

/// `upstreams.X.tls`: files resolved against the config's directory, read
/// and checked now (a bad file refuses the whole config, so a reload keeps
/// the TLS in force).
fn compile_upstream_tls(
    t: &RawUpstreamTls,
    protocol: Protocol,
    base: &Path,
    at: &str,
    p: &mut Problems,
) -> Option<Arc<crate::tls::upstream::UpstreamTls>> {
    if t.client_cert_file.is_some() != t.client_key_file.is_some() {
        p.at(at, "client_cert_file and client_key_file go together");
        return None;
    }
    if t.insecure_skip_verify {
        p.warn(
            format!("{at}.insecure_skip_verify"),
            "the upstream's certificate is not verified: anyone on the path can pose as it",
        );
    }
    if let Some(name) = &t.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        p.at(format!("{at}.server_name"), format!("`{name}` is not a DNS name or IP address"));
        return None;
    }
    let ca = t.ca_file.as_ref().map(|f| base.join(f));
    let cert = t.client_cert_file.as_ref().map(|f| base.join(f));
    let key = t.client_key_file.as_ref().map(|f| base.join(f));
    let files = crate::tls::upstream::UpstreamTlsFiles {
        ca_file: ca.as_deref(),
        client_cert: cert.as_deref().zip(key.as_deref()),
        server_name: t.server_name.as_deref(),
        insecure_skip_verify: t.insecure_skip_verify,
        alpn: match protocol {
            Protocol::H2 => vec![b"h2".to_vec()],
            Protocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Protocol::Http1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
        },
    };
    match crate::tls::upstream::upstream_client(&files) {
        Ok(tls) => Some(Arc::new(tls)),
        Err(problems) => {
            for (field, message) in problems {
                p.at(format!("{at}.{field}"), message);
            }
            None
        }
    }
}

/// `resolver:`; a name server is `ip` or `ip:port` (port 53 by default).
fn compile_resolver(raw: &RawConfig, p: &mut Problems) -> ResolverSpec {
    let d = ResolverSpec::default();
    let Some(r) = raw.resolver.as_ref() else { return d };
    let mut nameservers = Vec::new();
    for (i, s) in r.nameservers.iter().enumerate() {
        match s.parse::<SocketAddr>().or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53))) {
            Ok(a) => nameservers.push(a),
            Err(_) => p.at(format!("resolver.nameservers[{i}]"), format!("`{s}` is not an IP address or ip:port")),
        }
    }
    let timeout = p.duration("resolver.timeout", r.timeout.as_ref(), d.timeout);
    if timeout.is_zero() {
        p.at("resolver.timeout", "must be greater than zero");
    }
    ResolverSpec { nameservers, timeout }
}

fn compile_dns(d: &RawDns, resolver: &ResolverSpec, at: &str, p: &mut Problems) -> DnsSource {
    if !is_dns_name(&d.name) {
        p.at(format!("{at}.name"), format!("`{}` is not a DNS name", d.name));
    }
    let port = match u16::try_from(d.port) {
        Ok(port) if port != 0 => port,
        _ => {
            p.at(format!("{at}.port"), "must be between 1 and 65535");
            0
        }
    };
    let refresh = d.refresh.as_ref().map(|r| p.duration(&format!("{at}.refresh"), Some(r), Duration::from_secs(5)));
    let min_ttl = p.duration(&format!("{at}.min_ttl"), d.min_ttl.as_ref(), Duration::from_secs(1));
    let max_ttl = p.duration(&format!("{at}.max_ttl"), d.max_ttl.as_ref(), Duration::from_secs(30));
    if refresh.is_some_and(|r| r < Duration::from_millis(100)) {
        p.at(format!("{at}.refresh"), "must be at least 100ms");
    }
    if min_ttl < Duration::from_millis(100) {
        p.at(format!("{at}.min_ttl"), "must be at least 100ms");
    }
    if max_ttl < min_ttl {
        p.at(format!("{at}.max_ttl"), "must not be less than min_ttl");
    }
    DnsSource { name: d.name.clone(), port, refresh, min_ttl, max_ttl, resolver: resolver.clone() }
}

/// Letters, digits, `-` and `.`, labels of 1–63 bytes, at most 253 in all
/// (a trailing dot, "fully qualified", skips the search domains).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn compile_retry(r: Option<&RawRetry>, path: &str, p: &mut Problems) -> Retry {
    let d = Retry::default();
    let Some(r) = r else { return d };
    let at = format!("{path}.retry");
    let attempts = match r.attempts {
        None => d.attempts,
        Some(n) if n <= 10 => n as u32,
        Some(_) => {
            p.at(format!("{at}.attempts"), "at most 10 retries");
            d.attempts
        }
    };
    let on = match &r.on {
        None => d.on,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let v = match o {
                    StatusOrWord::Word(w) if w == "connect_failure" => Some(RetryOn::ConnectFailure),
                    StatusOrWord::Word(w) if w == "reset" => Some(RetryOn::Reset),
                    StatusOrWord::Word(w) if w == "timeout" => Some(RetryOn::Timeout),
                    StatusOrWord::Status(s) if (500..=599).contains(s) => Some(RetryOn::Status(*s as u16)),
                    _ => None,
                };
                if v.is_none() {
                    p.at(
                        format!("{at}.on[{i}]"),
                        "retry on connect_failure, reset, timeout or a 5xx status such as 503",
                    );
                }
                v
            })
            .collect(),
    };
    let budget_percent = whole_percent(r.budget.as_ref(), &format!("{at}.budget"), d.budget_percent, p);
    Retry { attempts, on, budget_percent }
}

/// `upstreams.X.health.passive`, defaults filled in.
fn compile_passive(raw: Option<&RawPassive>, path: &str, p: &mut Problems) -> Passive {
    let d = Passive::default();
    let Some(r) = raw else { return d };
    let at = format!("{path}.health.passive");
    let consecutive_failures = match r.consecutive_failures {
        None => d.consecutive_failures,
        Some(n) => u32::try_from(n).unwrap_or_else(|_| {
            p.at(format!("{at}.consecutive_failures"), "too large");
            d.consecutive_failures
        }),
    };
    let eject = p.duration(&format!("{at}.eject"), r.eject.as_ref(), d.eject);
    if eject.is_zero() {
        p.at(format!("{at}.eject"), "must be greater than zero");
    }
    let max_ejected_percent =
        whole_percent(r.max_ejected.as_ref(), &format!("{at}.max_ejected"), d.max_ejected_percent, p);
    let statuses = match &r.statuses {
        None => d.statuses,
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match u16::try_from(*s) {
                Ok(s) if (500..=599).contains(&s) => Some(s),
                _ => {
                    p.at(format!("{at}.statuses[{i}]"), "only 5xx statuses count as failed attempts");
                    None
                }
            })
            .collect(),
    };
    Passive { consecutive_failures, eject, max_ejected_percent, statuses }
}

/// `upstreams.X.health.active`, defaults filled in.
fn compile_active(r: &RawActive, path: &str, p: &mut Problems) -> Active {
    let at = format!("{path}.health.active");
    let check_path = r.path.clone().unwrap_or_else(|| "/healthz".to_owned());
    if let Some(service) = &r.grpc_service {
        if r.path.is_some() {
            p.at(
                format!("{at}.grpc_service"),
                "give `path` (an HTTP check) or `grpc_service` (a gRPC check), not both",
            );
        }
        // A service name is sent in a protobuf string; keep it printable.
        if service.len() > 200 || service.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.at(format!("{at}.grpc_service"), "must be a service name (at most 200 characters, no spaces)");
        }
    }
    if !check_path.starts_with('/') || check_path.bytes().any(|b| b <= b' ' || b == 0x7f) || check_path.len() > 1024 {
        p.at(format!("{at}.path"), "must be an absolute path without spaces or control characters");
    }
    let interval = p.duration(&format!("{at}.interval"), r.interval.as_ref(), Duration::from_secs(5));
    let timeout = p.duration(&format!("{at}.timeout"), r.timeout.as_ref(), Duration::from_secs(1));
    if interval < Duration::from_millis(100) {
        p.at(format!("{at}.interval"), "must be at least 100ms");
    }
    if timeout.is_zero() || timeout > interval {
        p.at(format!("{at}.timeout"), "must be greater than zero and at most the interval");
    }
    let mut count = |field: &str, v: Option<u64>, d: u32| match v {
        None => d,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(_) => {
            p.at(format!("{at}.{field}"), "must be between 1 and 100");
            d
        }
    };
    let healthy = count("healthy", r.healthy, 2);
    let unhealthy = count("unhealthy", r.unhealthy, 3);
    Active { path: check_path, grpc_service: r.grpc_service.clone(), interval, timeout, healthy, unhealthy }
}

/// A percent from 0 to 100 (`20%` or `20`) as a whole number; `default`
/// when absent or refused (with the problem at `at`).
fn whole_percent(v: Option<&PercentValue>, at: &str, default: u32, p: &mut Problems) -> u32 {
    match v.map(PercentValue::percent) {
        None => default,
        Some(Ok(v)) if (0.0..=100.0).contains(&v) => v as u32,
        Some(Ok(_)) => {
            p.at(at, "must be between 0 and 100 percent");
            default
        }
        Some(Err(e)) => {
            p.at(at, e);
            default
        }
    }
}

fn check_endpoint(e: &str) -> Result<(), String> {
    if e.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = e.rsplit_once(':').ok_or_else(|| format!("`{e}` needs a port (host:port)"))?;
    port.parse::<u16>().map_err(|_| format!("`{e}` has an invalid port"))?;
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(format!("`{e}` is not a host:port"));
    }
    Ok(())
}
