//! Canary judgement (judgement.md), pure: evidence tests of canary against
//! stable that stay valid however long a rollout runs and however often it
//! is looked at, and an absolute SLO guard that holds instead of blaming.
//!
//! - [`counts`]: what the judge consumes: per-interval units and bad units
//!   per event kind, version and stratum, and the frozen thresholds.
//! - [`eprocess`]: the e-process arithmetic (likelihood-ratio mixtures) and
//!   the change detector behind `hold`.
//! - [`rank`]: the rank test R's scores and e-process (latency against
//!   stable's distribution, median and tails in one test).
//! - [`judge`]: one interval in, a verdict with its explanation out.
//! - [`machine`]: one route's rollout state and what a verdict or a
//!   steering call does to it (steps, hold, latch), pure.
//!
//! Nothing here reads a clock, draws a random number or does I/O. Where the
//! counts come from (this replica's `evidence` recorder, or a fleet-wide
//! source) is not the judge's business.

pub mod counts;
pub mod eprocess;
pub mod judge;
pub mod machine;
pub mod rank;

pub use counts::{CANARY, Cell, EVENTS, Event, Frozen, Interval, STABLE, Stratum, StratumCounts};
pub use eprocess::{Detector, EProcess};
pub use judge::{Fired, JudgeState, Judgement, Scope, Standing, Test, Verdict, judge, tests_in_use};
