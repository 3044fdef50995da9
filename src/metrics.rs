//! Prometheus metrics (design §7): names as consts, counters and explicit-
//! bucket histograms held per (route, version) as plain atomics.
//!
//! Handles are created when a table is installed and carried across reloads
//! by route name, so counters never reset on a reload and the hot path only
//! does atomic adds on a handle it already holds (no label sets, no maps).
//! The text exposition is rendered on scrape. Hand-written rather than the
//! `metrics` crate: explicit buckets and cached per-route handles are the
//! whole requirement, and this keeps them obvious.

use crate::analysis::{Cell, Event, Judgement, Standing, Stratum, Verdict};
use crate::evidence::Evidence;
use crate::labels::{CloseWhy, RollbackReason};
use crate::routing::Phase;
use crate::routing::{Reason, Version};
use crate::stats::Window;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REQUESTS_TOTAL: &str = "weir_requests_total";
pub const REQUEST_DURATION: &str = "weir_request_duration_seconds";
pub const UPSTREAM_ERRORS_TOTAL: &str = "weir_upstream_errors_total";
pub const ROUTING_DECISIONS_TOTAL: &str = "weir_routing_decisions_total";
pub const CANARY_WEIGHT_RATIO: &str = "weir_canary_weight_ratio";
pub const ROLLOUT_STATE: &str = "weir_rollout_state";
pub const ANALYSIS_VERDICTS_TOTAL: &str = "weir_analysis_verdicts_total";
pub const ROLLBACKS_TOTAL: &str = "weir_rollbacks_total";
pub const WEBSOCKET_ACTIVE: &str = "weir_websocket_connections_active";
pub const WEBSOCKET_TOTAL: &str = "weir_websocket_connections_total";
pub const SHADOW_REQUESTS_TOTAL: &str = "weir_shadow_requests_total";
pub const SHADOW_MISMATCHES_TOTAL: &str = "weir_shadow_mismatches_total";
pub const SHADOW_DURATION: &str = "weir_shadow_duration_seconds";
pub const CONFIG_RELOADS_TOTAL: &str = "weir_config_reloads_total";
pub const CONFIG_GENERATION: &str = "weir_config_generation";
pub const BUILD_INFO: &str = "weir_build_info";
pub const READY: &str = "weir_ready";
pub const NOTIFICATIONS_TOTAL: &str = "weir_notifications_total";
mod text;

pub const WEBSOCKET_RTT: &str = "weir_websocket_rtt_seconds";
pub const ANALYSIS_EVIDENCE: &str = "weir_analysis_evidence";
pub const ANALYSIS_THRESHOLD: &str = "weir_analysis_evidence_threshold";
pub const EVIDENCE_UNITS: &str = "weir_analysis_units_total";
pub const EVIDENCE_BAD: &str = "weir_analysis_bad_units_total";
pub const EVIDENCE_SHARE: &str = "weir_analysis_null_share_ratio";
pub const ROLLOUT_CONTROL: &str = "weir_rollout_control";
pub const ROLLOUT_POSITION: &str = "weir_rollout_position";
pub const FLEET_START: &str = "weir_analysis_fleet_start_seconds";
pub const FLEET_EVALUATED: &str = "weir_analysis_fleet_evaluated_seconds";
pub const SOURCE_UP: &str = "weir_analysis_source_up";
pub const PROCESS_START: &str = "weir_process_start_time_seconds";
pub const ACCESS_LOG_DROPPED: &str = "weir_access_log_dropped_total";
pub const SOURCE_QUERIES: &str = "weir_analysis_source_queries_total";
pub const SOURCE_BYTES: &str = "weir_analysis_source_received_bytes_total";
/// Upstream connections closed because the upstream sent bytes no request
/// asked for, by upstream, endpoint and where they were found.
pub const UPSTREAM_UNSOLICITED: &str = "weir_upstream_unsolicited_total";
/// Endpoints per upstream, by state (healthy, ejected, draining).
pub const UPSTREAM_ENDPOINTS: &str = "weir_upstream_endpoints";
/// Attempts and failed attempts per endpoint in service (at most
/// `MAX_ENDPOINT_SERIES` per upstream, so the label set stays bounded).
pub const ENDPOINT_REQUESTS: &str = "weir_upstream_endpoint_requests_total";
pub const ENDPOINT_FAILURES: &str = "weir_upstream_endpoint_failures_total";
pub const MAX_ENDPOINT_SERIES: usize = 128;
/// Failed DNS lookups of an upstream's `dns` source.
pub const DNS_FAILURES: &str = "weir_upstream_dns_failures_total";
/// gRPC calls by route, version and `grpc-status` name.
pub const GRPC_RESPONSES: &str = "weir_grpc_responses_total";
/// Failed attempts retried on another endpoint, by route and version.
pub const RETRIED_ATTEMPTS: &str = "weir_retried_attempts_total";
/// Requests refused by a route's `rate_limit` (429).
pub const RATE_LIMITED: &str = "weir_rate_limited_total";
/// Keys a route's rate limit forgot to make room for new ones.
pub const RATE_LIMIT_EVICTIONS: &str = "weir_rate_limit_evictions_total";
/// Keys a route's rate limit remembers now.
pub const RATE_LIMIT_KEYS: &str = "weir_rate_limit_keys";
/// Requests no route matched (answered 404); no route label exists for them.
pub const UNROUTED_TOTAL: &str = "weir_unrouted_requests_total";

/// Histogram bucket bounds, seconds. A route's `analysis.max_p95` and
/// `max_p99` are added as extra edges (`SloEdges`) on every install, so the
/// SLO lines are bucket edges.
pub const LATENCY_BOUNDS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0];
const REASONS: [&str; 6] = ["weight", "segment", "override", "kill_switch", "rollback", "fallback"];
/// Sliding window of routes without `analysis` (with it: `analysis.window`),
/// in 10 slots, so the window slides in tenths.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
const WINDOW_SLOTS: usize = 10;

pub struct VersionMetrics {
    /// Index = status code (100–599); index 0 is `000` (no response).
    codes: Vec<AtomicU64>,
    /// Non-cumulative counts per `LATENCY_BOUNDS` bound.
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    /// The route's SLO lines as extra bucket edges.
    slo: SloEdges,
    sum_us: AtomicU64,
    count: AtomicU64,
    /// By `ErrorKind::ALL` order.
    upstream_errors: [AtomicU64; 5],
    decisions: [AtomicU64; 6],
    ws_active: AtomicI64,
    /// By `CloseWhy::ALL` order.
    ws_closed: [AtomicU64; 5],
    /// Failed attempts that were retried (on another endpoint of this
    /// version): `weir_retried_attempts_total`.
    retried: AtomicU64,
    /// gRPC calls by `grpc-status` (index = code).
    grpc: [AtomicU64; 17],
    pub window: Window,
    /// WebSocket ping round trips (upstream pong after weir's ping).
    rtt_buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    rtt_sum_us: AtomicU64,
    rtt_count: AtomicU64,
    /// Round trips over the analysis window (stable's p95 is W95's line).
    pub rtt_window: Window,
}

impl VersionMetrics {
    fn new(now: Instant) -> Self {
        Self {
            codes: (0..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            slo: SloEdges::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            upstream_errors: Default::default(),
            decisions: Default::default(),
            ws_active: AtomicI64::new(0),
            ws_closed: Default::default(),
            retried: AtomicU64::new(0),
            grpc: Default::default(),
            window: Window::new(DEFAULT_WINDOW, WINDOW_SLOTS, now),
            rtt_buckets: Default::default(),
            rtt_sum_us: AtomicU64::new(0),
            rtt_count: AtomicU64::new(0),
            rtt_window: Window::new(DEFAULT_WINDOW, WINDOW_SLOTS, now),
        }
    }

    /// One WebSocket ping round trip.
    pub fn rtt(&self, now: Instant, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(b) = LATENCY_BOUNDS.iter().position(|le| secs <= *le).and_then(|i| self.rtt_buckets.get(i)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.rtt_sum_us.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.rtt_count.fetch_add(1, Ordering::Relaxed);
        self.rtt_window.record(now, d, false);
    }

    /// The exported counters of one finished request (no sliding window).
    pub fn record_counters(&self, status: u16, latency: Duration) {
        let idx = if (100..600).contains(&status) { usize::from(status) } else { 0 };
        if let Some(c) = self.codes.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let secs = latency.as_secs_f64();
        if let Some(b) = LATENCY_BOUNDS.iter().position(|le| secs <= *le).and_then(|i| self.buckets.get(i)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.slo.record(latency);
        self.sum_us.fetch_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A finished streaming gRPC call: its status is counted; its duration
    /// enters no latency histogram (a stream's length is the client's).
    pub fn record_counters_only(&self, status: u16) {
        let idx = if (100..600).contains(&status) { usize::from(status) } else { 0 };
        if let Some(c) = self.codes.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One finished request: status (`0` = no response), latency, error per design §6.
    pub fn record(&self, now: Instant, status: u16, latency: Duration, error: bool) {
        // Histogram counts are non-cumulative here; made cumulative when rendered.
        self.record_counters(status, latency);
        self.window.record(now, latency, error);
    }

    /// A failed attempt that was retried: an error in the window (no
    /// latency: the user's request went on), counted apart.
    pub fn failed_attempt(&self, now: Instant) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        self.window.record_error_only(now);
    }

    /// A gRPC call ended with `code`.
    pub fn grpc(&self, code: u8) {
        if let Some(c) = self.grpc.get(usize::from(code)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// gRPC calls ended with each code so far, by code.
    pub fn grpc_counts(&self) -> [u64; 17] {
        std::array::from_fn(|i| self.grpc.get(i).map_or(0, |c| c.load(Ordering::Relaxed)))
    }

    pub fn retried_attempts(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    pub fn upstream_error(&self, kind: crate::labels::ErrorKind) {
        if let Some(c) = self.upstream_errors.get(kind as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn upstream_errors_of(&self, kind: crate::labels::ErrorKind) -> u64 {
        self.upstream_errors.get(kind as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn websocket_opened(&self) {
        self.ws_active.fetch_add(1, Ordering::Relaxed);
    }

    /// WebSockets open right now on this version.
    pub fn websockets_active(&self) -> i64 {
        self.ws_active.load(Ordering::Relaxed).max(0)
    }

    pub fn websocket_gone(&self) {
        self.ws_active.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn websocket_closed(&self, why: CloseWhy) {
        if let Some(i) = CloseWhy::ALL.iter().position(|x| *x == why) {
            self.ws_closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn decision(&self, reason: Reason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason.label()) {
            self.decisions[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct RouteMetrics {
    pub name: Arc<str>,
    pub stable: VersionMetrics,
    pub canary: VersionMetrics,
    /// Mirrored copies: never part of the stable/canary figures above.
    pub shadow: ShadowMetrics,
    /// By `Verdict::ALL` order.
    verdicts: [AtomicU64; 4],
    /// By `RollbackReason::ALL` order.
    rollbacks: [AtomicU64; RollbackReason::ALL.len()],
    /// The latest verdicts, newest last (for `GET /routes`).
    recent: Mutex<VecDeque<serde_json::Value>>,
    /// Each test's e-values after the latest verdict.
    standings: Mutex<Vec<Standing>>,
    /// What the judge gets: counts of this replica's evidence traffic.
    pub evidence: Evidence,
    /// Fleet mode's exported state (`crate::fleet`).
    pub fleet: FleetGauges,
}

/// Up to two extra histogram edges (a route's `max_p95` and `max_p99`),
/// set on every install, so an SLO added or changed by a reload becomes a
/// bucket edge at once. Each edge counts the samples between the `LATENCY_BOUNDS`
/// bound below it and itself; rendered cumulative, that stays monotone.
/// An edge's counts start when it was set.
#[derive(Debug, Default)]
pub struct SloEdges {
    /// Per edge: edge (µs, 0 = unset), the edge below it (a `LATENCY_BOUNDS` bound
    /// or the other SLO edge, µs), and the samples in (below, edge].
    edges: [(AtomicU64, AtomicU64, AtomicU64); 2],
}

impl SloEdges {
    fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        for (edge, below, count) in &self.edges {
            let e = edge.load(Ordering::Relaxed);
            if e > 0 && us <= e && us > below.load(Ordering::Relaxed) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Install `slos` as the edges (those equal to a `LATENCY_BOUNDS` bound need
    /// none). A changed edge starts counting from zero.
    pub fn set(&self, slos: &[Duration]) {
        let bound_us = |b: &f64| (b * 1e6).round() as u64;
        let mut wanted: Vec<u64> = slos
            .iter()
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .filter(|us| *us > 0 && !LATENCY_BOUNDS.iter().any(|b| bound_us(b) == *us))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted.truncate(self.edges.len());
        for (i, (edge, below, count)) in self.edges.iter().enumerate() {
            let want = wanted.get(i).copied().unwrap_or(0);
            let std_below = LATENCY_BOUNDS.iter().map(bound_us).filter(|b| *b < want).max().unwrap_or(0);
            let lower = match i.checked_sub(1).and_then(|j| wanted.get(j)) {
                Some(prev) => std_below.max(*prev),
                None => std_below,
            };
            if edge.load(Ordering::Relaxed) != want || below.load(Ordering::Relaxed) != lower {
                count.store(0, Ordering::Relaxed);
                below.store(lower, Ordering::Relaxed);
                edge.store(want, Ordering::Relaxed);
            }
        }
    }

    /// (edge seconds, samples in (edge below, edge]) of the set edges,
    /// ascending.
    fn snapshot(&self) -> Vec<(f64, u64)> {
        self.edges
            .iter()
            .filter_map(|(e, _, c)| {
                let e = e.load(Ordering::Relaxed);
                (e > 0).then(|| (e as f64 / 1e6, c.load(Ordering::Relaxed)))
            })
            .collect()
    }
}

/// What a replica tells the fleet about a route, through its own scrape:
/// the steering it serves with and where its fleet judgement stands.
#[derive(Debug, Default)]
pub struct FleetGauges {
    /// `weir_rollout_control`: epoch × 4 + rank (0 running, 1 paused,
    /// 2 killed, 3 rolled back); the fleet follows the highest.
    pub control: AtomicU64,
    /// `weir_rollout_position`: epoch × 1024 + progression step.
    pub position: AtomicU64,
    /// Evaluation time (ms) the fleet judgement of this revision started
    /// from; 0 before it has.
    pub start_ms: AtomicU64,
    /// Latest evaluation time judged (ms); 0 none.
    pub through_ms: AtomicU64,
    /// 0 not in fleet mode, 1 source unavailable, 2 source up.
    pub source: AtomicU64,
}

/// What became of a mirrored copy (label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowOutcome {
    /// The shadow answered (any status) within the timeout.
    Ok,
    /// Connect failure, reset or invalid response.
    Error,
    Timeout,
    /// Over `max_in_flight`: never sent.
    Dropped,
    /// Body over `max_body`, or the client's body never completed.
    SkippedBody,
}

impl ShadowOutcome {
    pub const ALL: [ShadowOutcome; 5] = [
        ShadowOutcome::Ok,
        ShadowOutcome::Error,
        ShadowOutcome::Timeout,
        ShadowOutcome::Dropped,
        ShadowOutcome::SkippedBody,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOutcome::Ok => "ok",
            ShadowOutcome::Error => "error",
            ShadowOutcome::Timeout => "timeout",
            ShadowOutcome::Dropped => "dropped",
            ShadowOutcome::SkippedBody => "skipped_body",
        }
    }
}

/// Per-route shadow figures, kept apart from the versions' so a shadow can
/// never move a window, a verdict or the request metrics.
pub struct ShadowMetrics {
    outcomes: [AtomicU64; 5],
    mismatches: AtomicU64,
    /// Copies being sent right now (the `max_in_flight` gate).
    pub in_flight: Arc<AtomicUsize>,
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for ShadowMetrics {
    fn default() -> Self {
        Self {
            outcomes: Default::default(),
            mismatches: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl ShadowMetrics {
    pub fn outcome(&self, o: ShadowOutcome) {
        if let Some(i) = ShadowOutcome::ALL.iter().position(|x| *x == o) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count_of(&self, o: ShadowOutcome) -> u64 {
        ShadowOutcome::ALL.iter().position(|x| *x == o).map_or(0, |i| self.outcomes[i].load(Ordering::Relaxed))
    }

    pub fn mismatch(&self) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
    }

    /// Time of one copy's exchange (sent ones only).
    pub fn duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(b) = LATENCY_BOUNDS.iter().position(|le| secs <= *le).and_then(|i| self.buckets.get(i)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many verdicts `GET /routes/{name}` shows.
const RECENT_VERDICTS: usize = 10;

impl RouteMetrics {
    pub fn verdict(&self, at: &str, j: &Judgement, streak: u32) {
        if let Some(i) = Verdict::ALL.iter().position(|x| *x == j.verdict) {
            self.verdicts[i].fetch_add(1, Ordering::Relaxed);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_VERDICTS {
            recent.pop_front();
        }
        recent.push_back(serde_json::json!({
            "at": at, "verdict": j.verdict.as_str(), "streak": streak,
            "test": j.fired.as_ref().map(|f| f.test.as_str()),
            "held_by": j.held_by.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "reason": j.reason,
        }));
        drop(recent);
        *self.standings.lock().unwrap_or_else(|p| p.into_inner()) = j.standings.clone();
    }

    /// Each test's e-values after the latest verdict.
    pub fn standings(&self) -> Vec<Standing> {
        self.standings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forget e-values shown (a new revision or a resumed rollback).
    pub fn clear_standings(&self) {
        self.standings.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn rolled_back(&self, reason: RollbackReason) {
        if let Some(c) = RollbackReason::ALL.iter().position(|x| *x == reason).and_then(|i| self.rollbacks.get(i)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn recent_verdicts(&self) -> Vec<serde_json::Value> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    pub fn version(&self, v: Version) -> &VersionMetrics {
        match v {
            Version::Stable => &self.stable,
            Version::Canary => &self.canary,
        }
    }
}

/// All route handles ever created, by name, so reloads reuse them.
#[derive(Default)]
pub struct Registry {
    routes: Mutex<HashMap<Arc<str>, Arc<RouteMetrics>>>,
    /// Requests that matched no route.
    pub unrouted: AtomicU64,
}

impl Registry {
    /// The handle for `name`, created on first use.
    pub fn route(&self, name: &Arc<str>) -> Arc<RouteMetrics> {
        let fresh = || {
            let now = Instant::now();
            Arc::new(RouteMetrics {
                name: Arc::clone(name),
                stable: VersionMetrics::new(now),
                shadow: ShadowMetrics::default(),
                canary: VersionMetrics::new(now),
                verdicts: Default::default(),
                rollbacks: Default::default(),
                recent: Mutex::new(VecDeque::with_capacity(RECENT_VERDICTS)),
                standings: Mutex::new(Vec::new()),
                evidence: Evidence::default(),
                fleet: FleetGauges::default(),
            })
        };
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still usable.
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(Arc::clone(name)).or_insert_with(fresh))
    }

    /// The handle for `name` with `slos` (e.g. `max_p95`, `max_p99`) as
    /// its histogram's extra edges, whenever and however it was created.
    pub fn route_with_slo(&self, name: &Arc<str>, slos: &[Duration]) -> Arc<RouteMetrics> {
        let m = self.route(name);
        m.stable.slo.set(slos);
        m.canary.slo.set(slos);
        m
    }
}

/// Process-level values rendered with the per-route ones.
pub struct Globals {
    pub generation: u64,
    /// Process start, seconds since the Unix epoch (a fleet source tells a
    /// restarted replica's counters from a reset by it).
    pub start_time_s: f64,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: u64,
    /// Queries sent to the fleet's analysis source, and bytes received.
    pub fleet_queries: u64,
    pub fleet_bytes: u64,
    pub unrouted: u64,
    pub reloads_success: u64,
    pub reloads_failure: u64,
    /// `/ready` would answer 200 (not starting, not draining).
    pub ready: bool,
    /// Per webhook: messages sent, failed (after every retry), dropped
    /// (queue full) and retried attempts.
    pub notifications: Vec<(String, [u64; 4])>,
    /// Per (upstream, endpoint): connections closed for unsolicited bytes,
    /// by `upstream::Unsolicited` (after a response, while idle).
    pub unsolicited: Vec<(String, String, [u64; 2])>,
    pub upstreams: Vec<UpstreamRow>,
}

/// One upstream's endpoints, for the `weir_upstream_*` families.
pub struct UpstreamRow {
    pub name: String,
    /// Endpoints by state: healthy, ejected, draining.
    pub by_state: [u64; 3],
    /// (address, attempts, failed attempts) of endpoints in service, at
    /// most `MAX_ENDPOINT_SERIES`.
    pub endpoints: Vec<(String, u64, u64)>,
    /// Failed lookups, for a DNS source.
    pub dns_failures: Option<u64>,
}

/// Route metrics plus the weights to show; built from what is serving.
pub struct RouteView<'a> {
    pub metrics: &'a RouteMetrics,
    pub config_weight_bp: u16,
    pub effective_weight_bp: u16,
    pub phase: Phase,
    /// The route mirrors traffic (its shadow series are rendered).
    pub shadow: bool,
    /// Canary revision (the evidence series carry it); None without canary.
    pub revision: Option<&'a str>,
    /// Segment names by index (evidence strata are labelled with them).
    pub segments: Vec<&'a str>,
    /// The route's rate-limit buckets (`rate_limit`), if it has one.
    pub limiter: Option<&'a crate::ratelimit::Limiter>,
}

pub use text::render;

#[cfg(test)]
mod tests;
