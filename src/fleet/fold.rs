//! Fleet judgement, pure: Prometheus answers in, the same judge state and
//! the same verdicts out on every replica.
//!
//! Each replica exports its evidence as counters (`weir_analysis_units_total`,
//! `weir_analysis_bad_units_total`) and its steering as gauges
//! (`weir_rollout_control`, `weir_rollout_position`). At every aligned
//! evaluation time T (a wall-clock multiple of `analysis.interval`) a replica
//! asks Prometheus for the value of every such series *at* T, and folds the
//! per-series increments since the previous T into one `Interval` for the
//! judge. Every replica asks the same question after the same lag, so every
//! replica folds identical inputs into an identical state.
//!
//! Increments are taken per series (per replica process) and carried across
//! gaps: a series missing at some T (Prometheus was down, a replica was
//! restarting) keeps its last value, so it is neither lost nor counted twice
//! when it comes back; a counter that went down, or whose process start time
//! changed, was reset by a restart and counts from zero.

use super::control::Control;
use crate::analysis::{CANARY, Cell, Event, Interval, STABLE, Stratum, StratumCounts, rank};
use crate::metrics::{EVIDENCE_BAD, EVIDENCE_SHARE, EVIDENCE_UNITS, PROCESS_START, ROLLOUT_CONTROL, ROLLOUT_POSITION};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One series of a Prometheus range answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// (evaluation time ms, value), ascending.
    pub points: Vec<(u64, f64)>,
}

impl Series {
    fn label(&self, k: &str) -> &str {
        self.labels.get(k).map_or("", String::as_str)
    }

    fn name(&self) -> &str {
        self.label("__name__")
    }

    /// Which process exported it: Prometheus' target labels.
    fn target(&self) -> String {
        format!("{}\u{1f}{}", self.label("job"), self.label("instance"))
    }

    /// Everything but the value: the series' identity.
    fn key(&self) -> String {
        let mut k = String::new();
        for (n, v) in &self.labels {
            k.push_str(n);
            k.push('\u{1f}');
            k.push_str(v);
            k.push('\u{1e}');
        }
        k
    }

    fn at(&self, t: u64) -> Option<f64> {
        self.points.binary_search_by_key(&t, |p| p.0).ok().and_then(|i| self.points.get(i)).map(|p| p.1)
    }
}

/// Last value seen per series, carried from one evaluation time to the next
/// (and across gaps), plus every replica process that ever reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    last: HashMap<String, (f64, Option<u64>)>,
    processes: BTreeSet<(String, u64)>,
    /// Each stratum's share (basis points, lowest and highest over the
    /// replicas) at the previous evaluation time: an interval's units were
    /// routed with the share before or after a step at either end of it.
    shares: Shares,
}

impl Baseline {
    /// Replica processes that reported evidence since the fold began: the
    /// most recorders that can each have counted one user.
    pub fn processes(&self) -> usize {
        self.processes.len()
    }

    /// Increment of a counter since the last time it was seen.
    fn delta(&mut self, key: String, v: f64, start: Option<u64>) -> u64 {
        let d = match self.last.get(&key) {
            None => v,
            Some((prev, prev_start)) => {
                let restarted = matches!((prev_start, start), (Some(a), Some(b)) if *a != b);
                if v < *prev || restarted { v } else { v - prev }
            }
        };
        self.last.insert(key, (v, start));
        if d.is_finite() && d > 0.0 { d.round() as u64 } else { 0 }
    }
}

/// What one evaluation time gives the judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub at_ms: u64,
    pub interval: Interval,
    /// The fleet's highest steering at that time.
    pub control: Option<Control>,
    /// The fleet's highest progression position at that time.
    pub position: Option<u64>,
}

impl Evaluation {
    pub fn has_evidence(&self) -> bool {
        !self.interval.requests.is_empty() || self.interval.strata.iter().any(|s| !s.revision.is_empty())
    }
}

fn version(s: &str) -> Option<usize> {
    match s {
        "stable" => Some(STABLE),
        "canary" => Some(CANARY),
        _ => None,
    }
}

/// Turn a range answer (evaluation times `times`, the first being the
/// baseline already folded or to be taken as one) into one `Evaluation` per later
/// time. `segments`: the route's segment names by index.
pub fn steps(series: &[Series], times: &[u64], segments: &[String], base: &mut Baseline) -> Vec<Evaluation> {
    let answer = Answer::new(series, segments);
    let mut out = Vec::with_capacity(times.len().saturating_sub(1));
    for (i, &t) in times.iter().enumerate() {
        // The first time is the baseline: its counters are taken, not added.
        let mut fold = answer.counters_at(t, i == 0, base);
        if i == 0 {
            continue;
        }
        let (control, position, shares) = answer.steering_at(t);
        for (stratum, sc) in &mut fold.strata {
            for (lo, hi) in [shares.get(stratum), base.shares.get(stratum)].into_iter().flatten() {
                sc.saw_weight(*lo);
                sc.saw_weight(*hi);
            }
        }
        base.shares = shares;
        let mut iv = fold.interval;
        iv.strata = fold.strata.into_values().collect();
        iv.user_multiplicity = u32::try_from(base.processes()).unwrap_or(u32::MAX);
        out.push(Evaluation { at_ms: t, interval: iv, control, position });
    }
    out
}

/// A segment's index by name (None: not one this config has).
fn segment_index(segments: &[String], name: &str) -> Option<u16> {
    segments.iter().position(|n| n == name).and_then(|i| u16::try_from(i).ok())
}

/// A range answer sorted for folding: process starts by target, and the
/// evidence counters.
struct Answer<'a> {
    series: &'a [Series],
    segments: &'a [String],
    starts: HashMap<String, &'a Series>,
    counters: Vec<&'a Series>,
}

/// Each stratum's lowest and highest canary share over the replicas (bp).
type Shares = BTreeMap<Stratum, (u16, u16)>;

/// One evaluation time's increments: per request, and per stratum.
struct Fold {
    interval: Interval,
    strata: BTreeMap<Stratum, StratumCounts>,
}

impl<'a> Answer<'a> {
    fn new(series: &'a [Series], segments: &'a [String]) -> Self {
        Answer {
            series,
            segments,
            starts: series.iter().filter(|s| s.name() == PROCESS_START).map(|s| (s.target(), s)).collect(),
            counters: series.iter().filter(|s| s.name() == EVIDENCE_UNITS || s.name() == EVIDENCE_BAD).collect(),
        }
    }

    /// Start time (ms) at `t` of the process that exported `s`.
    fn start_of(&self, s: &Series, t: u64) -> Option<u64> {
        self.starts.get(&s.target()).and_then(|p| p.at(t)).map(|v| (v * 1000.0) as u64)
    }

    /// Every counter's increment at `t`, carried in `base`; added up unless
    /// `baseline` (then they are only taken as the base).
    fn counters_at(&self, t: u64, baseline: bool, base: &mut Baseline) -> Fold {
        let mut fold = Fold { interval: Interval::default(), strata: BTreeMap::new() };
        for s in &self.counters {
            let Some(v) = s.at(t) else { continue };
            let start = self.start_of(s, t);
            if let Some(st) = start {
                base.processes.insert((s.target(), st));
            }
            let d = base.delta(s.key(), v, start);
            if baseline || d == 0 {
                continue;
            }
            self.add(&mut fold, s, d);
        }
        fold
    }

    /// Add counter `s`'s increment `d` to the cells its labels name.
    fn add(&self, fold: &mut Fold, s: &Series, d: u64) {
        let Some(ver) = version(s.label("version")) else { return };
        let what = match (Event::from_label(s.label("event")), rank::from_label(s.label("event"))) {
            (Some(e), _) => Ok(e),
            (None, Some(bin)) if s.name() == EVIDENCE_UNITS => Err(bin),
            _ => return, // an event this version does not judge
        };
        let bad = s.name() == EVIDENCE_BAD;
        let bump = |c: &mut Cell| match what {
            Ok(e) if bad => c.x[e.idx()][ver] += d,
            Ok(e) => c.n[e.idx()][ver] += d,
            Err(bin) => {
                if let Some(b) = c.rank.get_mut(bin) {
                    b[ver] += d;
                }
            }
        };
        match s.label("scope") {
            "requests" => bump(&mut fold.interval.requests),
            scope @ ("revision" | "epoch") => {
                let segment = match s.label("stratum") {
                    "weight" => None,
                    name => match segment_index(self.segments, name) {
                        Some(i) => Some(i),
                        None => return, // a segment this config no longer has
                    },
                };
                let per_user = s.label("unit") == "user";
                let stratum = Stratum { segment, per_user };
                let sc = fold
                    .strata
                    .entry(stratum)
                    .or_insert_with(|| StratumCounts { stratum: Some(stratum), ..StratumCounts::default() });
                if scope == "revision" {
                    bump(&mut sc.revision);
                }
                // Per request the two scopes count the same units.
                if scope == "epoch" || !per_user {
                    bump(&mut sc.epoch);
                }
            }
            _ => {}
        }
    }

    /// The fleet's highest steering and position at `t`, and each
    /// stratum's lowest and highest canary share (basis points).
    fn steering_at(&self, t: u64) -> (Option<Control>, Option<u64>, Shares) {
        let mut control: Option<Control> = None;
        let mut position: Option<u64> = None;
        let mut shares = Shares::new();
        for s in self.series {
            let Some(v) = s.at(t) else { continue };
            match s.name() {
                n if n == ROLLOUT_CONTROL => {
                    let c = Control::decode(v);
                    control = Some(control.map_or(c, |x| x.max(c)));
                }
                n if n == ROLLOUT_POSITION => {
                    let p = if v.is_finite() && v >= 0.0 { v as u64 } else { 0 };
                    position = Some(position.map_or(p, |x| x.max(p)));
                }
                n if n == EVIDENCE_SHARE => {
                    let segment = match s.label("stratum") {
                        "weight" => None,
                        name => segment_index(self.segments, name),
                    };
                    // Exports before test R named per-user strata only.
                    let stratum = Stratum { segment, per_user: s.label("unit") != "request" };
                    let bp = (v * 10_000.0).round().clamp(0.0, 10_000.0) as u16;
                    if bp > 0 {
                        let e = shares.entry(stratum).or_insert((bp, bp));
                        *e = (e.0.min(bp), e.1.max(bp));
                    }
                }
                _ => {}
            }
        }
        (control, position, shares)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, instance: &str, extra: &[(&str, &str)], points: &[(u64, f64)]) -> Series {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert("__name__".into(), name.into());
        labels.insert("job".into(), "weir".into());
        labels.insert("instance".into(), instance.into());
        for (k, v) in extra {
            labels.insert((*k).into(), (*v).into());
        }
        Series { labels, points: points.to_vec() }
    }

    fn errors(instance: &str, version: &str, bad: bool, points: &[(u64, f64)]) -> Series {
        series(
            if bad { EVIDENCE_BAD } else { EVIDENCE_UNITS },
            instance,
            &[("version", version), ("event", "error"), ("stratum", "all"), ("unit", "request"), ("scope", "requests")],
            points,
        )
    }

    fn canary_units(s: &[Evaluation]) -> Vec<u64> {
        s.iter().map(|s| s.interval.requests.n(Event::Error, CANARY)).collect()
    }

    #[test]
    fn increments_sum_over_replicas_and_survive_gaps_and_restarts() {
        let times = [0, 10, 20, 30, 40];
        let start = |inst: &str, pts: &[(u64, f64)]| series(PROCESS_START, inst, &[], pts);
        let all = vec![
            // Replica a: steady; missing at 20 (Prometheus gap): its growth
            // shows up at 30, once.
            errors("a", "canary", false, &[(0, 5.0), (10, 15.0), (30, 40.0), (40, 41.0)]),
            start("a", &[(0, 1.0), (10, 1.0), (30, 1.0), (40, 1.0)]),
            // Replica b: restarted between 20 and 30 with more counts than
            // before (the start time tells), then a plain reset at 40.
            errors("b", "canary", false, &[(0, 0.0), (10, 2.0), (20, 4.0), (30, 9.0), (40, 3.0)]),
            start("b", &[(0, 1.0), (10, 1.0), (20, 1.0), (30, 25.0), (40, 25.0)]),
        ];
        let mut base = Baseline::default();
        let s = steps(&all, &times, &[], &mut base);
        assert_eq!(s.iter().map(|s| s.at_ms).collect::<Vec<_>>(), vec![10, 20, 30, 40]);
        assert_eq!(canary_units(&s), vec![10 + 2, 2, 25 + 9, 1 + 3]);
        assert_eq!(base.processes(), 3, "a, b, and b after its restart");
    }

    #[test]
    fn the_same_answer_folds_the_same_way_in_one_batch_or_many() {
        let times = [0, 10, 20, 30];
        let all = vec![
            errors("a", "canary", false, &[(0, 1.0), (10, 3.0), (20, 6.0), (30, 10.0)]),
            errors("a", "canary", true, &[(10, 1.0), (30, 2.0)]),
            errors("b", "stable", false, &[(0, 7.0), (10, 9.0), (20, 20.0), (30, 21.0)]),
        ];
        let mut one = Baseline::default();
        let whole = steps(&all, &times, &[], &mut one);
        let mut two = Baseline::default();
        let mut parts = steps(&all, &times[..3], &[], &mut two);
        parts.extend(steps(&all, &times[2..], &[], &mut two));
        assert_eq!(whole, parts);
        assert_eq!(one, two);
        assert_eq!(whole[2].interval.requests.x(Event::Error, CANARY), 1);
    }

    #[test]
    fn steering_takes_the_highest_value_and_strata_map_by_segment_name() {
        let times = [0, 10];
        let seg = |unit: &'static str, scope: &'static str| -> Vec<(&'static str, &'static str)> {
            vec![("version", "canary"), ("event", "error"), ("stratum", "vip"), ("unit", unit), ("scope", scope)]
        };
        let all = vec![
            series(ROLLOUT_CONTROL, "a", &[], &[(10, 4.0)]),
            series(ROLLOUT_CONTROL, "b", &[], &[(10, 7.0)]),
            series(ROLLOUT_POSITION, "a", &[], &[(10, 1026.0)]),
            series(EVIDENCE_UNITS, "a", &seg("user", "revision"), &[(10, 4.0)]),
            series(EVIDENCE_UNITS, "a", &seg("user", "epoch"), &[(10, 3.0)]),
            series(EVIDENCE_UNITS, "a", &seg("request", "revision"), &[(10, 9.0)]),
            series(EVIDENCE_SHARE, "a", &[("stratum", "vip")], &[(10, 0.25)]),
            series(
                EVIDENCE_UNITS,
                "a",
                &seg("request", "revision")
                    .into_iter()
                    .map(|(k, v)| if k == "stratum" { (k, "gone") } else { (k, v) })
                    .collect::<Vec<_>>(),
                &[(10, 9.0)],
            ),
        ];
        let s = steps(&all, &times, &["staff".into(), "vip".into()], &mut Baseline::default());
        assert_eq!(s[0].control, Some(Control { epoch: 1, rank: 3 }));
        assert_eq!(s[0].position, Some(1026));
        let strata = &s[0].interval.strata;
        assert_eq!(strata.len(), 2, "the unknown segment is skipped");
        let user = strata.iter().find(|c| c.stratum.is_some_and(|s| s.per_user)).unwrap();
        assert_eq!((user.revision.n(Event::Error, CANARY), user.epoch.n(Event::Error, CANARY)), (4, 3));
        assert_eq!(user.weight_bp, 2500);
        let req = strata.iter().find(|c| c.stratum.is_some_and(|s| !s.per_user)).unwrap();
        assert_eq!(req.stratum.unwrap().segment, Some(1));
        assert_eq!((req.revision.n(Event::Error, CANARY), req.epoch.n(Event::Error, CANARY)), (9, 9));
    }
}
