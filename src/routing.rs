//! The routing decision of design §2, as a pure function.
//!
//! `decide(&table, &facts, draw)` picks the route, the version and the reason
//! for one request. It does no I/O, reads no clock and draws no random
//! numbers: the caller passes `draw` (a fresh bucket 0–9999 for requests
//! without a sticky key). The canary-unreachable fallback (§2 step 7) needs
//! I/O and lives in the proxy, which rewrites the reason to `Fallback`.

pub mod bucket;
pub mod edge;
pub mod facts;
pub mod policy;
mod table;

pub use bucket::{BUCKETS, BucketCookie, bucket_of, key_hash};
pub use facts::Facts;
pub use table::{
    Backend, HostMatch, KeySource, MAX_PATH_REGEX_LEN, Overlay, Override, PathMatch, PathRegex, Phase, Route,
    RouteFilter, Segment, SegmentMatcher, Sticky, Table,
};

/// A role behind a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    Stable,
    Canary,
}

impl Version {
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }
}

/// Why a version was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Weight,
    /// Index into the route's segments.
    Segment(usize),
    Override,
    KillSwitch,
    Rollback,
    Fallback,
}

impl Reason {
    /// Bounded label for metrics (`segment`, never the segment name).
    pub const fn label(self) -> &'static str {
        match self {
            Reason::Weight => "weight",
            Reason::Segment(_) => "segment",
            Reason::Override => "override",
            Reason::KillSwitch => "kill_switch",
            Reason::Rollback => "rollback",
            Reason::Fallback => "fallback",
        }
    }

    /// Human form for logs and explain: `segment:staff`.
    pub fn describe(self, route: &Route) -> String {
        match self {
            Reason::Segment(i) => match route.segments.get(i) {
                Some(s) => format!("segment:{}", s.name),
                None => "segment".to_string(),
            },
            other => other.label().to_string(),
        }
    }
}

/// Where the bucket came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketSource {
    /// Index into the route's sticky keys.
    Key(usize),
    Cookie,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub value: u16,
    pub source: BucketSource,
    /// With a sticky key: the key's full 64-bit hash (names the user for
    /// per-user evidence without keeping the key); else 0.
    pub user: u64,
}

/// The outcome of routing one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the route in the table.
    pub route: usize,
    pub version: Version,
    pub reason: Reason,
    /// None when the decision was made before a bucket was needed.
    pub bucket: Option<Bucket>,
    /// Some(bucket) when the response must carry a fresh bucket cookie.
    pub set_cookie: Option<u16>,
}

/// Decide route and version for one request. `None`: no route matches (404).
/// `draw` must be uniform in 0..10000; it is used only when the request has
/// neither a sticky key nor a valid bucket cookie.
pub fn decide(table: &Table, facts: &Facts<'_>, draw: u16) -> Option<Decision> {
    let idx = table.find(facts)?;
    let route = table.routes.get(idx)?;
    let fixed = |version, reason| Some(Decision { route: idx, version, reason, bucket: None, set_cookie: None });
    if route.canary.is_none() {
        return fixed(Version::Stable, Reason::Weight);
    }
    if route.overlay.killed {
        return fixed(Version::Stable, Reason::KillSwitch);
    }
    if route.overlay.rolled_back {
        return fixed(Version::Stable, Reason::Rollback);
    }
    if let Some(version) = route.override_.as_ref().and_then(|o| o.read(facts)) {
        return fixed(version, Reason::Override);
    }
    let (bucket, set_cookie) = route.bucket(facts, draw);
    let (weight_bp, reason) = match route.segments.iter().position(|s| s.matches(facts)) {
        Some(i) => (route.segments[i].weight_bp, Reason::Segment(i)),
        None => (route.overlay.weight_bp, Reason::Weight),
    };
    let version = if bucket.value < weight_bp { Version::Canary } else { Version::Stable };
    Some(Decision { route: idx, version, reason, bucket: Some(bucket), set_cookie })
}

#[cfg(test)]
mod tests;
