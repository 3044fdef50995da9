//! The compiled routing table: everything `decide` needs, built once per
//! reload by the config validator (header names parsed, salts joined with
//! their separator, weights in basis points, HMAC keys loaded).

use super::bucket::{BucketCookie, bucket_of};
use super::{Bucket, BucketSource, Facts, Version};
use http::HeaderName;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub routes: Vec<Route>,
}

impl Table {
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name)
    }
}

/// One version of a route: which upstream serves it and what it runs.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Index into the snapshot's upstream list.
    pub upstream: usize,
    pub upstream_name: Arc<str>,
    pub revision: Arc<str>,
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

#[derive(Debug, Clone)]
pub enum SegmentMatcher {
    Header(HeaderName, Vec<String>),
    Cookie(String, Vec<String>),
    Query(String, Vec<String>),
}

impl SegmentMatcher {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        let (value, allowed) = match self {
            SegmentMatcher::Header(h, vs) => (facts.header(h), vs),
            SegmentMatcher::Cookie(c, vs) => (facts.cookie(c), vs),
            SegmentMatcher::Query(q, vs) => (facts.query_param(q), vs),
        };
        value.is_some_and(|v| allowed.iter().any(|a| a == v))
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
    pub path_prefix: String,
    pub stable: Backend,
    pub canary: Option<Backend>,
    /// Weight from the config file, basis points.
    pub config_weight_bp: u16,
    /// Weight in force (config weight, or a progression step), basis points.
    pub weight_bp: u16,
    /// Config `kill_switch` or an admin kill.
    pub killed: bool,
    /// Latched automatic or admin rollback.
    pub rolled_back: bool,
    pub expose_version: bool,
    pub sticky: Option<Sticky>,
    pub override_: Option<Override>,
    pub segments: Vec<Segment>,
}

impl Route {
    pub fn matches(&self, host: &str, path: &str) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host))) && path.starts_with(&self.path_prefix)
    }

    pub fn backend(&self, version: Version) -> &Backend {
        match (version, &self.canary) {
            (Version::Canary, Some(c)) => c,
            _ => &self.stable,
        }
    }

    /// Bucket from the first sticky key present, else a valid bucket cookie,
    /// else `draw` (and ask for a cookie when one is configured).
    pub(super) fn bucket(&self, facts: &Facts<'_>, draw: u16) -> (Bucket, Option<u16>) {
        let Some(sticky) = &self.sticky else {
            return (Bucket { value: draw, source: BucketSource::Random }, None);
        };
        for (i, key) in sticky.keys.iter().enumerate() {
            if let Some(v) = key.read(facts) {
                let value = bucket_of(&sticky.salt_sep, v.as_bytes());
                return (Bucket { value, source: BucketSource::Key(i) }, None);
            }
        }
        match &sticky.cookie {
            Some(c) => match facts.cookie(&c.name).and_then(|v| c.decode(v)) {
                Some(value) => (Bucket { value, source: BucketSource::Cookie }, None),
                None => (Bucket { value: draw, source: BucketSource::Random }, Some(draw)),
            },
            None => (Bucket { value: draw, source: BucketSource::Random }, None),
        }
    }
}
