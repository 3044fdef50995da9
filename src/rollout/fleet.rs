//! The fleet side of `Rollouts`: routes whose `analysis.source` names a Prometheus.
//! Their verdicts come from `crate::fleet` (the fleet's evidence folded at
//! aligned evaluation times), not from this replica's own tick; admin
//! steering is exported for the fleet and served at once here; and the
//! state served is the fold's, plus whatever steering it has not reached yet.

use super::{Rollouts, Steer, SteerError, canary_revision, effective_bp, entry, log_verdict};
use crate::analysis::machine::RouteState;
use crate::analysis::{Judgement, Verdict};
use crate::clock::rfc3339_ms;
use crate::config::Snapshot;
use crate::fleet::control::{self, Control, KILLED, PAUSED, ROLLED_BACK, RUNNING};
use crate::fleet::fold::{Evaluation, Series};
use crate::fleet::state::{FleetFold, Outcome};
use crate::labels::RollbackReason;
use crate::metrics::{Registry, RouteMetrics};
use crate::routing::Route;
use crate::routing::policy::Analysis;
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A replica's fleet bookkeeping for one route.
#[derive(Debug, Clone)]
pub struct FleetRoute {
    pub fold: FleetFold,
    /// Steering sent to this replica (persisted in the served state).
    pub local: Control,
    /// The fleet's highest steering, polled.
    pub polled: Control,
    /// An admin `promote` here, for the fleet: epoch × 1024 + step.
    pub local_position: u64,
    /// The fold has replayed the fleet's history once: until then the
    /// state read from `state_dir` is served.
    pub synced: bool,
    pub source: SourceStatus,
}

#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    pub up: Option<bool>,
    pub error: Option<String>,
    /// First evaluation time that could not be asked (while down).
    pub down_since_ms: Option<u64>,
    /// Latest evaluation time recorded as `source_unavailable`.
    pub missed_ms: u64,
}

/// One route's canary revision in fleet mode.
#[derive(Debug, Clone, Copy)]
pub struct FleetKey<'a> {
    pub route: &'a str,
    pub revision: &'a str,
}

use crate::fleet::Target;

fn interval_ms(r: &Route) -> u64 {
    r.analysis.as_deref().map_or(10_000, |a| crate::units::duration_ms(a.interval).max(1))
}

impl Rollouts {
    /// Routes in fleet mode, with their fold brought to the config's revision.
    pub fn fleet_targets(&mut self, config: &Snapshot, registry: &Registry) -> Vec<Target> {
        let mut out = Vec::new();
        let mut live = Vec::new();
        for r in &config.table.routes {
            let (Some(a), Some(_)) = (r.analysis.as_deref(), r.canary.as_ref()) else { continue };
            let Some(source) = a.source.as_ref() else { continue };
            let revision = canary_revision(r);
            live.push(r.name.to_string());
            let fresh = self.fleet.get(&*r.name).is_none_or(|f| f.fold.revision != revision);
            if fresh {
                let persisted = self.states.get(&*r.name).filter(|s| s.revision == revision);
                let local = persisted.map_or_else(Control::default, |s| {
                    Control { epoch: s.control, rank: Control::rank_of(s) }.max(Control::default())
                });
                self.fleet.insert(
                    r.name.to_string(),
                    FleetRoute {
                        fold: match persisted {
                            Some(saved) => FleetFold::new(revision, r.progression.as_deref()).with_budget(saved),
                            None => FleetFold::new(revision, r.progression.as_deref()),
                        },
                        local,
                        polled: Control::default(),
                        local_position: 0,
                        synced: false,
                        source: SourceStatus::default(),
                    },
                );
            }
            let Some(f) = self.fleet.get(&*r.name) else { continue };
            let m = registry.route(&r.name);
            m.fleet.source.store(if f.source.up == Some(false) { 1 } else { 2 }, Ordering::Relaxed);
            self.export(r, registry);
            out.push(Target {
                route: r.name.to_string(),
                revision: revision.to_owned(),
                source: source.clone(),
                interval_ms: interval_ms(r),
                segments: r.segments.iter().map(|s| s.name.clone()).collect(),
                through_ms: self.fleet.get(&*r.name).and_then(|f| f.fold.through_ms),
            });
        }
        self.fleet.retain(|name, _| live.contains(name));
        out
    }

    /// The steering to serve with: the highest of this replica's own, the
    /// fleet's latest and the fold's.
    fn fleet_control(f: &FleetRoute) -> Control {
        f.local.max(f.polled).max(f.fold.control())
    }

    /// The reason of a rollback served ahead of the fold: this replica's
    /// own admin call, or the fleet's.
    fn ahead_reason(f: &FleetRoute) -> RollbackReason {
        if f.local >= f.polled.max(f.fold.control()) { RollbackReason::Admin } else { RollbackReason::Fleet }
    }

    /// Publish this replica's steering and judgement position as gauges.
    fn export(&self, r: &Route, registry: &Registry) {
        let m = registry.route(&r.name);
        if let Some(f) = self.fleet.get(&*r.name) {
            m.fleet.control.store(Self::fleet_control(f).encode(), Ordering::Relaxed);
            m.fleet.position.store(f.fold.position().max(f.local_position), Ordering::Relaxed);
            m.fleet.start_ms.store(f.fold.start_ms.unwrap_or(0), Ordering::Relaxed);
            m.fleet.through_ms.store(f.fold.through_ms.unwrap_or(0), Ordering::Relaxed);
        } else if let Some(st) = self.states.get(&*r.name) {
            // Not in fleet mode: the gauges still say what this replica serves.
            let c = Control { epoch: st.control, rank: Control::rank_of(st) };
            m.fleet.control.store(c.encode(), Ordering::Relaxed);
            m.fleet.position.store(control::position(st.control, st.step), Ordering::Relaxed);
        }
    }

    /// Recompute what route `r` serves from its fleet state; journal and
    /// count what changed. Returns whether the effective table changed.
    fn fleet_serve(&mut self, r: &Route, registry: &Registry, sha: &str, actor: &str, now_ms: u64) -> bool {
        let Some(f) = self.fleet.get(&*r.name) else { return false };
        let prog = r.progression.as_deref();
        let ctl = Self::fleet_control(f);
        let old = self.states.get(&*r.name).cloned();
        let mut served = match (&old, f.synced) {
            (Some(old), false) => {
                // Not replayed yet: keep what was persisted, plus steering.
                let mut s = old.clone();
                let mut pre = FleetFold::new(&f.fold.revision, prog);
                pre.state = s.clone();
                pre.epoch = s.control;
                pre.through_ms = Some(now_ms);
                s = pre.served(ctl, Self::ahead_reason(f), prog);
                s
            }
            _ => f.fold.served(ctl, Self::ahead_reason(f), prog),
        };
        served.control = ctl.epoch;
        served.filters = false;
        served.users_counted = false;
        let from = old.as_ref().map_or(r.config_weight_bp, |o| effective_bp(r, Some(o)));
        let changed_flags = old.as_ref().is_none_or(|o| {
            o.rolled_back.is_some() != served.rolled_back.is_some()
                || o.killed != served.killed
                || o.paused != served.paused
                || o.step != served.step
                || o.promoted != served.promoted
                || o.held != served.held
        });
        let resumed = old.as_ref().is_some_and(|o| o.control < served.control && o.rolled_back.is_some())
            && served.rolled_back.is_none();
        let newly_rolled_back = served.rolled_back.is_some() && old.as_ref().is_none_or(|o| o.rolled_back.is_none());
        self.states.insert(r.name.to_string(), served.clone());
        let m = registry.route(&r.name);
        if newly_rolled_back && let Some(l) = served.rolled_back {
            m.rolled_back(l.reason);
            tracing::warn!(
                route = %r.name, reason = l.reason.as_str(), revision = canary_revision(r), actor,
                "canary rolled back (fleet)"
            );
        }
        if resumed {
            // Judged afresh: users count again from now.
            m.canary.window.reset(Instant::now());
            m.evidence.forget_users(m.evidence.frozen());
            m.clear_standings();
        }
        if changed_flags && old.is_some() {
            let to = effective_bp(r, Some(&served));
            let mut e = entry(r, &served, actor, "fleet_state", now_ms, sha, from);
            e.insert("control_epoch".into(), json!(ctl.epoch));
            if from != to || newly_rolled_back || resumed {
                tracing::info!(route = %r.name, state = served.phase(r.config_killed).as_str(), step = ?served.step, from = crate::units::bp_to_percent(from), to = crate::units::bp_to_percent(to), "fleet state served");
            }
            self.journal(Value::Object(e));
        }
        self.export(r, registry);
        changed_flags
    }

    /// The fleet's latest steering, polled (not at an evaluation time).
    pub fn fleet_polled(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        route: &str,
        revision: &str,
        c: Control,
        now_ms: u64,
    ) -> bool {
        let Some(r) = config.table.route(route) else { return false };
        let Some(f) = self.fleet.get_mut(route).filter(|f| f.fold.revision == revision) else { return false };
        if c <= f.polled {
            return false;
        }
        f.polled = c;
        let changed = self.fleet_serve(r, registry, &config.sha256, "fleet", now_ms);
        if changed {
            self.save();
        }
        changed
    }

    /// Evaluation steps from the fleet's evidence: `answer` is Prometheus'
    /// series over the evaluation `times` (the first already folded or the
    /// baseline). The first batch after this replica (re)started is a
    /// replay: its verdicts are history, so they are not journaled one by one.
    pub fn fleet_steps(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        key: FleetKey<'_>,
        answer: (&[Series], &[u64]),
        now_ms: u64,
    ) -> bool {
        let FleetKey { route, revision } = key;
        let Some(r) = config.table.route(route) else { return false };
        let Some(a) = r.analysis.as_deref() else { return false };
        let a = acting_analysis(r, a);
        let m = registry.route(&r.name);
        let Some(f) = self.fleet.get_mut(route).filter(|f| f.fold.revision == revision) else { return false };
        let Some(folded) = fold_batch(f, r, &a, answer) else { return false };
        recorder_follows(f, &a, &m, folded.new_epoch, now_ms);
        if folded.came_back {
            tracing::info!(
                route,
                through = folded.through.map(rfc3339_ms),
                "analysis source is back; fleet judgement resumes"
            );
        }
        let sha = config.sha256.clone();
        if folded.replay {
            self.journal_replay(r, &folded, &sha, now_ms);
        }
        self.record_outcomes(r, &m, &folded, &sha, now_ms);
        let changed = self.fleet_serve(r, registry, &sha, "fleet", now_ms);
        self.save();
        changed || !folded.outcomes.is_empty()
    }

    /// The first batch after this replica (re)started: one journal line for
    /// the replayed history, with its newest verdict.
    fn journal_replay(&mut self, r: &Route, folded: &Folded, sha: &str, now_ms: u64) {
        let route = &*r.name;
        let (through, start) = (folded.through, folded.start);
        let last_verdict = folded.outcomes.iter().rev().find_map(|o| o.judgement.clone().map(|j| (o.at_ms, j)));
        let from = effective_bp(r, self.states.get(route));
        let mut e = entry(r, &folded.state, "fleet", "fleet_sync", now_ms, sha, from);
        e.insert("through".into(), json!(through.map(rfc3339_ms)));
        e.insert("start".into(), json!(start.map(rfc3339_ms)));
        e.insert("replayed".into(), json!(folded.outcomes.len()));
        if let Some((t, j)) = &last_verdict {
            e.insert("verdict".into(), json!(j.verdict.as_str()));
            e.insert("verdict_at".into(), json!(rfc3339_ms(*t)));
            e.insert("reason".into(), json!(j.reason));
        }
        self.journal(Value::Object(e));
        tracing::info!(
            route,
            replayed = folded.outcomes.len(),
            through = through.map(rfc3339_ms),
            "fleet judgement replayed from the analysis source"
        );
    }

    /// Each outcome's verdict shown and counted (of a replay, only the
    /// newest), and outside a replay logged and journaled with the steering
    /// the fleet applied.
    fn record_outcomes(&mut self, r: &Route, m: &RouteMetrics, folded: &Folded, sha: &str, now_ms: u64) {
        let replay = folded.replay;
        let newest = folded.outcomes.iter().rposition(|o| o.judgement.is_some());
        for (i, o) in folded.outcomes.iter().enumerate() {
            if let Some(j) = &o.judgement {
                // A replay is history: only its newest verdict is shown and counted.
                if !replay || Some(i) == newest {
                    m.verdict(&rfc3339_ms(o.at_ms), j, folded.state.streak);
                }
                if !replay {
                    log_verdict(r, j);
                    self.journal(Value::Object(verdict_entry(r, o, j, sha, now_ms)));
                }
            }
            if !replay && !o.steered.is_empty() {
                let mut e = entry(r, &o.state, "fleet", "fleet_steer", o.at_ms, sha, effective_bp(r, Some(&o.state)));
                e.insert("applied".into(), json!(o.steered));
                self.journal(Value::Object(e));
            }
        }
    }

    /// The source could not be asked about `eval_ms`: no verdict is taken
    /// from missing data; the route keeps serving as it is.
    pub fn fleet_unavailable(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        key: FleetKey<'_>,
        (eval_ms, error): (u64, &str),
        now_ms: u64,
    ) -> bool {
        let FleetKey { route, revision } = key;
        let Some(r) = config.table.route(route) else { return false };
        let Some(f) = self.fleet.get_mut(route).filter(|f| f.fold.revision == revision) else { return false };
        let was_up = f.source.up != Some(false);
        f.source.up = Some(false);
        f.source.error = Some(error.to_owned());
        f.source.down_since_ms.get_or_insert(eval_ms);
        if eval_ms <= f.source.missed_ms {
            return false;
        }
        f.source.missed_ms = eval_ms;
        let m = registry.route(&r.name);
        m.fleet.source.store(1, Ordering::Relaxed);
        let j = crate::analysis::Judgement {
            verdict: Verdict::Insufficient,
            fired: None,
            held_by: vec![],
            standings: m.standings(),
            reason: format!("source_unavailable: {error}"),
            sat_out: false,
        };
        let state = self.states.get(route).cloned().unwrap_or_else(|| f.fold.state.clone());
        m.verdict(&rfc3339_ms(eval_ms), &j, state.streak);
        if was_up {
            tracing::warn!(
                route,
                error,
                "analysis source unavailable: verdicts are insufficient until it answers; nothing is promoted or rolled back for want of data"
            );
        }
        let mut e = entry(r, &state, "fleet", "verdict", eval_ms, &config.sha256, effective_bp(r, Some(&state)));
        e.insert("verdict".into(), json!("insufficient"));
        e.insert("reason".into(), json!("source_unavailable"));
        e.insert("detail".into(), json!(error));
        e.insert("evaluated_at".into(), json!(rfc3339_ms(now_ms)));
        self.journal(Value::Object(e));
        was_up
    }

    /// What `/routes` says about a route's fleet judgement.
    pub fn fleet_view(&self, route: &str) -> Option<Value> {
        let f = self.fleet.get(route)?;
        Some(json!({
            "source_up": f.source.up,
            "source_error": f.source.error,
            "unavailable_since": f.source.down_since_ms.map(rfc3339_ms),
            "evaluated_through": f.fold.through_ms.map(rfc3339_ms),
            "started_from": f.fold.start_ms.map(rfc3339_ms),
            "synced": f.synced,
            "control": {"epoch": Self::fleet_control(f).epoch, "rank": Self::fleet_control(f).rank,
                        "local": f.local.encode(), "fleet": f.polled.encode(), "fold": f.fold.control().encode()},
            "replica_processes": f.fold.base.processes(),
        }))
    }

    /// Admin steering of a fleet route: served here at once, exported for
    /// the rest of the fleet (which follows within a scrape and a poll),
    /// and reached by every replica's fold at the same evaluation time.
    pub fn fleet_steer(
        &mut self,
        config: &Snapshot,
        registry: &Registry,
        r: &Route,
        op: Steer,
        peer: SocketAddr,
        now_ms: u64,
    ) -> Result<bool, SteerError> {
        let prog = r.progression.as_deref();
        let Some(f) = self.fleet.get_mut(&*r.name) else { return Err(SteerError::NoCanary) };
        let cur = Self::fleet_control(f);
        let served = f.fold.served(cur, Self::ahead_reason(f), prog);
        let refused = |x: super::machine::Refusal| SteerError::Refused(x.message());
        let want = match op {
            Steer::Rollback => Control { epoch: cur.epoch, rank: cur.rank.max(ROLLED_BACK) },
            Steer::Kill => Control { epoch: cur.epoch, rank: cur.rank.max(KILLED) },
            Steer::Pause => {
                if prog.is_none() {
                    return Err(refused(super::machine::Refusal::NoProgression));
                }
                Control { epoch: cur.epoch, rank: cur.rank.max(PAUSED) }
            }
            Steer::Resume | Steer::Unkill => {
                let lifts = match op {
                    Steer::Unkill => served.killed,
                    _ => served.rolled_back.is_some() || served.paused,
                };
                if lifts { Control { epoch: cur.epoch + 1, rank: RUNNING } } else { cur }
            }
            Steer::Promote => {
                let mut s = served.clone();
                s.promote(prog, now_ms).map_err(refused)?;
                f.local_position = f.local_position.max(control::position(cur.epoch, s.step));
                cur
            }
        };
        let changed = want > cur || op == Steer::Promote;
        f.local = f.local.max(want);
        let sha = config.sha256.clone();
        self.fleet_serve(r, registry, &sha, "admin", now_ms);
        let st = self.states.get(&*r.name).cloned().unwrap_or(served);
        let mut e = entry(r, &st, "admin", op.as_str(), now_ms, &sha, effective_bp(r, Some(&st)));
        e.insert("peer".into(), json!(peer.to_string()));
        e.insert("changed".into(), json!(changed));
        e.insert("fleet".into(), json!({"control_epoch": want.epoch, "rank": want.rank,
            "note": if op == Steer::Promote { "every replica takes the step at the next evaluation time" } else { "served here now; the fleet follows within a scrape and a poll" }}));
        self.journal(Value::Object(e));
        tracing::warn!(route = %r.name, action = op.as_str(), peer = %peer, changed, "admin steered route (fleet)");
        self.save();
        Ok(changed)
    }
}

/// What one batch of evaluation times did to a route's fold.
struct Folded {
    outcomes: Vec<Outcome>,
    /// The first batch since this replica (re)started: history, not news.
    replay: bool,
    /// The source had been down until this answer.
    came_back: bool,
    /// The fold's judge turned to a new epoch.
    new_epoch: bool,
    /// The route's state after the batch.
    state: RouteState,
    /// The fold's latest evaluation time and where it started from.
    through: Option<u64>,
    start: Option<u64>,
}

/// The analysis a route is folded with: an externally controlled route is
/// folded as in `observe` on every replica alike: judged, never stepped or
/// rolled back by weir.
fn acting_analysis<'a>(r: &Route, a: &'a Analysis) -> Cow<'a, Analysis> {
    match r.control.acting_mode(a.mode) {
        m if m == a.mode => Cow::Borrowed(a),
        mode => Cow::Owned(Analysis { mode, ..a.clone() }),
    }
}

/// Fold the evaluation times of one answer into the route's fold. None when
/// the answer was already folded or does not continue what was.
fn fold_batch(f: &mut FleetRoute, r: &Route, a: &Analysis, (series, times): (&[Series], &[u64])) -> Option<Folded> {
    let prog = r.progression.as_deref();
    let ws_rtt = !r.websocket.rtt_interval.is_zero();
    let (Some(&prev_ms), Some(&last)) = (times.first(), times.last()) else { return None };
    if f.fold.through_ms.is_some_and(|t| t >= last) || f.fold.through_ms.is_some_and(|t| t != prev_ms) {
        return None; // already folded, or not the continuation of what was
    }
    let segments: Vec<String> = r.segments.iter().map(|s| s.name.clone()).collect();
    let steps: Vec<Evaluation> = crate::fleet::fold::steps(series, times, &segments, &mut f.fold.base);
    let replay = !f.synced;
    let came_back = f.source.up == Some(false);
    f.source = SourceStatus { up: Some(true), ..SourceStatus::default() };
    let mut prev = prev_ms;
    let mut outcomes = Vec::with_capacity(steps.len());
    let epoch_before = f.fold.state.judge.epoch;
    for s in &steps {
        if f.fold.through_ms.is_some_and(|t| s.at_ms <= t) {
            prev = s.at_ms;
            continue; // never fold a time twice
        }
        if let Some(o) = f.fold.apply(a, prog, ws_rtt, s, prev) {
            outcomes.push(o);
        }
        prev = s.at_ms;
    }
    f.synced = true;
    Some(Folded {
        outcomes,
        replay,
        came_back,
        new_epoch: f.fold.state.judge.epoch != epoch_before,
        state: f.fold.state.clone(),
        through: f.fold.through_ms,
        start: f.fold.start_ms,
    })
}

/// This replica's recorder follows the fold: lines for what comes next,
/// its interval counts drained (the fleet's came from Prometheus), its user
/// filters turned with the fold's epochs.
fn recorder_follows(f: &FleetRoute, a: &Analysis, m: &RouteMetrics, new_epoch: bool, now_ms: u64) {
    // Before the fleet's first evidence the rollout has not begun: its
    // warm-up starts now, not at time 0 (which would give lines to the
    // very first requests, a cold start judged as a regression).
    let step_since = if f.fold.began() { f.fold.state.step_since_ms } else { now_ms };
    let next = super::judging::frozen_for(a, m, step_since, Instant::now(), now_ms);
    let _ = m.evidence.take(next);
    if new_epoch {
        m.evidence.new_epoch(Some(next));
    }
}

/// The journal line of one verdict the fleet's evidence gave.
fn verdict_entry(r: &Route, o: &Outcome, j: &Judgement, sha: &str, now_ms: u64) -> Map<String, Value> {
    use crate::analysis::Event::Error;
    let st = &o.state;
    let mut e = entry(r, st, "fleet", "verdict", o.at_ms, sha, effective_bp(r, Some(st)));
    e.insert("verdict".into(), json!(j.verdict.as_str()));
    e.insert("reason".into(), json!(j.reason));
    e.insert("fired".into(), json!(j.fired));
    let n = &o.interval.requests;
    e.insert(
        "interval".into(),
        json!({
            "errors": {
                "stable": [n.n(Error, 0), n.x(Error, 0)],
                "canary": [n.n(Error, 1), n.x(Error, 1)],
            },
        }),
    );
    e.insert(
        "since_revision".into(),
        json!({
            "canary_requests": st.judge.revision().map_or(0, |s| s.totals.n(Error, 1)),
            "stable_requests": st.judge.revision().map_or(0, |s| s.totals.n(Error, 0)),
            // Ranked in stable's distribution (test R): after the warm-up.
            "canary_timed": st.judge.revision().map_or(0, |s| s.totals.ranked(1)),
        }),
    );
    let tests =
        j.standings.iter().map(|s| (s.test.as_str().to_owned(), json!([s.e_revision, s.e_epoch, s.e_weighted])));
    e.insert("tests".into(), Value::Object(tests.collect()));
    e.insert("evaluated_at".into(), json!(rfc3339_ms(now_ms)));
    e
}
