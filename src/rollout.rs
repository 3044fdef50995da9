//! Rollout control (design §4): judge each canary from its own windows,
//! walk progression steps, roll back by itself and latch the rollback.
//!
//! - [`crate::analysis`]: the verdict, a pure function of policy, the
//!   interval's evidence counts and the judge's persisted state.
//! - [`judging`]: one route's verdict taken: thresholds frozen for the next
//!   interval, counts taken from the recorder, epochs turned, journal inputs.
//! - [`machine`]: one route's state and its transitions, pure (time passed in).
//! - [`store`]: `state_dir/state.json` (atomic replace) and `journal.jsonl`.
//! - [`Rollouts`] (here): every route's state plus the store. It lives inside
//!   `Live`'s writer lock, so reloads, the controller tick and admin calls
//!   all change state and publish the effective table through one path.
//!
//! The effective table is the config's table with an overlay per route:
//! `weight_bp` (current step or config weight), `killed` (config or admin),
//! `rolled_back` (latched), `phase` and `step` (views). The routing decision
//! itself applies kill and rollback, before overrides and segments.

pub mod fleet;
pub mod judging;
/// The rollout state machine lives with the judge, in the domain rung.
use crate::analysis::machine;
pub mod store;

use crate::analysis::machine::RouteState;
use crate::labels::RollbackReason;

use crate::analysis::{Judgement, Verdict};
use crate::clock::rfc3339_ms;
use crate::config::Snapshot;
use crate::metrics::{Registry, RouteMetrics};
use crate::routing::policy::AnalysisMode;
use crate::routing::{Route, Version};
use crate::units::bp_to_percent;
use machine::{Refusal, Transition};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use store::Store;

/// Admin steering calls (design §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    Rollback,
    Resume,
    Pause,
    Promote,
    Kill,
    Unkill,
}

impl Steer {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "rollback" => Steer::Rollback,
            "resume" => Steer::Resume,
            "pause" => Steer::Pause,
            "promote" => Steer::Promote,
            "kill" => Steer::Kill,
            "unkill" => Steer::Unkill,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Steer::Rollback => "rollback",
            Steer::Resume => "resume",
            Steer::Pause => "pause",
            Steer::Promote => "promote",
            Steer::Kill => "kill",
            Steer::Unkill => "unkill",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SteerError {
    NoSuchRoute,
    NoCanary,
    Refused(&'static str),
}

/// A verdict taken and what it did, for the journal.
struct Taken<'a> {
    judgement: &'a Judgement,
    transition: Transition,
    /// The journal's `inputs` object.
    inputs: Value,
    /// Canary weight before (basis points).
    from: u16,
}

/// Every route's rollout state and where it is kept.
pub struct Rollouts {
    states: BTreeMap<String, RouteState>,
    store: Store,
    /// Next verdict per route (monotonic).
    due: HashMap<String, Instant>,
    /// Routes judged by the fleet (`analysis.source`).
    fleet: BTreeMap<String, fleet::FleetRoute>,
    /// Told about every journal line (it picks what webhooks want).
    notifier: Option<std::sync::Arc<crate::notify::Notifier>>,
}

/// What route `r` of the config serves with, given its rollout state.
fn overlay_of(r: &Route, st: Option<&RouteState>) -> crate::routing::Overlay {
    let Some(s) = st else { return crate::routing::Overlay::of_config(r.config_weight_bp, r.config_killed) };
    crate::routing::Overlay {
        weight_bp: s.weight_bp(r.config_weight_bp, r.progression.as_deref()),
        killed: r.config_killed || s.killed,
        rolled_back: s.rolled_back.is_some(),
        phase: s.phase(r.config_killed),
        step: s.step,
    }
}

/// Canary weight in force for a route of the config, given its state.
fn effective_bp(r: &Route, st: Option<&RouteState>) -> u16 {
    overlay_of(r, st).effective_bp(r.canary.is_some())
}

fn canary_revision(r: &Route) -> &str {
    r.canary.as_ref().map_or("", |c| &c.revision)
}

/// The fields every journal line has.
fn entry(
    r: &Route,
    st: &RouteState,
    actor: &str,
    event: &str,
    now_ms: u64,
    sha: &str,
    from: u16,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("at".into(), json!(rfc3339_ms(now_ms)));
    m.insert("route".into(), json!(&*r.name));
    m.insert("actor".into(), json!(actor));
    m.insert("event".into(), json!(event));
    m.insert("revision".into(), json!({"stable": &*r.stable.revision, "canary": canary_revision(r)}));
    m.insert("weight".into(), json!({"from": bp_to_percent(from), "to": bp_to_percent(effective_bp(r, Some(st)))}));
    m.insert("config_weight".into(), json!(bp_to_percent(r.config_weight_bp)));
    m.insert("state".into(), json!(st.phase(r.config_killed).as_str()));
    m.insert("step".into(), json!(st.step));
    m.insert("streak".into(), json!(st.streak));
    m.insert("config_sha256".into(), json!(sha));
    m
}

impl Rollouts {
    /// Open `state_dir`, read what was persisted and fit it to `config`.
    /// Routes whose state could not be read start rolled back (canary at 0 %),
    /// never at some guessed weight.
    pub fn open(dir: &Path, config: &Snapshot, registry: &Registry, now_ms: u64) -> std::io::Result<Self> {
        let (mut store, loaded) = Store::open(dir)?;
        store.set_rotation(config.journal);
        let mut book =
            Self { states: loaded.routes, store, due: HashMap::new(), fleet: BTreeMap::new(), notifier: None };
        let mut unsafe_routes: Vec<(String, String)> = loaded.unreadable_routes;
        if let Some(why) = &loaded.unreadable_file {
            tracing::error!(
                path = %dir.join("state.json").display(), error = %why,
                "rollout state unreadable; every route with a canary starts rolled back (POST /routes/NAME/resume or a new canary revision lifts it)"
            );
            unsafe_routes.extend(
                config.table.routes.iter().filter(|r| r.canary.is_some()).map(|r| (r.name.to_string(), why.clone())),
            );
        }
        for (name, why) in unsafe_routes {
            let Some(r) = config.table.route(&name).filter(|r| r.canary.is_some()) else { continue };
            tracing::error!(route = %name, error = %why, "rollout state of route unreadable; canary starts at 0 %");
            let mut st = RouteState::fresh(canary_revision(r), r.progression.as_deref(), now_ms);
            st.rollback(RollbackReason::StateUnreadable, now_ms);
            registry.route(&r.name).rolled_back(RollbackReason::StateUnreadable);
            let mut e = entry(r, &st, "auto", "rollback", now_ms, &config.sha256, 0);
            e.insert("reason".into(), json!(RollbackReason::StateUnreadable.as_str()));
            e.insert("detail".into(), json!(why));
            book.journal(Value::Object(e));
            book.states.insert(name, st);
        }
        book.reconcile(None, config, now_ms);
        book.restore_filters(config, registry, now_ms);
        Ok(book)
    }

    /// Give each route's recorder the lines and the counted-user filters
    /// saved with its state. Filters that cannot be restored mean users
    /// could count twice, so that route's live e-processes stop where they
    /// are (the α they spent stays spent; never a fresh budget) and the
    /// evidence goes on in a new epoch that counts users afresh.
    fn restore_filters(&mut self, config: &Snapshot, registry: &Registry, now_ms: u64) {
        let mut lost = Vec::new();
        for (name, st) in &mut self.states {
            let Some(r) = config.table.route(name) else { continue };
            // The lines the saved state was about to classify with.
            registry.route(&r.name).evidence.set_frozen(st.judge.frozen);
            if !st.filters && !st.users_counted {
                continue;
            }
            // Saved with the latest verdict, or lost (a save that failed
            // leaves `filters` false: an older file on disk is not used).
            let restored = st.filters
                && self.store.load_filters(name).is_some_and(|b| registry.route(&r.name).evidence.import_filters(&b));
            if !restored {
                tracing::warn!(route = %name, "saved counted-user filters unreadable; the evidence so far stops where it is and a new epoch begins");
                st.judge.filters_lost(now_ms);
                st.filters = false;
                st.users_counted = false;
                lost.push(name.clone());
            }
        }
        let any_lost = !lost.is_empty();
        for name in lost {
            let (Some(r), Some(st)) = (config.table.route(&name), self.states.get(&name)) else { continue };
            let mut e = entry(r, st, "auto", "filters_lost", now_ms, &config.sha256, effective_bp(r, Some(st)));
            e.insert("epoch".into(), json!(st.judge.epoch));
            e.insert(
                "reason".into(),
                json!("counted-user filters unreadable: the e-processes so far are closed (their α stays spent), evidence continues in a new epoch"),
            );
            self.journal(Value::Object(e));
        }
        if any_lost {
            self.save();
        }
    }

    pub fn state(&self, route: &str) -> Option<&RouteState> {
        self.states.get(route)
    }

    fn journal(&mut self, mut e: Value) {
        if let Err(err) = self.store.journal(&mut e) {
            tracing::error!(path = %self.store.dir().display(), error = %err, "cannot append to the rollout journal");
        }
        if let Some(n) = &self.notifier {
            n.on_journal(&e);
        }
    }

    pub fn set_notifier(&mut self, n: std::sync::Arc<crate::notify::Notifier>) {
        self.notifier = Some(n);
    }

    fn save(&self) {
        if let Err(err) = self.store.save(&self.states) {
            tracing::error!(path = %self.store.dir().display(), error = %err, "cannot save rollout state");
        }
    }

    /// Fit every route's state to a newly installed config; journal weight
    /// changes that come from the config (actor `config`).
    pub fn reconcile(&mut self, old: Option<&Snapshot>, config: &Snapshot, now_ms: u64) {
        self.store.set_rotation(config.journal);
        let mut dirty = false;
        for r in config.table.routes.iter().filter(|r| r.canary.is_some()) {
            let old_route = old.and_then(|o| o.table.route(&r.name));
            let from = old_route.map(|o| effective_bp(o, self.states.get(&*r.name)));
            let (st, created) = match self.states.get_mut(&*r.name) {
                Some(st) => (st, false),
                None => {
                    let st = RouteState::fresh(canary_revision(r), r.progression.as_deref(), now_ms);
                    self.states.insert(r.name.to_string(), st);
                    match self.states.get_mut(&*r.name) {
                        Some(st) => (st, true),
                        None => continue,
                    }
                }
            };
            let before = st.clone();
            let new_revision = st.reconcile(canary_revision(r), r.progression.as_deref(), now_ms);
            let st = st.clone();
            dirty |= created || st != before;
            let to = effective_bp(r, Some(&st));
            let config_edit = old_route.is_some_and(|o| o.config_weight_bp != r.config_weight_bp);
            if new_revision || created || config_edit || from.is_some_and(|f| f != to) {
                let event = if new_revision {
                    "new_revision"
                } else if created {
                    "start"
                } else {
                    "config_change"
                };
                let e = entry(r, &st, "config", event, now_ms, &config.sha256, from.unwrap_or(to));
                if new_revision {
                    tracing::info!(route = %r.name, revision = canary_revision(r), "new canary revision: rollout starts over");
                }
                self.journal(Value::Object(e));
            }
        }
        if dirty {
            self.save();
        }
    }

    /// The table to serve: `config`'s routes with their rollout overlay.
    /// Routes (shared with `config`) whose overlay is the config's own
    /// are not copied; a route in rollout is copied with its overlay set.
    pub fn overlay(&self, config: &Snapshot) -> Snapshot {
        let mut out = config.clone();
        for r in &mut out.table.routes {
            let overlay = overlay_of(r, self.states.get(&*r.name));
            if overlay != r.overlay {
                Arc::make_mut(r).overlay = overlay;
            }
        }
        out
    }

    /// Take the verdicts that are due. Returns whether the effective table
    /// changed and when the next verdict is due.
    pub fn tick(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        now: Instant,
        now_ms: u64,
    ) -> (bool, Option<Instant>) {
        let mut changed = false;
        let mut dirty = false;
        let mut next: Option<Instant> = None;
        for r in &config.table.routes {
            let (Some(analysis), Some(_)) = (r.analysis.as_deref(), r.canary.as_ref()) else { continue };
            if analysis.source.is_some() {
                continue; // judged from the fleet's evidence (`crate::fleet`)
            }
            let due = self.due.entry(r.name.to_string()).or_insert(now + analysis.interval);
            if now < *due {
                next = Some(next.map_or(*due, |n| n.min(*due)));
                continue;
            }
            *due = now + analysis.interval;
            next = Some(next.map_or(*due, |n| n.min(*due)));
            let Some(st) = self.states.get_mut(&*r.name) else { continue };
            if r.config_killed || st.killed || st.rolled_back.is_some() {
                continue; // no canary traffic to judge
            }
            let m = registry.route(&r.name);
            let from = effective_bp(r, Some(st));
            let before_streak = st.streak;
            let before_phase = st.phase(r.config_killed);
            let (j, t, inputs) = judging::take_verdict(r, analysis, st, &m, now, now_ms);
            // The counted-user filters as of this verdict, saved with it: a
            // filter older than the e-values could count a user twice.
            if let Some(bytes) = m.evidence.export_filters() {
                st.users_counted = true;
                st.filters = match self.store.save_filters(&r.name, &bytes) {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::error!(route = %r.name, error = %err, "cannot save counted-user filters");
                        false
                    }
                };
            }
            let st = st.clone();
            dirty = true;
            // A hold starting or ending changes what /routes and the
            // metrics show, though no weight moves.
            changed |= st.phase(r.config_killed) != before_phase;
            m.verdict(&rfc3339_ms(now_ms), &j, st.streak);
            log_verdict(r, &j);
            let mut e = entry(r, &st, "auto", "verdict", now_ms, &config.sha256, from);
            e.insert("verdict".into(), json!(j.verdict.as_str()));
            e.insert("reason".into(), json!(j.reason));
            e.insert("inputs".into(), inputs.clone());
            self.journal(Value::Object(e));
            if j.verdict == Verdict::Fail
                && r.control.acting_mode(analysis.mode) == AnalysisMode::Observe
                && before_streak == 0
            {
                // A dry run says once what it would have done.
                let mut e = entry(r, &st, "auto", "would_rollback", now_ms, &config.sha256, from);
                e.insert("reason".into(), json!(j.reason));
                e.insert("inputs".into(), inputs.clone());
                self.journal(Value::Object(e));
            }
            if t != Transition::None {
                changed = true;
                let taken = Taken { judgement: &j, transition: t, inputs, from };
                self.note_transition(r, &st, &m, taken, &config.sha256, now_ms);
            }
        }
        if dirty {
            self.save();
        }
        (changed, next)
    }

    fn note_transition(
        &mut self,
        r: &Route,
        st: &RouteState,
        m: &RouteMetrics,
        taken: Taken<'_>,
        sha: &str,
        now_ms: u64,
    ) {
        let Taken { judgement: j, transition: t, inputs, from } = taken;
        let (event, reason) = match t {
            Transition::RolledBack(reason) => ("rollback", Some(reason)),
            Transition::Advanced { .. } => ("step", None),
            Transition::Promoted => ("promoted", None),
            Transition::None => return,
        };
        let to = effective_bp(r, Some(st));
        match reason {
            Some(reason) => {
                m.rolled_back(reason);
                tracing::warn!(
                    route = %r.name, reason = reason.as_str(), revision = canary_revision(r),
                    test = j.fired.as_ref().map(|f| f.test.as_str()),
                    e_value = j.fired.as_ref().map(|f| f.e_value),
                    threshold = j.fired.as_ref().map(|f| f.threshold),
                    from = bp_to_percent(from), why = %j.reason, "canary rolled back"
                );
            }
            None => tracing::info!(
                route = %r.name, event, step = ?st.step, from = bp_to_percent(from), to = bp_to_percent(to),
                "canary progression"
            ),
        }
        let mut e = entry(r, st, "auto", event, now_ms, sha, from);
        if let Some(reason) = reason {
            e.insert("reason".into(), json!(reason.as_str()));
        }
        e.insert("verdict".into(), json!(j.verdict.as_str()));
        // Retries save users, never the verdict: say so where it applies.
        let retried = [m.canary.retried_attempts(), m.stable.retried_attempts()];
        let mut why = match retried {
            [0, 0] => j.reason.clone(),
            [c, s] => format!(
                "{}; failed attempts retried on another pod: canary {c}, stable {s} (each still counted as an error)",
                j.reason
            ),
        };
        // gRPC: name the codes that made the errors.
        let codes = |v: &crate::metrics::VersionMetrics| {
            let named: Vec<String> = v
                .grpc_counts()
                .iter()
                .enumerate()
                .filter(|(code, n)| **n > 0 && r.grpc_errors & (1 << code) != 0)
                .map(|(code, n)| format!("{} {n}", crate::labels::GRPC_CODES.get(code).copied().unwrap_or("?")))
                .collect();
            if named.is_empty() { "none".to_owned() } else { named.join(", ") }
        };
        if m.canary.grpc_counts().iter().chain(m.stable.grpc_counts().iter()).any(|n| *n > 0) {
            why.push_str(&format!(
                "; gRPC codes counted as errors: canary {}; stable {}",
                codes(&m.canary),
                codes(&m.stable)
            ));
        }
        e.insert("why".into(), json!(why));
        e.insert("retried_attempts".into(), json!({"canary": retried[0], "stable": retried[1]}));
        e.insert("inputs".into(), inputs);
        self.journal(Value::Object(e));
    }

    /// An admin steering call. Returns whether anything changed.
    pub fn steer(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        route: &str,
        op: Steer,
        peer: SocketAddr,
        now_ms: u64,
    ) -> Result<bool, SteerError> {
        let r = config.table.route(route).ok_or(SteerError::NoSuchRoute)?;
        if r.canary.is_none() {
            return Err(SteerError::NoCanary);
        }
        if r.analysis.as_deref().is_some_and(|a| a.source.is_some()) && self.fleet.contains_key(route) {
            return self.fleet_steer(config, registry, r, op, peer, now_ms);
        }
        let st = self.states.get_mut(route).ok_or(SteerError::NoCanary)?;
        let from = effective_bp(r, Some(st));
        let prog = r.progression.as_deref();
        let refused = |x: Refusal| SteerError::Refused(x.message());
        let changed = match op {
            Steer::Rollback => {
                let fresh = st.rolled_back.is_none();
                if fresh {
                    st.rollback(RollbackReason::Admin, now_ms);
                    registry.route(&r.name).rolled_back(RollbackReason::Admin);
                }
                fresh
            }
            Steer::Resume => {
                let was_rolled_back = st.rolled_back.is_some();
                let changed = st.resume(prog, now_ms);
                if was_rolled_back {
                    // Judge the canary on fresh traffic, not on what caused the rollback.
                    let m = registry.route(&r.name);
                    m.canary.window.reset(Instant::now());
                    fresh_evidence(r, &m, st, now_ms);
                    self.due.remove(route);
                }
                changed
            }
            Steer::Pause => st.pause(prog).map_err(refused)?,
            Steer::Promote => {
                let stepped = st.promote(prog, now_ms).map_err(refused)? != Transition::None;
                if let (true, Some(a)) = (stepped, r.analysis.as_deref()) {
                    judging::new_step(a, st, &registry.route(&r.name), Instant::now(), now_ms);
                }
                stepped
            }
            Steer::Kill => !std::mem::replace(&mut st.killed, true),
            Steer::Unkill => std::mem::replace(&mut st.killed, false),
        };
        let st = st.clone();
        let mut e = entry(r, &st, "admin", op.as_str(), now_ms, &config.sha256, from);
        e.insert("peer".into(), json!(peer.to_string()));
        e.insert("changed".into(), json!(changed));
        self.journal(Value::Object(e));
        tracing::warn!(route = %r.name, action = op.as_str(), peer = %peer, changed, "admin steered route");
        if changed {
            self.save();
        }
        Ok(changed)
    }

    /// Forget a route's schedule (used when a new revision resets windows).
    pub fn windows_for_new_revisions(&mut self, old: Option<&Snapshot>, config: &Snapshot, registry: &Registry) {
        for r in &config.table.routes {
            let Some(old_r) = old.and_then(|o| o.table.route(&r.name)) else { continue };
            if canary_revision(old_r) != canary_revision(r) && r.canary.is_some() {
                let m = registry.route(&r.name);
                m.version(Version::Canary).window.reset(Instant::now());
                m.canary.rtt_window.reset(Instant::now());
                if let Some(a) = r.analysis.as_deref() {
                    m.evidence.reset(judging::frozen_for(
                        a,
                        &m,
                        crate::clock::wall_ms(),
                        Instant::now(),
                        crate::clock::wall_ms(),
                    ));
                }
                m.clear_standings();
                self.due.remove(&*r.name);
            }
        }
    }
}

/// A resumed canary: the recorder forgets every count and counted user.
fn fresh_evidence(r: &Route, m: &RouteMetrics, st: &RouteState, now_ms: u64) {
    m.clear_standings();
    match r.analysis.as_deref() {
        Some(a) => m.evidence.reset(judging::frozen_for(a, m, st.step_since_ms, Instant::now(), now_ms)),
        None => m.evidence.reset(crate::analysis::Frozen::default()),
    }
}

/// One log line per verdict that is not a routine pass/insufficient.
fn log_verdict(r: &Route, j: &Judgement) {
    match j.verdict {
        Verdict::Fail => tracing::warn!(
            route = %r.name, verdict = "fail", test = j.fired.as_ref().map(|f| f.test.as_str()),
            e_value = j.fired.as_ref().map(|f| f.e_value), threshold = j.fired.as_ref().map(|f| f.threshold),
            why = %j.reason, "canary verdict"
        ),
        Verdict::Hold => tracing::warn!(
            route = %r.name, verdict = "hold", held_by = ?j.held_by.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            why = %j.reason, "canary verdict"
        ),
        Verdict::Pass | Verdict::Insufficient => {
            tracing::debug!(route = %r.name, verdict = j.verdict.as_str(), why = %j.reason, "canary verdict")
        }
    }
}

#[cfg(test)]
mod tests;
