//! The one `ArcSwap` holding what serves: the effective snapshot (config
//! plus rollout overlay), its generation and the upstream pools built for it.
//!
//! Every request loads it once and keeps that `Arc` to its end, so a swap
//! never changes a request mid-flight. Every writer (config reload, the
//! rollout controller's tick, admin steering) takes the one writer lock,
//! changes the config or the rollout book, and publishes a new effective
//! snapshot, so two writers can never interleave and lose an update, and the
//! weight, kill and rollback flags are never stored in two places that could
//! disagree.

use crate::config::Snapshot;
use crate::metrics::{Registry, RouteMetrics};
use crate::ratelimit::Limiter;
use crate::rollout::fleet::FleetKey;
use crate::rollout::{Rollouts, Steer, SteerError};
use crate::upstream::Upstream;
use crate::websocket::Hub;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What one request sees.
pub struct Serving {
    /// The effective snapshot: config with the rollout overlay applied.
    pub snapshot: Arc<Snapshot>,
    /// Config generation (1 at start, +1 per applied reload).
    pub generation: u64,
    /// Pools, index-aligned with `snapshot.upstreams`.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Metric handles, index-aligned with `snapshot.table.routes`.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
    /// Rate-limit buckets of routes with `rate_limit`, index-aligned with
    /// the routes; a reload that leaves a route's limit alone keeps them.
    pub limiters: Vec<Option<Arc<Limiter>>>,
}

/// Each route's limiter: the old one where the route (by name) kept the
/// same limit, else a fresh one.
fn limiters_for(s: &Snapshot, old: Option<&Serving>) -> Vec<Option<Arc<Limiter>>> {
    s.table
        .routes
        .iter()
        .map(|r| {
            let spec = r.edge.as_ref()?.rate_limit.as_ref()?;
            let kept = old.and_then(|o| {
                let i = o.snapshot.table.routes.iter().position(|or| or.name == r.name)?;
                o.limiters.get(i)?.as_ref().filter(|l| l.spec == *spec).map(Arc::clone)
            });
            Some(kept.unwrap_or_else(|| Arc::new(Limiter::new(spec.clone()))))
        })
        .collect()
}

impl Serving {
    pub fn upstream(&self, idx: usize) -> Option<&Arc<Upstream>> {
        self.upstreams.get(idx)
    }
}

struct Writer {
    /// The config as loaded, without overlay.
    config: Arc<Snapshot>,
    book: Rollouts,
}

pub struct Live {
    current: ArcSwap<Serving>,
    /// Metric handles by route name, reused across reloads.
    pub registry: Registry,
    writer: Mutex<Writer>,
    /// Signalled when a config is installed (the controller re-plans).
    pub changed: Notify,
    /// Every open WebSocket (closed on rollback, kill and shutdown).
    pub websockets: Hub,
    /// Process start, seconds since the Unix epoch.
    pub started_s: f64,
    /// Queries sent to the analysis source and bytes received.
    pub fleet_queries: std::sync::atomic::AtomicU64,
    pub fleet_bytes: std::sync::atomic::AtomicU64,
    /// The fleet task has asked the source once about every fleet route.
    pub fleet_passed: std::sync::atomic::AtomicBool,
    pub fleet_first_pass: Notify,
    /// Outbound webhooks (`notify:`).
    pub notifier: Arc<crate::notify::Notifier>,
}

impl Live {
    /// Open the rollout state in `snapshot.state_dir` and serve `snapshot`.
    pub fn new(snapshot: Snapshot) -> std::io::Result<Self> {
        let registry = Registry::default();
        let mut book = Rollouts::open(&snapshot.state_dir, &snapshot, &registry, crate::clock::wall_ms())?;
        let notifier = Arc::new(crate::notify::Notifier::new());
        notifier.configure(&snapshot.notify);
        book.set_notifier(Arc::clone(&notifier));
        let effective = book.overlay(&snapshot);
        let upstreams = effective.upstreams.iter().map(|s| Upstream::start(s.clone(), None)).collect();
        let route_metrics = Self::metrics_for(&registry, &effective);
        let limiters = limiters_for(&effective, None);
        let served = Serving { snapshot: Arc::new(effective), generation: 1, upstreams, route_metrics, limiters };
        Ok(Self {
            current: ArcSwap::from_pointee(served),
            registry,
            writer: Mutex::new(Writer { config: Arc::new(snapshot), book }),
            changed: Notify::new(),
            websockets: Hub::default(),
            started_s: crate::clock::wall_ms() as f64 / 1000.0,
            fleet_queries: Default::default(),
            fleet_bytes: Default::default(),
            fleet_passed: Default::default(),
            fleet_first_pass: Notify::new(),
            notifier,
        })
    }

    /// The current table; keep it for the whole request.
    pub fn load(&self) -> Arc<Serving> {
        self.current.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A poisoned lock means a writer panicked; the state it guards is
        // replaced whole on every write, so it is still consistent.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metrics_for(registry: &Registry, s: &Snapshot) -> Vec<Arc<RouteMetrics>> {
        let now = Instant::now();
        s.table
            .routes
            .iter()
            .map(|r| {
                let slos: Vec<Duration> = r
                    .analysis
                    .as_ref()
                    .map(|a| [a.max_p95, a.max_p99].into_iter().flatten().collect())
                    .unwrap_or_default();
                let m = registry.route_with_slo(&r.name, &slos);
                let window = r.analysis.as_ref().map_or(crate::metrics::DEFAULT_WINDOW, |a| a.window);
                m.stable.window.configure(window, now);
                m.canary.window.configure(window, now);
                m.stable.rtt_window.configure(window, now);
                m.canary.rtt_window.configure(window, now);
                m
            })
            .collect()
    }

    /// Publish `w`'s effective snapshot under `generation`. Pools of upstreams
    /// whose spec did not change are carried over, so no reconnect storm.
    fn publish(&self, w: &Writer, generation: u64) {
        let old = self.current.load_full();
        let effective = w.book.overlay(&w.config);
        let upstreams = effective
            .upstreams
            .iter()
            .map(|spec| match old.upstreams.iter().find(|u| u.spec() == spec) {
                Some(u) => Arc::clone(u),
                None => Upstream::start(
                    spec.clone(),
                    old.upstreams.iter().find(|u| u.spec().name == spec.name).map(|u| &**u),
                ),
            })
            .collect();
        let route_metrics = Self::metrics_for(&self.registry, &effective);
        let withdrawn = withdrawn_canaries(&old.snapshot, &effective);
        let limiters = limiters_for(&effective, Some(&old));
        self.current.store(Arc::new(Serving {
            snapshot: Arc::new(effective),
            generation,
            upstreams,
            route_metrics,
            limiters,
        }));
        // After the swap, so a socket closed here reconnects onto stable.
        for (route, per_second) in withdrawn {
            self.websockets.close_canary(&route, per_second);
        }
    }

    /// Install a newly loaded config in one step and return its generation.
    /// Rollout state is fitted to it (a new canary revision starts over; a
    /// rollback latch survives).
    pub fn install(&self, snapshot: Snapshot) -> u64 {
        let mut w = self.lock();
        let old = Arc::clone(&w.config);
        w.book.windows_for_new_revisions(Some(&old), &snapshot, &self.registry);
        self.notifier.configure(&snapshot.notify);
        w.book.reconcile(Some(&old), &snapshot, crate::clock::wall_ms());
        w.config = Arc::new(snapshot);
        let generation = self.current.load().generation + 1;
        self.publish(&w, generation);
        drop(w);
        self.changed.notify_one();
        generation
    }

    /// Take the verdicts that are due; returns when the next one is due.
    pub fn tick(&self, now: Instant, now_ms: u64) -> Option<Instant> {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        let (changed, next) = w.book.tick(&config, &self.registry, now, now_ms);
        if changed {
            self.publish(&w, self.current.load().generation);
        }
        next
    }

    /// Admin steering of one route. Returns whether anything changed.
    pub fn steer(&self, route: &str, op: Steer, peer: SocketAddr) -> Result<bool, SteerError> {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        let changed = w.book.steer(&config, &self.registry, route, op, peer, crate::clock::wall_ms())?;
        if changed {
            self.publish(&w, self.current.load().generation);
        }
        Ok(changed)
    }

    /// Routes in fleet mode and what to ask about them.
    pub fn fleet_targets(&self) -> Vec<crate::fleet::Target> {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        w.book.fleet_targets(&config, &self.registry)
    }

    /// The fleet's latest steering for a route.
    pub fn fleet_polled(&self, route: &str, revision: &str, c: crate::fleet::control::Control) {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        if w.book.fleet_polled(&config, &self.registry, route, revision, c, crate::clock::wall_ms()) {
            self.publish(&w, self.current.load().generation);
        }
    }

    /// Fold evaluation steps from the fleet's evidence.
    pub fn fleet_steps(&self, route: &str, revision: &str, series: &[crate::fleet::fold::Series], times: &[u64]) {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        if w.book.fleet_steps(
            &config,
            &self.registry,
            FleetKey { route, revision },
            (series, times),
            crate::clock::wall_ms(),
        ) {
            self.publish(&w, self.current.load().generation);
        }
    }

    /// The analysis source did not answer for evaluation time `eval_ms`.
    pub fn fleet_unavailable(&self, route: &str, revision: &str, eval_ms: u64, error: &str) {
        let mut w = self.lock();
        let config = Arc::clone(&w.config);
        w.book.fleet_unavailable(
            &config,
            &self.registry,
            FleetKey { route, revision },
            (eval_ms, error),
            crate::clock::wall_ms(),
        );
    }

    /// What fleet judgement has cost so far (queries, bytes received).
    pub fn fleet_cost(&self, c: crate::fleet::prom::Cost) {
        self.fleet_queries.store(c.queries, std::sync::atomic::Ordering::Relaxed);
        self.fleet_bytes.store(c.bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// A route's fleet judgement, for `/routes`.
    pub fn fleet_view(&self, route: &str) -> Option<serde_json::Value> {
        self.lock().book.fleet_view(route)
    }

    /// Persisted rollout state of a route (for views).
    pub fn rollout_state(&self, route: &str) -> Option<crate::analysis::machine::RouteState> {
        self.lock().book.state(route).cloned()
    }
}

/// Routes whose canary was just withdrawn (rollback or kill switch, config or
/// admin) and whose canary WebSockets should be closed, with the close rate.
fn withdrawn_canaries(old: &Snapshot, new: &Snapshot) -> Vec<(Arc<str>, f64)> {
    let off = |r: &crate::routing::Route| r.canary.is_some() && (r.overlay.killed || r.overlay.rolled_back);
    new.table
        .routes
        .iter()
        .filter(|r| off(r) && r.websocket.close_on_rollback)
        .filter(|r| !old.table.routes.iter().any(|o| o.name == r.name && off(o)))
        .map(|r| (Arc::clone(&r.name), r.websocket.close_rate_per_s))
        .collect()
}
