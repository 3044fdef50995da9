//! The evidence families of `/metrics`: what each replica's judge counts
//! per route, version and stratum (the fleet sums them across replicas).

use super::super::*;
use super::escape;
use std::fmt::Write as _;

/// Stratum label: the segment's name, or `weight` for the route's weight.
fn stratum_label<'a>(r: &RouteView<'a>, s: Option<Stratum>) -> &'a str {
    match s.and_then(|s| s.segment) {
        Some(i) => r.segments.get(usize::from(i)).copied().unwrap_or("?"),
        None => "weight",
    }
}

/// The judge's inputs as counters (fleet mode sums them over replicas), and
/// the steering each replica serves with.
pub(super) fn evidence_families(o: &mut String, routes: &[RouteView<'_>]) {
    let with_canary: Vec<(&RouteView<'_>, &str)> = routes.iter().filter_map(|r| Some((r, r.revision?))).collect();
    let totals: Vec<_> = with_canary.iter().map(|(r, _)| r.metrics.evidence.totals()).collect();
    for (name, help, bad) in [
        (
            EVIDENCE_UNITS,
            "Evidence units counted for the canary judgement (requests, or users once per scope), by event.",
            false,
        ),
        (EVIDENCE_BAD, "Evidence units that were bad for the event (an error, a latency over the line).", true),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        for ((r, revision), (strata, requests)) in with_canary.iter().zip(&totals) {
            let route = escape(&r.metrics.name);
            let revision = escape(revision);
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
            for (labels, cell) in cells {
                for e in Event::ALL {
                    for (v, version) in ["stable", "canary"].into_iter().enumerate() {
                        let n = cell.n(e, v);
                        if n == 0 {
                            continue; // absent means none; keeps the series few
                        }
                        let value = if bad { cell.x(e, v) } else { n };
                        let _ = writeln!(
                            o,
                            "{name}{{route=\"{route}\",revision=\"{revision}\",version=\"{version}\",event=\"{}\",{labels}}} {value}",
                            e.label()
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP {EVIDENCE_SHARE} Highest canary weight (0-1) a per-user stratum's units were routed with: the judge's null share."
    );
    let _ = writeln!(o, "# TYPE {EVIDENCE_SHARE} gauge");
    for ((r, revision), (strata, _)) in with_canary.iter().zip(&totals) {
        for sc in strata.iter().filter(|s| s.stratum.is_some_and(|s| s.per_user)) {
            let _ = writeln!(
                o,
                "{EVIDENCE_SHARE}{{route=\"{}\",revision=\"{}\",stratum=\"{}\"}} {}",
                escape(&r.metrics.name),
                escape(revision),
                escape(stratum_label(r, sc.stratum)),
                f64::from(sc.weight_bp) / 10_000.0
            );
        }
    }
    let fleet: Vec<&(&RouteView<'_>, &str)> =
        with_canary.iter().filter(|(r, _)| r.metrics.fleet.source.load(Ordering::Relaxed) != 0).collect();
    for (name, help, get) in [
        (
            ROLLOUT_CONTROL,
            "Steering this replica serves with: epoch x 4 + rank (0 running, 1 paused, 2 killed, 3 rolled back). A fleet follows the highest.",
            0,
        ),
        (ROLLOUT_POSITION, "Progression position: epoch x 1024 + step.", 1),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for (r, revision) in &fleet {
            let f = &r.metrics.fleet;
            let v = if get == 0 { f.control.load(Ordering::Relaxed) } else { f.position.load(Ordering::Relaxed) };
            let _ =
                writeln!(o, "{name}{{route=\"{}\",revision=\"{}\"}} {v}", escape(&r.metrics.name), escape(revision));
        }
    }
    let fleet: Vec<&(&RouteView<'_>, &str)> =
        with_canary.iter().filter(|(r, _)| r.metrics.fleet.source.load(Ordering::Relaxed) != 0).collect();
    let _ = writeln!(
        o,
        "# HELP {FLEET_START} Evaluation time the fleet judgement of this canary revision started from, seconds since the Unix epoch."
    );
    let _ = writeln!(o, "# TYPE {FLEET_START} gauge");
    for (r, revision) in &fleet {
        let ms = r.metrics.fleet.start_ms.load(Ordering::Relaxed);
        if ms > 0 {
            let _ = writeln!(
                o,
                "{FLEET_START}{{route=\"{}\",revision=\"{}\"}} {}",
                escape(&r.metrics.name),
                escape(revision),
                ms as f64 / 1000.0
            );
        }
    }
    let _ = writeln!(o, "# HELP {SOURCE_UP} 1 while the analysis source (Prometheus) answers, 0 while it does not.");
    let _ = writeln!(o, "# TYPE {SOURCE_UP} gauge");
    for (r, _) in &fleet {
        let up = r.metrics.fleet.source.load(Ordering::Relaxed) == 2;
        let _ = writeln!(o, "{SOURCE_UP}{{route=\"{}\"}} {}", escape(&r.metrics.name), u8::from(up));
    }
    let _ = writeln!(
        o,
        "# HELP {FLEET_EVALUATED} Latest evaluation time judged from the fleet's evidence, seconds since the Unix epoch."
    );
    let _ = writeln!(o, "# TYPE {FLEET_EVALUATED} gauge");
    for (r, _) in &fleet {
        let ms = r.metrics.fleet.through_ms.load(Ordering::Relaxed);
        let _ = writeln!(o, "{FLEET_EVALUATED}{{route=\"{}\"}} {}", escape(&r.metrics.name), ms as f64 / 1000.0);
    }
}
