//! The evidence families of `/metrics`: what each replica's judge counts
//! per route, version and stratum (the fleet sums them across replicas).

use super::super::*;
use super::escape;
use crate::analysis::{StratumCounts, rank};
use std::fmt::Write as _;

/// A route with a canary, and its canary revision.
type Canary<'r, 'a> = (&'r RouteView<'a>, &'a str);

/// A route's evidence totals: per stratum, and over all requests.
type Totals = (Vec<StratumCounts>, Cell);

/// Stratum label: the segment's name, or `weight` for the route's weight.
fn stratum_label<'a>(r: &RouteView<'a>, s: Option<Stratum>) -> &'a str {
    match s.and_then(|s| s.segment) {
        Some(i) => r.segments.get(usize::from(i)).copied().unwrap_or("?"),
        None => "weight",
    }
}

/// A family's `# HELP` and `# TYPE` lines.
fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// The judge's inputs as counters (fleet mode sums them over replicas), and
/// the steering each replica serves with.
pub(super) fn evidence_families(o: &mut String, routes: &[RouteView<'_>]) {
    let with_canary: Vec<Canary<'_, '_>> = routes.iter().filter_map(|r| Some((r, r.revision?))).collect();
    let totals: Vec<Totals> = with_canary.iter().map(|(r, _)| r.metrics.evidence.totals()).collect();
    counter_families(o, &with_canary, &totals);
    share_family(o, &with_canary, &totals);
    let fleet: Vec<&Canary<'_, '_>> =
        with_canary.iter().filter(|(r, _)| r.metrics.fleet.source.load(Ordering::Relaxed) != 0).collect();
    fleet_families(o, &fleet);
}

/// A route's evidence cells, each with its stratum, unit and scope labels.
fn labelled_cells<'c>(r: &RouteView<'_>, strata: &'c [StratumCounts], requests: &'c Cell) -> Vec<(String, &'c Cell)> {
    let mut cells: Vec<(String, &Cell)> =
        vec![("stratum=\"all\",unit=\"request\",scope=\"requests\"".into(), requests)];
    for sc in strata {
        let Some(st) = sc.stratum else { continue };
        let stratum = escape(stratum_label(r, sc.stratum));
        if st.per_user {
            cells.push((format!("stratum=\"{stratum}\",unit=\"user\",scope=\"revision\""), &sc.revision));
            cells.push((format!("stratum=\"{stratum}\",unit=\"user\",scope=\"epoch\""), &sc.epoch));
        } else {
            cells.push((format!("stratum=\"{stratum}\",unit=\"request\",scope=\"revision\""), &sc.revision));
        }
    }
    cells
}

/// `weir_analysis_units_total` and `weir_analysis_bad_units_total`: per
/// route, version, event and cell, the units counted or the bad ones.
fn counter_families(o: &mut String, with_canary: &[Canary<'_, '_>], totals: &[Totals]) {
    type Read = fn(&Cell, Event, usize) -> u64;
    let families: [(&str, &str, Read); 2] = [
        (
            EVIDENCE_UNITS,
            "Evidence units counted for the canary judgement (requests, or users once per scope), by event; event rank_NN counts timed units in rank bin NN of stable's distribution.",
            Cell::n,
        ),
        (EVIDENCE_BAD, "Evidence units that were bad for the event (an error, a latency over the line).", Cell::x),
    ];
    for (name, help, value) in families {
        header(o, name, "counter", help);
        for ((r, revision), (strata, requests)) in with_canary.iter().zip(totals) {
            let route = escape(&r.metrics.name);
            let revision = escape(revision);
            for (labels, cell) in labelled_cells(r, strata, requests) {
                for e in Event::ALL {
                    for (v, version) in ["stable", "canary"].into_iter().enumerate() {
                        if cell.n(e, v) == 0 {
                            continue; // absent means none; keeps the series few
                        }
                        let _ = writeln!(
                            o,
                            "{name}{{route=\"{route}\",revision=\"{revision}\",version=\"{version}\",event=\"{}\",{labels}}} {}",
                            e.label(),
                            value(cell, e, v)
                        );
                    }
                }
                if name != EVIDENCE_UNITS {
                    continue;
                }
                // Test R's units per rank bin: event="rank_07" is the 8th bin.
                for (b, counts) in cell.rank.iter().enumerate() {
                    for (v, version) in ["stable", "canary"].into_iter().enumerate() {
                        if let Some(n) = counts.get(v).filter(|n| **n > 0) {
                            let _ = writeln!(
                                o,
                                "{name}{{route=\"{route}\",revision=\"{revision}\",version=\"{version}\",event=\"{}\",{labels}}} {n}",
                                rank::label(b)
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `weir_analysis_null_share_ratio`: per stratum, the judge's null share.
fn share_family(o: &mut String, with_canary: &[Canary<'_, '_>], totals: &[Totals]) {
    header(
        o,
        EVIDENCE_SHARE,
        "gauge",
        "Highest canary weight (0-1) a stratum's units were routed with: the judge's null share.",
    );
    for ((r, revision), (strata, _)) in with_canary.iter().zip(totals) {
        for sc in strata.iter().filter(|s| s.stratum.is_some()) {
            let unit = if sc.stratum.is_some_and(|s| s.per_user) { "user" } else { "request" };
            let _ = writeln!(
                o,
                "{EVIDENCE_SHARE}{{route=\"{}\",revision=\"{}\",stratum=\"{}\",unit=\"{unit}\"}} {}",
                escape(&r.metrics.name),
                escape(revision),
                escape(stratum_label(r, sc.stratum)),
                f64::from(sc.weight_bp) / 10_000.0
            );
        }
    }
}

/// The fleet gauges of routes in fleet mode: steering, position, the
/// judgement's start and progress, and whether the source answers.
fn fleet_families(o: &mut String, fleet: &[&Canary<'_, '_>]) {
    use std::sync::atomic::Ordering::Relaxed;
    /// The value of a route's line, or None for no line.
    type Read = fn(&FleetGauges) -> Option<String>;
    fn seconds(ms: u64) -> String {
        (ms as f64 / 1000.0).to_string()
    }
    // (name, help, the line names the canary revision, value)
    let families: [(&str, &str, bool, Read); 5] = [
        (
            ROLLOUT_CONTROL,
            "Steering this replica serves with: epoch x 4 + rank (0 running, 1 paused, 2 killed, 3 rolled back). A fleet follows the highest.",
            true,
            |f| Some(f.control.load(Relaxed).to_string()),
        ),
        (ROLLOUT_POSITION, "Progression position: epoch x 1024 + step.", true, |f| {
            Some(f.position.load(Relaxed).to_string())
        }),
        (
            FLEET_START,
            "Evaluation time the fleet judgement of this canary revision started from, seconds since the Unix epoch.",
            true,
            |f| Some(f.start_ms.load(Relaxed)).filter(|ms| *ms > 0).map(seconds),
        ),
        (SOURCE_UP, "1 while the analysis source (Prometheus) answers, 0 while it does not.", false, |f| {
            Some(u8::from(f.source.load(Relaxed) == 2).to_string())
        }),
        (
            FLEET_EVALUATED,
            "Latest evaluation time judged from the fleet's evidence, seconds since the Unix epoch.",
            false,
            |f| Some(seconds(f.through_ms.load(Relaxed))),
        ),
    ];
    for (name, help, with_revision, value) in families {
        header(o, name, "gauge", help);
        for (r, revision) in fleet {
            let Some(v) = value(&r.metrics.fleet) else { continue };
            let route = escape(&r.metrics.name);
            if with_revision {
                let _ = writeln!(o, "{name}{{route=\"{route}\",revision=\"{}\"}} {v}", escape(revision));
            } else {
                let _ = writeln!(o, "{name}{{route=\"{route}\"}} {v}");
            }
        }
    }
}
