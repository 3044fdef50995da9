//! The compiled routing table: everything `decide` needs, built once per
//! reload by the config validator (header names parsed, salts joined with
//! their separator, weights in basis points, HMAC keys loaded).

use super::bucket::{BucketCookie, key_hash};
use super::{Bucket, BucketSource, Facts, Version};
use http::HeaderName;
use std::collections::HashMap;
use std::sync::Arc;

/// Routes plus a host index built once per reload. Edit routes' weights and
/// flags freely; changing their hosts needs `Table::new`.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Shared: a rollout publish copies only the routes whose overlay
    /// changed (`Rollouts::overlay`).
    pub routes: Vec<Arc<Route>>,
    index: Arc<HostIndex>,
}

/// Route indices (ascending) by host, so a request only looks at the routes
/// that can match its host instead of scanning them all.
#[derive(Debug, Clone, Default)]
struct HostIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Keyed by `.example.com` for `*.example.com`.
    suffix: HashMap<Box<str>, Vec<usize>>,
    /// Routes without `match.hosts`.
    any: Vec<usize>,
}

/// Longest host the index looks up; longer ones are matched by scanning.
const MAX_INDEXED_HOST: usize = 255;

impl Table {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut index = HostIndex::default();
        for (i, r) in routes.iter().enumerate() {
            if r.hosts.is_empty() {
                index.any.push(i);
            }
            for h in &r.hosts {
                let (map, key) = match h {
                    HostMatch::Exact(e) => (&mut index.exact, e),
                    HostMatch::Suffix(s) => (&mut index.suffix, s),
                };
                let list = map.entry(key.as_str().into()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        }
        Self { routes: routes.into_iter().map(Arc::new).collect(), index: Arc::new(index) }
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name).map(|r| &**r)
    }

    /// The first route in file order matching the request (host, path,
    /// and `match.scheme`/`match.methods` where a route has them).
    pub fn find(&self, facts: &Facts<'_>) -> Option<usize> {
        let host = facts.host;
        if host.len() > MAX_INDEXED_HOST {
            return self.routes.iter().position(|r| r.matches(facts));
        }
        let mut buf = [0u8; MAX_INDEXED_HOST];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // Lower-casing ASCII bytes keeps UTF-8 valid.
        let Ok(host) = std::str::from_utf8(lower) else { return None };
        let first_in = |list: &[usize]| list.iter().copied().find(|&i| self.fits(i, facts));
        let mut best = first_in(&self.index.any);
        let mut consider = |found: Option<usize>| {
            if let Some(i) = found {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        };
        if let Some(list) = self.index.exact.get(host) {
            consider(first_in(list));
        }
        if !self.index.suffix.is_empty() {
            // Every proper suffix starting at a dot: `.b.c` and `.c` for `a.b.c`.
            for (pos, _) in host.match_indices('.').filter(|(p, _)| *p > 0) {
                if let Some(list) = self.index.suffix.get(&host[pos..]) {
                    consider(first_in(list));
                }
            }
        }
        best
    }

    /// Everything but the host (the index has settled that).
    fn fits(&self, i: usize, facts: &Facts<'_>) -> bool {
        self.routes.get(i).is_some_and(|r| r.path.matches(facts.path) && r.filter.fits(facts))
    }
}

/// One version of a route: which upstream serves it and what it runs.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Index into the snapshot's upstream list.
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    pub revision: Arc<str>,
    /// `stable.request_headers`/`response_headers` (the same under
    /// `canary`): applied after the route's own.
    pub modifiers: Option<Arc<super::edge::Modifiers>>,
}

#[derive(Debug, Clone)]
pub enum HostMatch {
    /// Lower-case exact host.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain, not the apex.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum KeySource {
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

impl KeySource {
    fn read<'a>(&self, facts: &Facts<'a>) -> Option<&'a str> {
        let v = match self {
            KeySource::Header(h) => facts.header(h),
            KeySource::Cookie(c) => facts.cookie(c),
            KeySource::Query(q) => facts.query_param(q),
        }?;
        (!v.is_empty()).then_some(v)
    }

    pub fn describe(&self) -> String {
        match self {
            KeySource::Header(h) => format!("header:{h}"),
            KeySource::Cookie(c) => format!("cookie:{c}"),
            KeySource::Query(q) => format!("query:{q}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub keys: Vec<KeySource>,
    /// The salt followed by the `\x1f` separator.
    pub salt_sep: Vec<u8>,
    pub cookie: Option<BucketCookie>,
}

#[derive(Debug, Clone, Default)]
pub struct Override {
    pub header: Option<HeaderName>,
    pub cookie: Option<String>,
}

impl Override {
    /// `canary` or `stable` from the override header, else the cookie.
    pub fn read(&self, facts: &Facts<'_>) -> Option<Version> {
        let parse = |v: &str| match v {
            "canary" => Some(Version::Canary),
            "stable" => Some(Version::Stable),
            _ => None,
        };
        self.header
            .as_ref()
            .and_then(|h| facts.header(h))
            .and_then(parse)
            .or_else(|| self.cookie.as_deref().and_then(|c| facts.cookie(c)).and_then(parse))
    }
}

/// Which request paths a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `path_prefix`: a plain string prefix (`/api` takes `/apix` too).
    Str(String),
    /// `path` with `path_type: exact`.
    Exact(String),
    /// `path` with `path_type: prefix`: whole segments, as Kubernetes'
    /// `Prefix` (`/api` and `/api/` take `/api`, `/api/x`; not `/apix`).
    Segments(String),
    /// `path` with `path_type: regex`: a regex anchored at the path's
    /// start (ingress-nginx's `location ~* ^…`), linear-time.
    Regex(PathRegex),
}

/// A path regex anchored at the start, as written and compiled.
#[derive(Debug, Clone)]
pub struct PathRegex {
    written: String,
    ignore_case: bool,
    re: regex::Regex,
}

/// Longest path pattern accepted and the compiled size allowed: matching
/// stays linear in the path's length (no backtracking) and bounded in memory.
pub const MAX_PATH_REGEX_LEN: usize = 1024;
const MAX_PATH_REGEX_SIZE: usize = 256 * 1024;

impl PathRegex {
    pub fn new(written: &str, ignore_case: bool) -> Result<Self, regex::Error> {
        if written.len() > MAX_PATH_REGEX_LEN {
            return Err(regex::Error::CompiledTooBig(MAX_PATH_REGEX_LEN));
        }
        let re = regex::RegexBuilder::new(&format!("^(?:{written})"))
            .case_insensitive(ignore_case)
            .size_limit(MAX_PATH_REGEX_SIZE)
            .dfa_size_limit(MAX_PATH_REGEX_SIZE)
            .build()?;
        Ok(Self { written: written.to_owned(), ignore_case, re })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path)
    }

    pub fn captures<'p>(&self, path: &'p str) -> Option<regex::Captures<'p>> {
        self.re.captures(path)
    }

    /// Capture groups, the whole match not counted.
    pub fn groups(&self) -> usize {
        self.re.captures_len().saturating_sub(1)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written && self.ignore_case == other.ignore_case
    }
}

impl Eq for PathRegex {}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(p) => path.starts_with(p.as_str()),
            PathMatch::Exact(p) => path == p,
            PathMatch::Segments(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty() || (path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }

    /// As the config file writes it.
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Str(p) => format!("prefix {p}"),
            PathMatch::Exact(p) => format!("exactly {p}"),
            PathMatch::Segments(p) => format!("path segments {p}"),
            PathMatch::Regex(r) => format!("regex ^{}{}", r.written, if r.ignore_case { " (any case)" } else { "" }),
        }
    }
}

#[derive(Debug, Clone)]
pub enum SegmentMatcher {
    Header(HeaderName, Vec<String>),
    /// A regex searched in the header's value (not anchored; use `^…$`).
    HeaderRegex(HeaderName, regex::bytes::Regex),
    Cookie(String, Vec<String>),
    Query(String, Vec<String>),
    /// A field of the client certificate the listener verified: one of
    /// the certificate's values for it equals one of these.
    ClientCert(crate::tls::CertField, Vec<String>),
    /// Any verified client certificate.
    ClientCertPresent,
}

impl SegmentMatcher {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        let (value, allowed) = match self {
            SegmentMatcher::HeaderRegex(h, re) => {
                return facts.headers.get(h).is_some_and(|v| re.is_match(v.as_bytes()));
            }
            SegmentMatcher::ClientCert(field, allowed) => {
                return facts.client_cert.is_some_and(|c| c.values(*field).iter().any(|v| allowed.contains(v)));
            }
            SegmentMatcher::ClientCertPresent => return facts.client_cert.is_some(),
            // Compared as bytes: equal to one of the (valid) listed values
            // means valid, so the header needs no separate text check.
            SegmentMatcher::Header(h, vs) => (facts.headers.get(h).map(http::HeaderValue::as_bytes), vs),
            SegmentMatcher::Cookie(c, vs) => (facts.cookie(c).map(str::as_bytes), vs),
            SegmentMatcher::Query(q, vs) => (facts.query_param(q).map(str::as_bytes), vs),
        };
        value.is_some_and(|v| allowed.iter().any(|a| a.as_bytes() == v))
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    /// All must fit.
    pub matchers: Vec<SegmentMatcher>,
    pub weight_bp: u16,
}

impl Segment {
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        self.matchers.iter().all(|m| m.matches(facts))
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// The name as a header value for `x-weir-route` (built once per reload).
    pub name_header: http::HeaderValue,
    /// Empty: any host.
    pub hosts: Vec<HostMatch>,
    pub path: PathMatch,
    /// `match.scheme`, `match.methods`.
    pub filter: RouteFilter,
    pub stable: Backend,
    pub canary: Option<Backend>,
    /// Weight from the config file, basis points.
    pub config_weight_bp: u16,
    /// `kill_switch` as written in the config file.
    pub config_killed: bool,
    pub analysis: Option<Arc<super::policy::Analysis>>,
    pub progression: Option<Arc<super::policy::Progression>>,
    /// What the rollout makes of the config right now (never read from
    /// the file; set by `rollout::Rollouts::overlay` on every publish).
    pub overlay: Overlay,
    pub expose_version: bool,
    pub shadow: Option<Arc<super::policy::Shadow>>,
    pub websocket: super::policy::WebSocketPolicy,
    pub control: super::policy::Control,
    pub sticky: Option<Sticky>,
    pub override_: Option<Override>,
    pub segments: Vec<Segment>,
    /// gRPC codes that count as the version's errors, a bit per code
    /// (`grpc.error_codes`; default `labels::GRPC_DEFAULT_ERRORS`).
    pub grpc_errors: u32,
    /// Timeouts, body size, header modifiers, rewrite, redirect; None
    /// when the route has none of them.
    pub edge: Option<Arc<super::edge::Edge>>,
}

/// Route matches beyond host and path.
#[derive(Debug, Clone, Default)]
pub struct RouteFilter {
    /// `match.scheme`: `https` (came over TLS) or `http`; None: either.
    pub https: Option<bool>,
    /// `match.methods`; empty: any.
    pub methods: Vec<http::Method>,
    /// `match.header`, `header_regex`, `cookie`, `query`: all must fit
    /// (the same conditions a segment takes).
    pub conditions: Vec<SegmentMatcher>,
}

impl RouteFilter {
    pub fn fits(&self, facts: &Facts<'_>) -> bool {
        self.https.is_none_or(|h| h == facts.https)
            && (self.methods.is_empty() || self.methods.contains(facts.method))
            && self.conditions.iter().all(|c| c.matches(facts))
    }

    /// As the config file writes it; empty when the filter takes all.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        if let Some(h) = self.https {
            out.push(format!("scheme {}", if h { "https" } else { "http" }));
        }
        if !self.methods.is_empty() {
            out.push(format!(
                "methods {}",
                self.methods.iter().map(http::Method::as_str).collect::<Vec<_>>().join(",")
            ));
        }
        out.join(", ")
    }
}

/// The runtime side of a route: its rollout state applied to the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// Weight in force (config weight, or a progression step), basis points.
    pub weight_bp: u16,
    /// Config `kill_switch` or an admin kill.
    pub killed: bool,
    /// Latched automatic or admin rollback.
    pub rolled_back: bool,
    /// Rollout state in force (views only).
    pub phase: Phase,
    /// Index into `progression.steps` while progression runs.
    pub step: Option<usize>,
}

impl Overlay {
    /// Canary weight in force: 0 without a canary, killed or rolled back.
    /// The one place this rule lives.
    pub fn effective_bp(&self, has_canary: bool) -> u16 {
        if !has_canary || self.killed || self.rolled_back { 0 } else { self.weight_bp }
    }

    /// The overlay of a config before any rollout state applies.
    pub fn of_config(weight_bp: u16, killed: bool) -> Self {
        Self {
            weight_bp,
            killed,
            rolled_back: false,
            phase: if killed { Phase::Killed } else { Phase::Steady },
            step: None,
        }
    }
}

impl Route {
    /// Canary weight actually in force: 0 without a canary, while killed
    /// or rolled back.
    pub fn effective_weight_bp(&self) -> u16 {
        self.overlay.effective_bp(self.canary.is_some())
    }

    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(facts.host)))
            && self.path.matches(facts.path)
            && self.filter.fits(facts)
    }

    pub fn backend(&self, version: Version) -> &Backend {
        match (version, &self.canary) {
            (Version::Canary, Some(c)) => c,
            _ => &self.stable,
        }
    }

    /// Bucket from the first sticky key present, else a valid bucket cookie,
    /// else `draw` (and ask for a cookie when one is configured).
    pub fn bucket(&self, facts: &Facts<'_>, draw: u16) -> (Bucket, Option<u16>) {
        let Some(sticky) = &self.sticky else {
            return (Bucket { value: draw, source: BucketSource::Random, user: 0 }, None);
        };
        for (i, key) in sticky.keys.iter().enumerate() {
            if let Some(v) = key.read(facts) {
                let user = key_hash(&sticky.salt_sep, v.as_bytes());
                // The modulo result is < 10000, so it always fits in u16.
                let value = (user % u64::from(crate::routing::BUCKETS)) as u16;
                return (Bucket { value, source: BucketSource::Key(i), user }, None);
            }
        }
        match &sticky.cookie {
            Some(c) => match facts.cookie(&c.name).and_then(|v| c.decode(v)) {
                // A cookie holder is a unit of evidence like a keyed user:
                // all its requests share one version, so it is counted once
                // (by its bucket: holders of one bucket are one unit).
                Some(value) => {
                    let [hi, lo] = value.to_be_bytes();
                    let user = key_hash(&sticky.salt_sep, &[0, b'c', hi, lo]);
                    (Bucket { value, source: BucketSource::Cookie, user }, None)
                }
                None => (Bucket { value: draw, source: BucketSource::Random, user: 0 }, Some(draw)),
            },
            None => (Bucket { value: draw, source: BucketSource::Random, user: 0 }, None),
        }
    }
}

/// What `GET /routes` calls `state`: the rollout phase a route is in (set
/// by the rollout book's overlay; routing itself only reads kill/rollback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Fixed config weight, no progression.
    #[default]
    Steady,
    Progressing,
    Paused,
    /// Progression walked every step.
    Promoted,
    /// The SLO guard holds: stable breaks an SLO too, so nothing moves.
    Held,
    RolledBack,
    Killed,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Steady,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoted,
        Phase::Held,
        Phase::RolledBack,
        Phase::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Held => "held",
            Phase::RolledBack => "rolled_back",
            Phase::Killed => "killed",
        }
    }
}
