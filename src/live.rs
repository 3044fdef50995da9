//! The one `ArcSwap` holding what serves: the validated snapshot, its
//! generation and the upstream pools built for it.
//!
//! Every request loads it once and keeps that `Arc` to its end, so a swap
//! never changes a request mid-flight. All writers (reload, and later the
//! rollout controller) go through `Live::install`, serialised by a mutex, so
//! two writers can never interleave and lose an update.

use crate::config::Snapshot;
use crate::metrics::{Registry, RouteMetrics};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};

/// What one request sees.
pub struct Served {
    pub snapshot: Arc<Snapshot>,
    pub generation: u64,
    /// Pools, index-aligned with `snapshot.upstreams`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Metric handles, index-aligned with `snapshot.table.routes`.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
}

impl Served {
    pub fn upstream(&self, idx: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(idx)
    }
}

pub struct Live {
    current: ArcSwap<Served>,
    /// Metric handles by route name, reused across reloads.
    pub registry: Registry,
    writer: Mutex<()>,
}

impl Live {
    pub fn new(snapshot: Snapshot) -> Self {
        let upstreams = snapshot.upstreams.iter().map(|s| Arc::new(Upstream::new(s.clone()))).collect();
        let registry = Registry::default();
        let route_metrics = snapshot.table.routes.iter().map(|r| registry.route(&r.name)).collect();
        let served = Served { snapshot: Arc::new(snapshot), generation: 1, upstreams, route_metrics };
        Self { current: ArcSwap::from_pointee(served), registry, writer: Mutex::new(()) }
    }

    /// The current table; keep it for the whole request.
    pub fn load(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// Swap in a new snapshot in one step and return its generation. Pools of
    /// upstreams whose spec did not change are carried over, so a reload
    /// causes no reconnect storm.
    pub fn install(&self, snapshot: Snapshot) -> u64 {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current.load_full();
        let upstreams = snapshot
            .upstreams
            .iter()
            .map(|spec| match old.upstreams.iter().find(|u| u.spec() == spec) {
                Some(u) => Arc::clone(u),
                None => Arc::new(Upstream::new(spec.clone())),
            })
            .collect();
        let route_metrics = snapshot.table.routes.iter().map(|r| self.registry.route(&r.name)).collect();
        let generation = old.generation + 1;
        self.current.store(Arc::new(Served { snapshot: Arc::new(snapshot), generation, upstreams, route_metrics }));
        generation
    }
}
