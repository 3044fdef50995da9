//! The config file exactly as written: serde structs with
//! `deny_unknown_fields`, no defaults applied and nothing checked beyond
//! types. `validate` turns this into a `Snapshot`.
//!
//! Keys that belong to features this build does not implement yet are still
//! parsed (as `IgnoredAny`) so that `validate` can reject them by name instead
//! of the operator believing they took effect.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: Vec<RawListen>,
    pub admin: Option<RawAdmin>,
    pub state_dir: Option<String>,
    pub journal: Option<RawJournal>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub limits: Option<RawLimits>,
    pub shutdown: Option<RawShutdown>,
    /// weir extension: `false` turns off the per-request JSON access log.
    pub access_log: Option<bool>,
    /// DNS servers for `upstreams.X.dns` (default: /etc/resolv.conf).
    pub resolver: Option<RawResolver>,
    /// The proxies whose X-Forwarded-For (or PROXY header) names the client.
    pub real_ip: Option<RawRealIp>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    #[serde(default)]
    pub nameservers: Vec<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub name: String,
    pub port: u64,
    /// Fixed re-resolve period; without it, the answer's TTL within
    /// `min_ttl`..`max_ttl`.
    pub refresh: Option<String>,
    pub min_ttl: Option<String>,
    pub max_ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<u64>,
    pub on: Option<Vec<StatusOrWord>>,
    pub budget: Option<PercentValue>,
}

/// `502` or `connect_failure`, as YAML writes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusOrWord {
    Status(u64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub name: Option<String>,
    pub url: String,
    pub format: Option<String>,
    pub events: Option<Vec<String>>,
    pub token_file: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    pub rotate_size: Option<SizeValue>,
    pub rotate_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: String,
    pub tls: Option<RawTls>,
    /// Every connection starts with a PROXY header (v1 or v2).
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRealIp {
    /// Addresses or blocks (`10.0.0.0/8`) of trusted proxies.
    pub trusted: Vec<String>,
    /// Default `x-forwarded-for`.
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests: u64,
    /// Default 1s.
    pub per: Option<String>,
    /// Default: `requests` (one period's worth at once).
    pub burst: Option<u64>,
    /// `client_ip` (default) or `header:NAME`.
    pub key: Option<String>,
    pub max_keys: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    #[serde(default)]
    pub certs: Vec<RawCert>,
    /// CA bundle (PEM) that signs the client certificates this listener
    /// asks for; without it the listener asks for none.
    pub client_ca: Option<String>,
    /// `required` (default with `client_ca`) or `optional`.
    pub client_auth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_read_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_headers: Option<u64>,
    pub max_header_bytes: Option<SizeValue>,
    pub max_request_body: Option<SizeValue>,
    pub max_connections: Option<u64>,
    pub max_in_flight: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub delay: Option<String>,
    pub grace: Option<String>,
}

/// A size written either as bytes (`65536`) or with a unit (`64KiB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub passive: Option<RawPassive>,
    pub active: Option<RawActive>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActive {
    pub path: Option<String>,
    pub grpc_service: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy: Option<u64>,
    pub unhealthy: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    pub consecutive_failures: Option<u64>,
    pub eject: Option<String>,
    pub max_ejected: Option<PercentValue>,
    /// Response statuses that count as failed attempts (default 502, 503, 504).
    pub statuses: Option<Vec<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Endpoints from DNS instead: every A/AAAA record.
    pub dns: Option<RawDns>,
    pub retry: Option<RawRetry>,
    /// `p2c` (default) or `round_robin`.
    pub balance: Option<String>,
    /// `http1` (default), `h2c` or `h2` (TLS).
    pub protocol: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub health: Option<RawHealth>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub body_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub match_: Option<RawRouteMatch>,
    /// Required unless the route is a `redirect`.
    pub stable: Option<RawVersion>,
    pub canary: Option<RawVersion>,
    pub weight: Option<f64>,
    pub kill_switch: Option<bool>,
    pub expose_version: Option<bool>,
    pub sticky: Option<RawSticky>,
    #[serde(rename = "override")]
    pub override_: Option<RawOverride>,
    #[serde(default)]
    pub segments: Vec<RawSegment>,
    pub shadow: Option<RawShadow>,
    pub analysis: Option<RawAnalysis>,
    pub progression: Option<RawProgression>,
    pub websocket: Option<RawWebsocket>,
    pub control: Option<crate::routing::policy::Control>,
    pub grpc: Option<RawGrpc>,
    pub timeouts: Option<RawTimeouts>,
    /// Replaces `limits.max_request_body` on this route.
    pub max_request_body: Option<SizeValue>,
    pub request_headers: Option<RawHeaderOps>,
    pub response_headers: Option<RawHeaderOps>,
    pub rewrite: Option<RawRewrite>,
    pub redirect: Option<RawRedirect>,
    pub rate_limit: Option<RawRateLimit>,
    pub cors: Option<RawCors>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// `*`, `https://app.example.com` or `https://*.example.com`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    pub allow_headers: Option<Vec<String>>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub allow_credentials: Option<bool>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// The whole exchange to the answer's head, retries included.
    pub request: Option<String>,
    /// Each attempt at an upstream, to its answer's head.
    pub backend: Option<String>,
}

/// `set`/`add`: name → value; `remove`: names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    /// The whole path (`$1`… on a `path_type: regex` route).
    pub path: Option<String>,
    /// What replaces the part the route's prefix matched.
    pub path_prefix: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u64>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// 301, 302 (default), 303, 307 or 308.
    pub status: Option<u64>,
    /// Default true: the request's query string goes on the Location.
    pub keep_query: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    /// gRPC status codes (names or numbers) that count as errors.
    pub error_codes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub upstream: String,
    pub percent: Option<f64>,
    pub methods: Option<Vec<String>>,
    pub max_body: Option<SizeValue>,
    pub max_in_flight: Option<u64>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebsocket {
    pub on_rollback: Option<String>,
    pub close_rate: Option<String>,
    pub idle_timeout: Option<String>,
    pub ping_interval: Option<String>,
    pub rtt_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub interval: Option<String>,
    pub window: Option<String>,
    pub mode: Option<String>,
    /// Percent: `1` or `"1%"`.
    pub alpha: Option<PercentValue>,
    pub error_tolerance: Option<f64>,
    pub min_error_delta: Option<f64>,
    pub latency_tolerance: Option<f64>,
    pub warmup: Option<String>,
    pub epoch: Option<String>,
    pub max_error_rate: Option<PercentValue>,
    pub max_p95: Option<String>,
    pub max_p99: Option<String>,
    pub max_ws_rtt_p95: Option<String>,
    pub source: Option<RawSource>,
    /// Deprecated (the window rule): accepted with a warning, ignored.
    pub min_requests: Option<u64>,
    pub max_p99_ratio: Option<f64>,
    pub failures: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub prometheus: Option<String>,
    pub scrape_interval: Option<String>,
    pub lag: Option<String>,
    pub timeout: Option<String>,
}

/// A percent written as a number (`1.5`) or with its sign (`"1.5%"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PercentValue {
    Number(f64),
    Text(String),
}

impl PercentValue {
    pub fn percent(&self) -> Result<f64, String> {
        match self {
            PercentValue::Number(n) => Ok(*n),
            PercentValue::Text(t) => t
                .trim()
                .strip_suffix('%')
                .unwrap_or(t.trim())
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{t}` is not a percent (e.g. 1 or \"1%\")")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProgression {
    #[serde(default)]
    pub steps: Vec<f64>,
    pub hold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteMatch {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub path_type: Option<String>,
    /// `path_type: regex` only: match letters in any case (ingress-nginx).
    pub ignore_case: Option<bool>,
    /// `http` or `https`: only requests that came over plain HTTP or TLS.
    pub scheme: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Conditions as a segment's (all must fit): `header`, `header_regex`,
    /// `cookie`, `query`.
    #[serde(default)]
    pub header: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub header_regex: BTreeMap<String, String>,
    #[serde(default)]
    pub cookie: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub query: BTreeMap<String, OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub upstream: String,
    pub revision: Option<String>,
    pub request_headers: Option<RawHeaderOps>,
    pub response_headers: Option<RawHeaderOps>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(default)]
    pub keys: Vec<String>,
    pub salt: Option<String>,
    pub cookie: Option<RawBucketCookie>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucketCookie {
    pub name: Option<String>,
    pub max_age: Option<String>,
    pub secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSegment {
    pub name: String,
    #[serde(rename = "match")]
    pub match_: RawSegmentMatch,
    pub weight: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSegmentMatch {
    #[serde(default)]
    pub header: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub cookie: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub query: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub header_regex: BTreeMap<String, String>,
    /// The client certificate the listener verified (`listen[].tls.client_ca`).
    pub client_cert: Option<RawCertMatch>,
}

/// Fields of a verified client certificate; all listed must fit, a list
/// means any of these values; `{}` alone: any verified certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertMatch {
    /// Subject common name.
    pub cn: Option<OneOrMany>,
    /// Subject organization.
    pub o: Option<OneOrMany>,
    /// Subject organizational unit.
    pub ou: Option<OneOrMany>,
    /// A DNS name, email or URI in the subject alternative names.
    pub san: Option<OneOrMany>,
}

/// `x-market: SE` or `x-market: [SE, NO]`. Scalars of any YAML type
/// (`46`, `true`) are taken as their text, since they are compared with
/// header, cookie and query values.
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                loop {
                    match seq.next_element::<OneOrMany>()? {
                        Some(OneOrMany::One(v)) => out.push(v),
                        Some(OneOrMany::Many(_)) => {
                            return Err(serde::de::Error::custom("lists of values cannot be nested"));
                        }
                        None => break,
                    }
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}
