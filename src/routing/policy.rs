//! What a route does besides choosing a version, as the config file gave
//! it: how its canary is judged (`analysis`), the steps it walks
//! (`progression`), what it mirrors (`shadow`) and what its WebSocket
//! sockets get (`websocket`). Plain data: the config module builds and
//! validates it; the routing table carries it on each route.

use crate::units;
use std::sync::Arc;
use std::time::Duration;

/// `routes[].analysis`: how the canary is judged (judgement.md): evidence
/// tests against stable, an absolute SLO guard, and what is done with the
/// verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    #[serde(serialize_with = "units::ser_duration_ms", rename = "interval_ms")]
    pub interval: Duration,
    /// Stable's latency quantiles over this window set the next interval's
    /// latency lines.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "window_ms")]
    pub window: Duration,
    pub mode: AnalysisMode,
    /// Chance (0–1) that a healthy canary is ever rolled back, per rollout.
    pub alpha: f64,
    /// Test E's null: canary error odds up to this many times stable's.
    pub error_tolerance: f64,
    /// Test E fails only if canary's error % exceeds stable's by at least
    /// this many percentage points.
    pub min_error_delta: f64,
    /// Canary is "slower" only beyond (1 + this) × stable's line.
    pub latency_tolerance: f64,
    /// Latency tests skip this long after each step begins.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "warmup_ms")]
    pub warmup: Duration,
    /// A fresh epoch process starts this often within a step.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "epoch_ms")]
    pub epoch: Duration,
    /// SLO guard: percent of requests that may be errors.
    pub max_error_rate: Option<f64>,
    #[serde(serialize_with = "units::ser_opt_duration_ms", rename = "max_p95_ms")]
    pub max_p95: Option<Duration>,
    #[serde(serialize_with = "units::ser_opt_duration_ms", rename = "max_p99_ms")]
    pub max_p99: Option<Duration>,
    #[serde(serialize_with = "units::ser_opt_duration_ms", rename = "max_ws_rtt_p95_ms")]
    pub max_ws_rtt_p95: Option<Duration>,
    /// Fleet mode: judge from the fleet's counts in Prometheus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<FleetSource>,
}

/// `analysis.source`: the Prometheus every replica is scraped by. Each
/// replica asks it for the fleet's evidence at aligned evaluation times.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetSource {
    /// Base URL as written (`http://prometheus.monitoring:9090`).
    pub prometheus: String,
    /// `host:port` to connect to.
    #[serde(skip)]
    pub authority: String,
    /// Path prefix before `/api/v1/…` (empty, or `/prometheus`).
    #[serde(skip)]
    pub path_prefix: String,
    /// How often Prometheus scrapes weir's admin port.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "scrape_interval_ms")]
    pub scrape_interval: Duration,
    /// How long after an evaluation time its question is asked: a scrape
    /// that began before it must have been stored by then.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "lag_ms")]
    pub lag: Duration,
    /// Per query.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "timeout_ms")]
    pub timeout: Duration,
}

/// `analysis.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMode {
    /// Verdicts roll back and advance.
    Enforce,
    /// Verdicts are journaled and shown, never acted on (dry run).
    Observe,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            mode: AnalysisMode::Enforce,
            alpha: 0.01,
            error_tolerance: 1.25,
            min_error_delta: 0.1,
            latency_tolerance: 0.05,
            warmup: Duration::from_secs(10),
            epoch: Duration::from_secs(60),
            max_error_rate: None,
            max_p95: None,
            max_p99: None,
            max_ws_rtt_p95: None,
            source: None,
        }
    }
}

/// `routes[].progression`: the steps weir walks the canary weight through.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progression {
    /// Canary weights, basis points, strictly increasing.
    pub steps: Vec<u16>,
    #[serde(serialize_with = "units::ser_duration_ms", rename = "hold_ms")]
    pub hold: Duration,
}

/// `routes[].shadow`: a sample of the route's traffic mirrored, fire and
/// forget, to an upstream whose answers nobody sees (design §10).
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    /// Index into `Snapshot::upstreams`.
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    /// Share of matching requests (or of sticky users), basis points.
    pub percent_bp: u16,
    pub methods: Vec<http::Method>,
    /// Bodies larger than this are not mirrored (counted `skipped_body`).
    pub max_body: u64,
    /// Copies in flight for this route; over it, copies are dropped.
    pub max_in_flight: usize,
    /// Whole exchange with the shadow upstream, body included.
    pub timeout: Duration,
}

impl serde::Serialize for Shadow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("upstream", &*self.upstream_name)?;
        m.serialize_entry("percent", &units::bp_to_percent(self.percent_bp))?;
        m.serialize_entry("methods", &self.methods.iter().map(http::Method::as_str).collect::<Vec<_>>())?;
        m.serialize_entry("max_body", &self.max_body)?;
        m.serialize_entry("max_in_flight", &self.max_in_flight)?;
        m.serialize_entry("timeout_ms", &u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX))?;
        m.end()
    }
}

/// `routes[].websocket`: what upgraded sockets get (design §9).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WebSocketPolicy {
    /// `on_rollback: close` (true, the default) or `keep`.
    pub close_on_rollback: bool,
    /// Canary sockets closed per second on rollback or kill.
    pub close_rate_per_s: f64,
    /// No byte from the client for this long: the socket is closed.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "idle_timeout_ms")]
    pub idle_timeout: Duration,
    /// A quiet client is pinged this often (its pong keeps it alive); 0 = never.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "ping_interval_ms")]
    pub ping_interval: Duration,
    /// The upstream is pinged this often and its pong timed (round-trip
    /// evidence per version); 0 = never.
    #[serde(serialize_with = "units::ser_duration_ms", rename = "rtt_interval_ms")]
    pub rtt_interval: Duration,
}

impl Default for WebSocketPolicy {
    fn default() -> Self {
        Self {
            close_on_rollback: true,
            close_rate_per_s: 200.0,
            idle_timeout: Duration::from_secs(300),
            ping_interval: Duration::from_secs(30),
            rtt_interval: Duration::ZERO,
        }
    }
}

/// `routes[].control`: who steers the route's canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// weir steps, holds and rolls back by itself on its verdicts.
    #[default]
    Weir,
    /// An outside controller (Argo Rollouts, Flagger, a pipeline) steers:
    /// weir still judges, journals and exports every verdict, but never
    /// steps or rolls back by itself. Steering comes through the admin API
    /// (`promote`, `rollback`, `pause`, …) or config edits, so weir and the
    /// outside controller never both steer.
    External,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Weir => "weir",
            Control::External => "external",
        }
    }

    /// The analysis mode the route's verdicts are acted on with: an
    /// externally controlled route is judged as in `observe`.
    pub fn acting_mode(self, configured: AnalysisMode) -> AnalysisMode {
        match self {
            Control::Weir => configured,
            Control::External => AnalysisMode::Observe,
        }
    }
}
