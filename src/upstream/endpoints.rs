//! Where an upstream's endpoints come from: a fixed list, or a DNS name
//! whose every A/AAAA record is an endpoint (`dns.rs` keeps it current).
//!
//! The set in service is swapped whole (one atomic pointer), so a request
//! picks from one consistent list. An endpoint that leaves the set gets no
//! new requests and its idle connections are closed at once; requests and
//! WebSockets already on it finish on their own (weir never closes them
//! because a pod left DNS). Until they have, it is listed as `draining`.
//! An endpoint that comes back, or that a reloaded upstream of the same name
//! still has, keeps its pool and its health.

pub mod dns;

use super::pool::Endpoint;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 4096;
/// Idle connections older than this are not reused (upstreams such as nginx
/// close keep-alive after 60–75 s; reusing near that edge invites races).
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

pub struct Endpoints {
    upstream: Arc<str>,
    live: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Gone from the source with requests still in flight.
    draining: Mutex<Vec<Arc<Endpoint>>>,
    /// Requests of endpoints that have left, so totals never go back.
    retired_requests: AtomicU64,
}

impl Endpoints {
    /// `addrs` as the set in service; endpoints `previous` already has
    /// (same upstream name, before a reload) are taken over with their
    /// pools and health.
    pub fn new(upstream: Arc<str>, addrs: &[String], previous: Option<&Endpoints>) -> Self {
        let set = addrs.iter().map(|a| adopt(&upstream, a, previous)).collect();
        Self {
            upstream,
            live: ArcSwap::from_pointee(set),
            draining: Mutex::new(Vec::new()),
            retired_requests: AtomicU64::new(0),
        }
    }

    /// The set in service now (cheap; do not hold it across an await).
    pub fn current(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.live.load()
    }

    /// The addresses in service, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.live.load().iter().map(|e| e.address().to_owned()).collect()
    }

    /// A new answer from the source. Returns (added, removed) counts.
    pub fn replace(&self, addrs: &[SocketAddr]) -> (usize, usize) {
        let old = self.live.load_full();
        let wanted: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        if wanted.len() == old.len() && wanted.iter().zip(old.iter()).all(|(w, e)| w == e.address()) {
            return (0, 0);
        }
        let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let set: Vec<Arc<Endpoint>> = wanted
            .iter()
            .map(|a| {
                let known = old.iter().chain(draining.iter()).find(|e| e.address() == a.as_str());
                known.map_or_else(
                    || {
                        Arc::new(Endpoint::new(
                            Arc::clone(&self.upstream),
                            a.clone(),
                            MAX_IDLE_PER_ENDPOINT,
                            IDLE_TIMEOUT,
                        ))
                    },
                    Arc::clone,
                )
            })
            .collect();
        let added = set.iter().filter(|e| !old.iter().any(|o| Arc::ptr_eq(o, e))).count();
        draining.retain(|d| !set.iter().any(|e| Arc::ptr_eq(d, e)));
        let mut removed = 0;
        for gone in old.iter().filter(|o| !set.iter().any(|e| Arc::ptr_eq(o, e))) {
            removed += 1;
            gone.close_idle();
            tracing::info!(upstream = %self.upstream, endpoint = gone.address(), in_flight = gone.in_flight(),
                "endpoint left its source; no new requests, those in flight finish");
            draining.push(Arc::clone(gone));
        }
        for e in set.iter().filter(|e| !old.iter().any(|o| Arc::ptr_eq(o, e))) {
            tracing::info!(upstream = %self.upstream, endpoint = e.address(), "endpoint joined");
        }
        self.live.store(Arc::new(set));
        self.prune(&mut draining);
        (added, removed)
    }

    /// Draining endpoints whose last request has finished are forgotten.
    fn prune(&self, draining: &mut Vec<Arc<Endpoint>>) {
        draining.retain(|d| {
            let busy = d.in_flight() > 0;
            if !busy {
                self.retired_requests.fetch_add(d.requests(), Ordering::Relaxed);
            }
            busy
        });
    }

    /// Endpoints gone from the source that still carry requests.
    pub fn draining(&self) -> Vec<Arc<Endpoint>> {
        let mut d = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut d);
        d.clone()
    }

    /// Requests ever sent through this set (endpoints gone included).
    pub fn total_requests(&self) -> u64 {
        let live: u64 = self.live.load().iter().map(|e| e.requests()).sum();
        let draining: u64 = self.draining.lock().map(|d| d.iter().map(|e| e.requests()).sum()).unwrap_or(0);
        live + draining + self.retired_requests.load(Ordering::Relaxed)
    }
}

/// The endpoint for `addr`: the previous set's, if it had one.
fn adopt(upstream: &Arc<str>, addr: &str, previous: Option<&Endpoints>) -> Arc<Endpoint> {
    previous.and_then(|p| p.live.load().iter().find(|e| e.address() == addr).cloned()).unwrap_or_else(|| {
        Arc::new(Endpoint::new(Arc::clone(upstream), addr.to_owned(), MAX_IDLE_PER_ENDPOINT, IDLE_TIMEOUT))
    })
}
