//! Config file -> validated, immutable `Snapshot`.
//!
//! `raw` is the file as written (serde, `deny_unknown_fields`), `validate`
//! checks everything and compiles the routing table, reporting every problem
//! at once (syntax errors with line/column, the rest with a field path such as
//! `routes[1].segments[0].weight`). Nothing here touches what is serving:
//! swapping a snapshot in is `live`'s job.

pub mod raw;
mod validate;

use crate::routing::Table;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use validate::validate;
// What a route does, defined beside the routes that carry it; named here
// too, as the config's own vocabulary.
use crate::routing::policy::{Analysis, AnalysisMode, FleetSource, Progression, Shadow, WebSocketPolicy};

/// Default admin listener (design §5).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path (`routes[1].weight`) or empty for syntax errors.
    pub path: String,
    /// 1-based line and column, for syntax and type errors.
    pub location: Option<(u64, u64)>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.location, self.path.is_empty()) {
            (Some((l, c)), _) => write!(f, "line {l}, column {c}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.path, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} problem(s) in {}", problems.len(), path.display())]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// Longest wait for the next piece of a request body (slow-body guard).
    pub body_timeout: Duration,
    /// An HTTP/2 client connection with no stream open this long gets a
    /// GOAWAY and is closed. (An idle HTTP/1.1 connection is already bound
    /// by `header_read_timeout`: the head deadline starts as it waits.)
    pub idle_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_request_body: u64,
    pub max_connections: usize,
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_request_body: 10 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight: 10_000,
        }
    }
}

/// How an upstream picks the endpoint for a request (design §13). The
/// version was already chosen (routing); this only picks the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Of two endpoints drawn at random, the one with fewer requests in
    /// flight (power of two choices): a slow pod gets less, without the
    /// herd that "least of all" causes across replicas.
    #[default]
    P2c,
    /// Each endpoint in turn.
    RoundRobin,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::P2c => "p2c",
            Balance::RoundRobin => "round_robin",
        }
    }
}

/// Passive health (design §13): an endpoint with `consecutive_failures`
/// failed attempts in a row is ejected for `eject` × its number of
/// ejections (at most 10×); at most `max_ejected_percent` of the
/// upstream's endpoints are ejected at once, and never all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passive {
    /// 0: passive health off.
    pub consecutive_failures: u32,
    pub eject: Duration,
    pub max_ejected_percent: u32,
    /// Response statuses counted as failed attempts (default 502, 503, 504).
    pub statuses: Vec<u16>,
}

impl Default for Passive {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            eject: Duration::from_secs(10),
            max_ejected_percent: 50,
            statuses: vec![502, 503, 504],
        }
    }
}

/// `upstreams.X.health.active` (design §13): every `interval`, a check
/// of each endpoint on a connection of its own, in the upstream's protocol
/// and TLS: a `GET path` answered 200–399, or with `grpc_service` a
/// `grpc.health.v1.Health/Check` answered SERVING, within `timeout`
/// passes. `unhealthy` failures in a row take the endpoint out of service,
/// `healthy` passes in a row put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub path: String,
    /// `grpc_service`: a gRPC health check of this service ("" the server
    /// as a whole) instead of the GET.
    pub grpc_service: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
}

/// `upstreams.X.dns` (design §13): every A/AAAA record of `name` is an
/// endpoint on `port`, re-resolved in the background.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSource {
    pub name: String,
    pub port: u16,
    /// Fixed period; None: the answer's TTL, clamped to `min_ttl..=max_ttl`.
    pub refresh: Option<Duration>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// The top-level `resolver:` (copied here so an upstream whose resolver
    /// changes is rebuilt by a reload, like any other change to it).
    pub resolver: ResolverSpec,
}

/// `resolver:`: DNS servers to ask (empty: /etc/resolv.conf, with its
/// search domains and ndots) and how long one query may take.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolverSpec {
    pub nameservers: Vec<SocketAddr>,
    pub timeout: Duration,
}

impl Default for ResolverSpec {
    fn default() -> Self {
        Self { nameservers: Vec::new(), timeout: Duration::from_secs(2) }
    }
}

/// What an attempt's failure was, for `retry.on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// No connection: refused, unreachable, connect timeout (the request
    /// never left weir; safe for every method).
    ConnectFailure,
    /// The connection broke before a whole response head came back.
    Reset,
    /// No response head within `request_timeout`.
    Timeout,
    /// This response status.
    Status(u16),
}

/// `upstreams.X.retry` (design §13): up to `attempts` more tries on other
/// endpoints of the same upstream, for failures listed in `on`, while the
/// retries of the last 10 s stay within `budget_percent` of its requests
/// (plus a floor of a few per window, so a quiet upstream can still retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    pub budget_percent: u32,
}

impl Default for Retry {
    /// Connect failures only: the request was never sent anywhere.
    fn default() -> Self {
        Self { attempts: 2, on: vec![RetryOn::ConnectFailure], budget_percent: 20 }
    }
}

impl Retry {
    pub fn on_connect(&self) -> bool {
        self.on.contains(&RetryOn::ConnectFailure)
    }

    pub fn on_status(&self, status: u16) -> bool {
        self.on.contains(&RetryOn::Status(status))
    }
}

/// `upstreams.X.protocol`: what weir speaks to the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1, a request per connection at a time (keep-alive pool).
    #[default]
    Http1,
    /// HTTP/2 without TLS (prior knowledge): many streams per connection.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`, `tls` required).
    H2,
    /// TLS, and ALPN decides per connection: `h2` if the endpoint agrees,
    /// else HTTP/1.1 (`tls` required).
    Auto,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
            Protocol::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub name: Arc<str>,
    /// `host:port`, as written (empty when `dns` is set).
    pub endpoints: Vec<String>,
    /// Endpoints from DNS instead of `endpoints`.
    pub dns: Option<DnsSource>,
    pub retry: Retry,
    /// `balance`, default `p2c`.
    pub balance: Balance,
    /// `protocol`, default `http1`.
    pub protocol: Protocol,
    /// `tls`: TLS to the endpoints (with `protocol: h2`).
    pub tls: Option<Arc<crate::tls::upstream::UpstreamTls>>,
    /// `health.passive` (on by default).
    pub passive: Passive,
    /// `health.active` (off unless set).
    pub active: Option<Active>,
    pub connect_timeout: Duration,
    /// From the end of the request (its body sent) to the response head.
    pub request_timeout: Duration,
    /// Longest a body stalls on this upstream: no byte of the response body
    /// read, or no byte of the request body taken, for this long.
    pub body_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Shutdown {
    pub delay: Duration,
    pub grace: Duration,
}

/// `journal:`: when `state_dir/journal.jsonl` is rotated into
/// `journal-<seq>.jsonl` (the hash chain runs on through the next file).
/// Rotated files are kept; retention is the operator's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRotation {
    /// `rotate_size` (default 64MiB).
    pub max_bytes: u64,
    /// `rotate_age` (default: none).
    pub max_age: Option<Duration>,
}

impl Default for JournalRotation {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, max_age: None }
    }
}

/// What a webhook is told about (`notify[].events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Rollback,
    Hold,
    Promoted,
    Step,
    Kill,
    ConfigRefused,
}

impl NotifyEvent {
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::Rollback,
        NotifyEvent::Hold,
        NotifyEvent::Promoted,
        NotifyEvent::Step,
        NotifyEvent::Kill,
        NotifyEvent::ConfigRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Rollback => "rollback",
            NotifyEvent::Hold => "hold",
            NotifyEvent::Promoted => "promoted",
            NotifyEvent::Step => "step",
            NotifyEvent::Kill => "kill",
            NotifyEvent::ConfigRefused => "config_refused",
        }
    }
}

/// `notify[].format`: the body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    /// The journal line plus `text` (a sentence ready to post).
    Json,
    /// `{"text": …}` for a Slack incoming webhook.
    Slack,
    /// A MessageCard for a Microsoft Teams incoming webhook.
    Teams,
}

/// One outbound webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySink {
    pub name: String,
    /// As written (shown in /config without its query string).
    pub url: String,
    pub tls: bool,
    /// `host:port` to connect to, and the host name (SNI, Host header).
    pub authority: String,
    pub host: String,
    /// Path and query to POST to.
    pub path: String,
    pub format: NotifyFormat,
    pub events: Vec<NotifyEvent>,
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// A validated config, ready to serve. Immutable once built.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Hex sha256 of the file bytes.
    pub sha256: String,
    pub listen: Vec<SocketAddr>,
    /// TLS per listener, index-aligned with `listen` (None: plain HTTP).
    pub tls: Vec<Option<Arc<crate::tls::Tls>>>,
    pub admin: SocketAddr,
    /// `admin.token_file`, resolved against the config directory.
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub journal: JournalRotation,
    /// Outbound webhooks told about rollbacks, holds, steps… (`notify:`).
    pub notify: Vec<NotifySink>,
    pub limits: Limits,
    pub shutdown: Shutdown,
    pub access_log: bool,
    /// `listen[].proxy_protocol`, index-aligned with `listen`.
    pub proxy_protocol: Vec<bool>,
    /// `real_ip`: the trusted proxies and the header they name clients in.
    pub real_ip: Option<Arc<crate::client_ip::RealIp>>,
    /// Shared, like the routes: a rollout publish copies neither.
    pub upstreams: Arc<[UpstreamSpec]>,
    pub table: Table,
    /// Things that load but deserve attention (deprecated keys), with paths.
    pub warnings: Vec<Problem>,
}

impl Snapshot {
    /// The upstream spec a backend index points to.
    pub fn upstream(&self, idx: usize) -> Option<&UpstreamSpec> {
        self.upstreams.get(idx)
    }
}

/// Hex sha256 of config bytes (used to skip reloads of unchanged files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Read and validate a config file.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let bytes = crate::files::read_capped(path, crate::files::MAX_CONFIG)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&bytes, path)
}

/// Validate config bytes read from `path` (relative file references such as
/// `secret_file` resolve against the file's directory).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Snapshot, ConfigError> {
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    validate(bytes, base).map_err(|problems| ConfigError::Invalid { path: path.to_path_buf(), problems })
}

/// Log what loaded but deserves attention (deprecated keys), one line each.
pub fn log_warnings(s: &Snapshot, path: &Path) {
    for w in &s.warnings {
        tracing::warn!(path = %path.display(), field = %w.path, problem = %w.message, "config warning");
    }
}
