//! A DNS source: the name is resolved in the background (hickory's async
//! resolver: /etc/resolv.conf with its search domains and ndots, or the
//! `resolver:` name servers) and every A/AAAA record becomes an endpoint.
//!
//! Re-resolved every `refresh`, or else when the answer's TTL runs out,
//! bounded by `min_ttl`..`max_ttl`. A failed or empty answer keeps the last
//! good set (a name server outage must not take a version's pods away): it
//! is counted, logged once per outage, shown by `GET /upstreams`, and asked
//! again after `min_ttl` (or `refresh`).

use super::Endpoints;
use crate::config::{DnsSource, ResolverSpec};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a DNS source has done, for the admin API and metrics.
#[derive(Default)]
pub struct DnsStatus {
    pub resolutions: AtomicU64,
    pub failures: AtomicU64,
    /// The last failure's text while failing; None once an answer came.
    last_error: Mutex<Option<String>>,
    /// Some answer has been installed (or one was inherited at a reload).
    answered: AtomicBool,
    answered_signal: Notify,
}

impl DnsStatus {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    pub fn mark_answered(&self) {
        self.answered.store(true, Ordering::Release);
        self.answered_signal.notify_waiters();
    }

    /// Wait until the first answer is in, at most `limit`. True if it is.
    pub async fn first_answer(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let signal = self.answered_signal.notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            if self.answered() {
                return true;
            }
            if tokio::time::timeout_at(deadline, signal).await.is_err() {
                return self.answered();
            }
        }
    }
}

/// The resolver of one DNS source. Its cache is capped at `cache_cap` (the
/// source's refresh), so a cached answer never outlives the period asked for.
pub fn resolver(spec: &ResolverSpec, cache_cap: Duration) -> Result<Arc<TokioResolver>, String> {
    let mut builder = if spec.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?
    } else {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for ns in &spec.nameservers {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            config.add_name_server(NameServerConfig::new(ns.ip(), true, vec![udp, tcp]));
        }
        TokioResolver::builder_with_config(config, Default::default())
    };
    let opts = builder.options_mut();
    opts.timeout = spec.timeout;
    opts.attempts = 1;
    opts.positive_max_ttl = Some(cache_cap);
    opts.negative_max_ttl = Some(cache_cap);
    builder.build().map(Arc::new).map_err(|e| e.to_string())
}

/// Keep `endpoints` current from `source` until its upstream is dropped.
pub async fn follow(
    endpoints: Weak<Endpoints>,
    status: Arc<DnsStatus>,
    source: DnsSource,
    resolver: Arc<TokioResolver>,
) {
    loop {
        let Some(set) = endpoints.upgrade() else { return };
        let wait = resolve_once(&source, &resolver, &set, &status).await;
        drop(set);
        tokio::time::sleep(wait).await;
    }
}

/// Ask once, install a good answer; returns when to ask again.
async fn resolve_once(
    source: &DnsSource,
    resolver: &TokioResolver,
    endpoints: &Endpoints,
    status: &DnsStatus,
) -> Duration {
    let retry = source.refresh.unwrap_or(source.min_ttl);
    let answer = match tokio::time::timeout(source.resolver.timeout * 2, resolver.lookup_ip(source.name.as_str())).await
    {
        Err(_) => Err("no answer within the resolver timeout".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(lookup)) => {
            let mut addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, source.port)).collect();
            addrs.sort();
            addrs.dedup();
            if addrs.is_empty() {
                Err("the answer has no A or AAAA record".to_owned())
            } else {
                Ok((addrs, lookup.valid_until()))
            }
        }
    };
    match answer {
        Ok((addrs, valid_until)) => {
            status.resolutions.fetch_add(1, Ordering::Relaxed);
            let (added, removed) = endpoints.replace(&addrs);
            if let Ok(mut last) = status.last_error.lock()
                && last.take().is_some()
            {
                tracing::info!(upstream = %endpoints.upstream, name = %source.name, endpoints = addrs.len(),
                    "DNS answers again");
            }
            if added + removed > 0 {
                tracing::info!(upstream = %endpoints.upstream, name = %source.name, endpoints = addrs.len(), added, removed,
                    "endpoints changed");
            }
            status.mark_answered();
            source.refresh.unwrap_or_else(|| {
                valid_until.saturating_duration_since(Instant::now()).clamp(source.min_ttl, source.max_ttl)
            })
        }
        Err(why) => {
            status.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = status.last_error.lock() {
                if last.is_none() {
                    tracing::warn!(upstream = %endpoints.upstream, name = %source.name, error = %why,
                        kept = endpoints.current().len(), "DNS lookup failed; keeping the last good endpoints");
                }
                *last = Some(why);
            }
            retry
        }
    }
}

/// A DNS source as `GET /upstreams` shows it.
pub struct DnsView {
    pub name: String,
    pub port: u16,
    pub resolutions: u64,
    pub failures: u64,
    /// Set while lookups fail (the last good set is kept meanwhile).
    pub last_error: Option<String>,
}
