//! The judge's sentences: what a verdict found, in words a human reads in
//! the journal, the log and `GET /routes`.

use super::{Fired, JudgeState, PASS_FLOOR, Scope, Standing, Test, Verdict, rate};
use crate::analysis::counts::{CANARY, Cell, STABLE};
use crate::analysis::rank;
use crate::routing::policy::Analysis;

fn pct(x: f64) -> String {
    if x < 0.1 && x > 0.0 { format!("{x:.2} %") } else { format!("{x:.1} %") }
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn num(e: f64) -> String {
    if e >= 1e6 {
        format!("{e:.2e}")
    } else if e >= 10.0 {
        count(e.round() as u64)
    } else {
        format!("{e:.2}")
    }
}

/// What "bad" means for a test, in words.
fn line(p: &Analysis, t: Test) -> String {
    let dur = |d: Option<std::time::Duration>| d.map_or_else(String::new, |d| format!(" {} ms", d.as_millis()));
    match t {
        Test::E | Test::GErr => "errors".into(),
        Test::R => "latency".into(),
        Test::W95 => "WebSocket round trips over stable's p95".into(),
        Test::G95 => format!("requests over max_p95{}", dur(p.max_p95)),
        Test::G99 => format!("requests over max_p99{}", dur(p.max_p99)),
        Test::GRtt => format!("round trips over max_ws_rtt_p95{}", dur(p.max_ws_rtt_p95)),
    }
}

/// What one judgement found, for its sentence.
pub(super) struct Found<'a> {
    pub(super) verdict: Verdict,
    pub(super) fired: Option<&'a Fired>,
    pub(super) held_by: &'a [Test],
    pub(super) standings: &'a [Standing],
    /// The tests sit out while stable breaks an SLO.
    pub(super) sits_out: bool,
    /// The tests did not take this interval.
    pub(super) paused: bool,
}

/// The sentence a human reads for one judgement.
pub(super) fn explain(p: &Analysis, st: &JudgeState, found: &Found<'_>, canary_in_step: u64) -> String {
    let Found { verdict, fired, held_by, standings, sits_out, paused } = *found;
    match verdict {
        Verdict::Fail => match fired {
            Some(f) if f.test == Test::R => rank_sentence(p, st, f),
            Some(f) => fail_sentence(p, st, f),
            None => "fail".into(),
        },
        Verdict::Hold => hold_sentence(p, st, (held_by, sits_out), standings),
        Verdict::Pass | Verdict::Insufficient => {
            let quiet = quiet_sentence(verdict, standings, canary_in_step);
            if paused {
                format!("stable was out of an SLO as this interval began, so the tests sat it out; {quiet}")
            } else {
                quiet
            }
        }
    }
}

/// A fail: which test fired in which scope, the two versions' rates and
/// counts there, and the evidence against its threshold.
fn fail_sentence(p: &Analysis, st: &JudgeState, f: &Fired) -> String {
    let (totals, scope) = fired_scope(st, f);
    let e = f.test.event();
    let unit = if e.is_rtt() { "round trips" } else { "requests" };
    let what = line(p, f.test);
    let tol = if f.test == Test::W95 && p.latency_tolerance > 0.0 {
        format!(" (canary's line × {:.2})", 1.0 + p.latency_tolerance)
    } else {
        String::new()
    };
    format!(
        "test {} fired {scope}: canary {what}{tol} {} vs stable {} over {} vs {} {unit}; evidence {} ≥ {}",
        f.test.as_str(),
        pct(rate(totals, e, CANARY) * 100.0),
        pct(rate(totals, e, STABLE) * 100.0),
        count(totals.n(e, CANARY)),
        count(totals.n(e, STABLE)),
        num(f.e_value),
        num(f.threshold),
    )
}

/// The totals of the scope a test fired in, and the scope in words.
fn fired_scope<'s>(st: &'s JudgeState, f: &Fired) -> (&'s Cell, String) {
    static EMPTY: Cell =
        Cell { n: [[0; 2]; crate::analysis::EVENTS], x: [[0; 2]; crate::analysis::EVENTS], rank: [[0; 2]; rank::BINS] };
    let wanted = match f.scope {
        Scope::Revision => 0,
        Scope::Epoch(s) => s,
    };
    let totals = st.scopes.iter().find(|s| s.epoch == wanted).map_or(&EMPTY, |s| &s.totals);
    let scope = match f.scope {
        Scope::Revision => "since the revision started".to_string(),
        Scope::Epoch(s) => format!("since epoch {s} began"),
    };
    (totals, scope)
}

/// An ordinal: 71st, 52nd, 3rd, 11th.
fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// An R fail: where canary's requests sit in stable's distribution.
fn rank_sentence(p: &Analysis, st: &JudgeState, f: &Fired) -> String {
    let (totals, scope) = fired_scope(st, f);
    let at = |v: usize| rank::mean_rank(&totals.rank, v).map_or("?".into(), |u| ordinal((u * 100.0).round() as u64));
    let tol = if p.latency_tolerance > 0.0 {
        format!(" (canary's latency ÷ {:.2})", 1.0 + p.latency_tolerance)
    } else {
        String::new()
    };
    format!(
        "test R fired {scope}: canary's requests{tol} sit at stable's {} percentile on average, 50th expected (stable's own: {}), over {} vs {} timed requests; evidence {} ≥ {}",
        at(CANARY),
        at(STABLE),
        count(totals.ranked(CANARY)),
        count(totals.ranked(STABLE)),
        num(f.e_value),
        num(f.threshold),
    )
}

/// A hold: the guards that hold it, each version's rate in the newest
/// epoch, and whether stable breaks the SLO too.
fn hold_sentence(
    p: &Analysis,
    st: &JudgeState,
    (held_by, sits_out): (&[Test], bool),
    standings: &[Standing],
) -> String {
    let parts: Vec<String> = held_by
        .iter()
        .map(|t| {
            let e = t.event();
            let empty = Cell::default();
            let c = st.scopes.last().map_or(&empty, |s| &s.totals);
            format!(
                "{} ({}: stable {}, canary {})",
                t.as_str(),
                line(p, *t),
                pct(rate(c, e, STABLE) * 100.0),
                pct(rate(c, e, CANARY) * 100.0)
            )
        })
        .collect();
    let stable_out = standings.iter().any(|s| held_by.contains(&s.test) && s.breaking.is_some_and(|b| b[STABLE]));
    let who = if stable_out && sits_out {
        "stable breaks the SLO too, so the canary is not blamed and the tests take no evidence until stable is back within it"
    } else if stable_out {
        &format!(
            "stable has broken the SLO for over {} minutes, so the tests take evidence again and can roll the canary back",
            super::SIT_OUT_MAX_MS / 60_000
        )
    } else {
        "the canary breaks the SLO while stable keeps it; the tests against stable decide its fate"
    };
    let what = if stable_out && !sits_out { "no step" } else { "no step, no rollback" };
    format!("hold: {who}; {what}: {}", parts.join("; "))
}

/// A pass or too little data: no test crossed; the step's canary requests
/// and the strongest evidence so far.
fn quiet_sentence(verdict: Verdict, standings: &[Standing], canary_in_step: u64) -> String {
    let top = standings.iter().max_by(|a, b| a.progress().total_cmp(&b.progress()));
    let lead = top.map_or(String::new(), |s| {
        format!("; strongest evidence {} {} of {}", s.test.as_str(), num(s.e_weighted), num(s.threshold))
    });
    if verdict == Verdict::Pass {
        format!("no test crossed over {} canary requests this step{lead}", count(canary_in_step))
    } else {
        format!(
            "no test crossed; {} canary requests this step (a pass needs {PASS_FLOOR}){lead}",
            count(canary_in_step)
        )
    }
}
