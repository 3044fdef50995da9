//! weir: a Layer-7 canary traffic-splitting edge proxy.
//!
//! Data flow of one request:
//!
//! ```text
//!  client ──► app (accept, hyper h1/h2c) ──► proxy::handle
//!                                              │ live.load()  (one snapshot per request)
//!                                              │ routing::decide  (pure: route, version, reason)
//!                                              │ upstream::connect (canary unreachable ⇒ stable)
//!                                              │ headers rewritten in place, send, stream back
//!                                              ▼
//!                                   Completion (on body drop): access log,
//!                                   metrics + sliding window of that (route, version)
//! ```
//!
//! Reloads: the config directory watch, SIGHUP and `POST /reload` all end in
//! [`reload::Reloader::reload`], which validates and calls `Live::install`.
//!
//! Where things live: the split is decided in [`routing`]; config files
//! become an immutable [`config::Snapshot`]; the only way to change what
//! serves is [`live::Live::install`].
//!
//! Judgement: each route's [`evidence`] recorder counts the canary and stable
//! traffic it sees; the pure [`analysis`] judge turns one interval's counts
//! into a verdict and [`rollout`] acts on it. Alone, a replica judges its
//! own counts; in a fleet ([`fleet`]) every replica judges the fleet's
//! counts, summed by Prometheus at aligned evaluation times.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod analysis;
pub mod app;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod demo;
pub mod evidence;
pub mod explain;
pub mod files;
pub mod fleet;
pub mod fuzzing;
pub mod grpc;
pub mod headers;
pub mod import;
pub mod journal;
pub mod labels;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod shadow;
pub mod shards;
pub mod stats;
pub mod status;
pub mod tasks;
pub mod tls;
pub mod units;
pub mod upstream;
pub mod version;
pub mod websocket;
