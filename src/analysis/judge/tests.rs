//! The judge with hand-made intervals (a `#[cfg(test)]` module): what fires,
//! what holds, what passes, and the arithmetic of the α budget. Seeded
//! randomness only.

use super::*;
use crate::analysis::counts::{Frozen, Stratum, StratumCounts};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const WEB: Stratum = Stratum { segment: None, per_user: false };

fn policy() -> Analysis {
    Analysis::default()
}

/// One per-request interval: `(n, x)` per version for `events`.
fn interval(events: &[(Event, [u64; 2], [u64; 2])]) -> Interval {
    let mut c = Cell::default();
    for (e, n, x) in events {
        c.n[e.idx()] = *n;
        c.x[e.idx()] = *x;
    }
    Interval {
        strata: vec![StratumCounts { stratum: Some(WEB), weight_bp: 1000, weight_min_bp: 0, revision: c, epoch: c }],
        requests: c,
        frozen: Frozen::default(),
        user_multiplicity: 0,
    }
}

fn binomial(rng: &mut StdRng, n: u64, p: f64) -> u64 {
    (0..n).filter(|_| rng.random::<f64>() < p).count() as u64
}

/// 10 s of 50 req/s at 10 % canary with the given error rates.
fn errors(rng: &mut StdRng, stable: f64, canary: f64) -> Interval {
    let n = [450, 50];
    let x = [binomial(rng, n[0], stable), binomial(rng, n[1], canary)];
    interval(&[(Event::Error, n, x)])
}

#[test]
fn thresholds_split_alpha_over_tests_and_start_times() {
    let p = policy();
    let mut st = JudgeState::default();
    let j = judge(&p, &mut st, &interval(&[]), false, 0);
    let k = tests_in_use(&p, false).len();
    assert_eq!(k, 2, "E and R without guards or WebSocket round trips");
    let s = &j.standings[0];
    assert!((s.threshold - 2.0 / 0.01).abs() < 1e-6, "the mixture fires at K/α");
    assert!((s.e_weighted - 0.75).abs() < 1e-9, "the revision's start, weighted ¾: {}", s.e_weighted);
    assert!((s.threshold_revision - 4.0 * 2.0 / 3.0 / 0.01).abs() < 1e-6, "the revision alone: K/(¾α)");
    assert!((s.threshold_epoch - 480.0 * 2.0 / 0.01).abs() < 1e-3, "epoch 1 alone: K/(α/480)");
    st.new_epoch(1);
    judge(&p, &mut st, &interval(&[]), false, 2);
    assert_eq!(st.scopes.iter().map(|s| s.epoch).collect::<Vec<_>>(), vec![0, 1, 2], "epoch 1 lives on");
    // Flat over the first hour of starts, thinning after.
    assert_eq!(super::threshold(p.alpha, 2, 2), super::threshold(p.alpha, 2, FLAT_STARTS));
    assert!(super::threshold(p.alpha, 2, FLAT_STARTS + 1) > super::threshold(p.alpha, 2, FLAT_STARTS));
    // The shares sum to at most 1: ¾ + ¼·(½ + H/(2(H+1))).
    let w: f64 = start_weight(0) + (1..1_000_000u32).map(start_weight).sum::<f64>();
    assert!(w < 1.0 && w > 0.99, "{w}");
    for s in 3..20 {
        st.new_epoch(s);
    }
    assert_eq!(st.scopes.len(), LIVE_EPOCHS + 1, "old epochs are dropped past the limit");
    assert_eq!((st.scopes[0].epoch, st.scopes.last().map(|s| s.epoch)), (0, Some(19)));
    let with_guards = Analysis { max_error_rate: Some(1.0), max_p95: Some(std::time::Duration::from_millis(300)), ..p };
    assert_eq!(tests_in_use(&with_guards, true).len(), 5);
    assert_eq!(budget_tests(&tests_in_use(&with_guards, true)), 3, "guards hold only: they spend no α");
    let mut st = JudgeState::default();
    let j = judge(&with_guards, &mut st, &interval(&[]), false, 0);
    assert!((j.standings[0].threshold - 2.0 / 0.01).abs() < 1e-6, "a guard leaves E's share as it was");
}

#[test]
fn a_reload_never_lowers_a_running_threshold() {
    let p = policy();
    let mut st = JudgeState::default();
    let with_rtt = judge(&p, &mut st, &interval(&[]), true, 0).standings[0].threshold;
    assert!((with_rtt - 3.0 / 0.01).abs() < 1e-6, "E, R, W95");
    assert_eq!(st.budgeted.len(), 3);
    // WebSocket round trips no longer judged (a test dropped), then α raised:
    // the running processes keep their thresholds.
    let dropped = judge(&p, &mut st, &interval(&[]), false, 1).standings[0].threshold;
    let looser = Analysis { alpha: 0.05, ..policy() };
    let raised = judge(&looser, &mut st, &interval(&[]), false, 2).standings[0].threshold;
    assert_eq!((dropped, raised), (with_rtt, with_rtt));
    // A stricter α applies at once.
    let stricter = Analysis { alpha: 0.001, ..policy() };
    let lowered = judge(&stricter, &mut st, &interval(&[]), false, 3).standings[0].threshold;
    assert!(lowered > with_rtt * 9.0, "{lowered}");
    // A test that joins mid-revision gets no share: it never fires, and
    // the others keep theirs.
    let mut joined = JudgeState::default();
    judge(&p, &mut joined, &interval(&[]), false, 0);
    let bad_rtt = interval(&[(Event::Rtt95, [450, 50], [0, 50])]);
    for i in 1..50 {
        let j = judge(&p, &mut joined, &bad_rtt, true, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "a late-joining test fired: {}", j.reason);
        assert!((j.standings[0].threshold - 2.0 / 0.01).abs() < 1e-6);
    }
    // A new revision (a fresh state) starts from the config as it is.
    let fresh = judge(&looser, &mut JudgeState::default(), &interval(&[]), false, 4).standings[0].threshold;
    assert!((fresh - 2.0 / 0.05).abs() < 1e-6);
}

/// `interval` with the counts in a per-user (sticky) stratum.
fn users_interval(events: &[(Event, [u64; 2], [u64; 2])]) -> Interval {
    let mut iv = interval(events);
    iv.strata[0].stratum = Some(Stratum { segment: None, per_user: true });
    iv
}

#[test]
fn lost_filters_close_the_running_processes_instead_of_granting_fresh_alpha() {
    let p = policy();
    let mut st = JudgeState::default();
    // Some per-user evidence against the canary, not enough to fire.
    for i in 0..2 {
        let j = judge(&p, &mut st, &users_interval(&[(Event::Error, [450, 50], [1, 2])]), false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "{}", j.reason);
    }
    let e_before = st.revision().unwrap().tests[&Test::E].two.value();
    assert!(e_before > 1.0);
    let epoch_before = st.epoch;
    st.filters_lost(50_000);
    assert_eq!((st.epoch, st.closed_below), (epoch_before + 1, epoch_before + 1));
    assert_ne!(st, JudgeState::default(), "never a fresh budget");
    // Per-user evidence now goes only to the new epoch: the closed
    // processes cannot tell a counted user from a new one.
    let mut fired = None;
    for i in 5..400 {
        let j = judge(&p, &mut st, &users_interval(&[(Event::Error, [450, 50], [1, 10])]), false, i * 10_000);
        if j.verdict == Verdict::Fail {
            fired = j.fired;
            break;
        }
    }
    assert_eq!(st.revision().unwrap().tests[&Test::E].two.value(), e_before, "closed to per-user evidence");
    let f = fired.expect("the new epoch fires on a bad canary");
    assert_eq!(f.scope, Scope::Epoch(epoch_before + 1));
    // Per-request evidence needs no filter: the closed revision still takes it.
    let mut st2 = st.clone();
    judge(&p, &mut st2, &interval(&[(Event::Error, [450, 50], [0, 5])]), false, 500 * 10_000);
    assert!(st2.revision().unwrap().tests[&Test::E].two.value() > e_before);
    // Nothing judged yet: nothing to close.
    let mut empty = JudgeState::default();
    empty.filters_lost(0);
    assert_eq!(empty, JudgeState::default());
}

#[test]
fn a_canary_with_five_percent_errors_fails_test_e() {
    let mut rng = StdRng::seed_from_u64(1);
    let p = policy();
    let mut st = JudgeState::default();
    let mut fired_at = None;
    for i in 0..100 {
        let j = judge(&p, &mut st, &errors(&mut rng, 0.002, 0.05), false, i * 10_000);
        if j.verdict == Verdict::Fail {
            assert_eq!(j.fired.as_ref().map(|f| f.test), Some(Test::E));
            assert!(j.reason.contains("test E fired"), "{}", j.reason);
            assert!(j.reason.contains("canary errors"), "{}", j.reason);
            fired_at = Some(i);
            break;
        }
    }
    let i = fired_at.expect("never fired");
    assert!(i < 30, "took {i} intervals ({} canary requests)", i * 50);
}

#[test]
fn a_healthy_canary_is_never_failed_over_a_long_run() {
    let p = policy();
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(100 + seed);
        let mut st = JudgeState::default();
        for i in 0..360 {
            let j = judge(&p, &mut st, &errors(&mut rng, 0.01, 0.01), false, i * 10_000);
            assert_ne!(j.verdict, Verdict::Fail, "seed {seed} interval {i}: {}", j.reason);
            if st.epoch_due(&p, i * 10_000) {
                st.new_epoch(i * 10_000);
            }
        }
    }
}

#[test]
fn a_shared_outage_holds_and_blames_nobody() {
    let mut rng = StdRng::seed_from_u64(7);
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let mut st = JudgeState::default();
    let mut held = 0;
    for i in 0..12 {
        let j = judge(&p, &mut st, &errors(&mut rng, 0.03, 0.03), false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "{}", j.reason);
        if j.verdict == Verdict::Hold {
            held += 1;
            assert_eq!(j.held_by, vec![Test::GErr]);
            assert!(j.reason.starts_with("hold: stable breaks the SLO too"), "{}", j.reason);
        }
    }
    assert!(held >= 8, "held {held} of 12 intervals");
    // After the outage the hold lifts.
    let mut last = Verdict::Hold;
    for i in 12..40 {
        last = judge(&p, &mut st, &errors(&mut rng, 0.002, 0.002), false, i * 10_000).verdict;
    }
    assert_eq!(last, Verdict::Pass);
}

/// E's log e-value since the revision started.
fn e_log(st: &JudgeState) -> Option<f64> {
    st.revision().and_then(|s| s.tests.get(&Test::E)).map(TestRun::log_value)
}

#[test]
fn while_stable_breaks_an_slo_the_tests_take_no_evidence_and_nothing_rolls_back() {
    let mut rng = StdRng::seed_from_u64(11);
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let tests = tests_in_use(&p, false);
    let mut st = JudgeState::default();
    // A shared outage in which the canary fares worse (10 % against 3 %),
    // enough for E to fire within a few intervals were it counting.
    let mut first_out = None;
    for i in 0..30 {
        let (before, was_out) = (e_log(&st), outage::stable_out(&st, &tests));
        let j = judge(&p, &mut st, &errors(&mut rng, 0.03, 0.10), false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "interval {i}: {}", j.reason);
        // Decided on what was known as the interval began: the interval in
        // which stable turns out is still taken, every later one is not.
        assert_eq!(j.sat_out, was_out, "interval {i}");
        if was_out {
            assert_eq!(before, e_log(&st), "interval {i}: E took evidence while stable was out");
            assert!(j.reason.contains("the tests take no evidence"), "{}", j.reason);
        } else {
            assert_ne!(before, e_log(&st), "interval {i}: E sat out before stable was seen out");
        }
        if outage::stable_out(&st, &tests) {
            first_out.get_or_insert(i * 10_000);
        }
    }
    let out = first_out.unwrap_or(u64::MAX);
    assert!(out <= 20_000, "stable out from {out} ms");
    // Stable recovers; the same canary, 10 % against 0.2 %, is judged again
    // from the first interval that began with stable back, well inside the
    // sit-out's limit.
    let mut fired = None;
    for i in 30..60 {
        let (before, was_out) = (e_log(&st), outage::stable_out(&st, &tests));
        let j = judge(&p, &mut st, &errors(&mut rng, 0.002, 0.10), false, i * 10_000);
        if was_out {
            assert!(j.sat_out && before == e_log(&st), "interval {i}: the interval stable cools in is still sat out");
            assert_ne!(j.verdict, Verdict::Pass, "a step never passes on an interval the tests sat out");
        }
        if j.verdict == Verdict::Fail {
            fired = Some(i * 10_000);
            break;
        }
    }
    assert!(fired.is_some_and(|t| t < out + SIT_OUT_MAX_MS), "fired at {fired:?}: not from stable's recovery");
}

#[test]
fn a_stable_out_of_its_slo_for_longer_than_an_outage_no_longer_shields_the_canary() {
    let mut rng = StdRng::seed_from_u64(13);
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let mut st = JudgeState::default();
    // Stable never meets the 1 % SLO (3 %); the canary is far worse (10 %).
    let mut first_out = None;
    let mut failed_at = None;
    for i in 0..150u64 {
        let now = i * 10_000;
        let j = judge(&p, &mut st, &errors(&mut rng, 0.03, 0.10), false, now);
        if st.outage.is_some() {
            first_out.get_or_insert(now);
        }
        if j.verdict == Verdict::Fail {
            failed_at = Some(now);
            break;
        }
        if first_out.is_some_and(|t| now >= t + SIT_OUT_MAX_MS) {
            assert!(j.reason.contains("take evidence again"), "{}", j.reason);
        }
    }
    let (out, failed) = (first_out.unwrap_or(u64::MAX), failed_at.unwrap_or(u64::MAX));
    assert!(out <= 20_000, "stable out from {out} ms");
    assert!(failed >= out + SIT_OUT_MAX_MS, "rolled back at {failed} ms, inside the sit-out");
    assert!(failed <= out + SIT_OUT_MAX_MS + 300_000, "not rolled back {failed} ms after the sit-out ended");
}

/// Stable's error detector hot or not.
fn stable_hot(st: &mut JudgeState, hot: bool) {
    st.detectors.entry(Test::GErr).or_default()[STABLE].hot = hot;
}

#[test]
fn a_stable_that_flaps_in_and_out_gets_one_sit_out_per_episode() {
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let tests = tests_in_use(&p, false);
    let mut st = JudgeState::default();
    // Out at 0, back at 5 minutes, out again at 6: one episode.
    for (t, hot) in [(0, true), (300_000, false), (360_000, true)] {
        stable_hot(&mut st, hot);
        outage::note(&mut st, &tests, t);
    }
    assert!(outage::sitting_out(&st, &tests, 500_000));
    assert!(!outage::sitting_out(&st, &tests, SIT_OUT_MAX_MS), "10 minutes from the first time out, not the latest");
    // A restart in the middle of it keeps the episode.
    let saved = serde_json::to_string(&st).ok();
    let back: Option<JudgeState> = saved.and_then(|j| serde_json::from_str(&j).ok());
    assert_eq!(back.and_then(|b| b.outage), Some(Outage { since_ms: 0, last_out_ms: 360_000 }));
    // Back for 10 minutes after the last time out: the episode is over.
    stable_hot(&mut st, false);
    outage::note(&mut st, &tests, 400_000);
    assert!(st.outage.is_some(), "back for less than 10 minutes: the same episode");
    outage::note(&mut st, &tests, 360_000 + SIT_OUT_MAX_MS);
    assert_eq!(st.outage, None);
    // The next time out starts a new episode with its own sit-out.
    stable_hot(&mut st, true);
    outage::note(&mut st, &tests, 1_100_000);
    assert!(outage::sitting_out(&st, &tests, 1_160_000));
}

#[test]
fn a_canary_alone_out_of_its_error_slo_is_still_rolled_back_by_e() {
    let mut rng = StdRng::seed_from_u64(12);
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let mut st = JudgeState::default();
    let fired = (0..60).find_map(|i| {
        let j = judge(&p, &mut st, &errors(&mut rng, 0.002, 0.05), false, i * 10_000);
        (j.verdict == Verdict::Fail).then_some(j)
    });
    assert_eq!(fired.and_then(|j| j.fired.map(|f| f.test)), Some(Test::E), "canary-only trouble pauses nothing");
}

#[test]
fn a_canary_alone_over_its_slo_is_held_by_the_guard_never_rolled_back() {
    let p = Analysis { max_p95: Some(std::time::Duration::from_millis(300)), latency_tolerance: 10.0, ..policy() };
    let mut st = JudgeState::default();
    let mut held = 0;
    for i in 0..60 {
        // Canary: 15 % of requests over 300 ms; stable 2 %.
        let iv = interval(&[(Event::Error, [450, 50], [0, 0]), (Event::Slo95, [450, 50], [9, 8])]);
        let j = judge(&p, &mut st, &iv, false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "a guard never rolls back: {}", j.reason);
        if j.verdict == Verdict::Hold {
            held += 1;
            assert_eq!(j.held_by, vec![Test::G95]);
            assert!(j.reason.starts_with("hold: the canary breaks the SLO while stable keeps it"), "{}", j.reason);
        }
    }
    assert!(held >= 50, "held {held} of 60");
}

#[test]
fn the_error_delta_gate_keeps_tiny_differences_alive() {
    // 0.02 % vs 0.01 %: double the odds but a difference nobody would roll back for.
    let p = Analysis { min_error_delta: 0.1, error_tolerance: 1.0, ..policy() };
    let mut st = JudgeState::default();
    for i in 0..200 {
        let iv = interval(&[(Event::Error, [90_000, 10_000], [9, if i % 5 == 0 { 10 } else { 2 }])]);
        let j = judge(&p, &mut st, &iv, false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail, "{}", j.reason);
    }
    assert!(st.revision().unwrap().tests[&Test::E].two.value() > 1e6, "the evidence is there, the gate holds it back");
}

#[test]
fn one_bad_user_counts_once_on_a_sticky_route() {
    let p = policy();
    let mut st = JudgeState::default();
    let user = Stratum { segment: None, per_user: true };
    for i in 0..100 {
        // The recorder already deduped: the failing player is one bad
        // canary unit in the first interval and none after.
        let mut c = Cell::default();
        c.n[Event::Error.idx()] = [90, 10];
        c.x[Event::Error.idx()] = [0, u64::from(i == 0)];
        let mut r = Cell::default();
        r.n[Event::Error.idx()] = [900, 100];
        r.x[Event::Error.idx()] = [0, 20];
        let iv = Interval {
            strata: vec![StratumCounts {
                stratum: Some(user),
                weight_bp: 1000,
                weight_min_bp: 0,
                revision: c,
                epoch: c,
            }],
            requests: r,
            frozen: Frozen::default(),
            user_multiplicity: 0,
        };
        let j = judge(&p, &mut st, &iv, false, i * 10_000);
        assert_ne!(j.verdict, Verdict::Fail);
    }
}

#[test]
fn pass_needs_canary_traffic_in_the_step() {
    let p = policy();
    let mut st = JudgeState::default();
    let j = judge(&p, &mut st, &interval(&[(Event::Error, [400, 40], [0, 0])]), false, 0);
    assert_eq!(j.verdict, Verdict::Insufficient);
    assert!(j.reason.contains("a pass needs 50"), "{}", j.reason);
    let j = judge(&p, &mut st, &interval(&[(Event::Error, [400, 40], [0, 0])]), false, 10_000);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    st.new_step(20_000);
    let j = judge(&p, &mut st, &interval(&[(Event::Error, [400, 40], [0, 0])]), false, 30_000);
    assert_eq!(j.verdict, Verdict::Insufficient, "a new step starts counting again");
}

#[test]
fn a_late_regression_is_caught_by_the_fresh_epoch_process() {
    let mut rng = StdRng::seed_from_u64(3);
    let p = policy();
    let mut st = JudgeState::default();
    let mut now = 0;
    for _ in 0..300 {
        judge(&p, &mut st, &errors(&mut rng, 0.002, 0.002), false, now);
        now += 10_000;
        if st.epoch_due(&p, now) {
            st.new_epoch(now);
        }
    }
    assert!(st.epoch >= 10);
    let mut n = 0;
    loop {
        n += 1;
        let j = judge(&p, &mut st, &errors(&mut rng, 0.002, 0.05), false, now);
        now += 10_000;
        if j.verdict == Verdict::Fail {
            assert!(matches!(j.fired.map(|f| f.scope), Some(Scope::Epoch(s)) if s >= 10), "{}", j.reason);
            break;
        }
        assert!(n < 60, "not caught within 60 intervals");
    }
}

#[test]
fn the_state_round_trips_through_json() {
    let mut rng = StdRng::seed_from_u64(5);
    let p = Analysis { max_error_rate: Some(1.0), ..policy() };
    let mut st = JudgeState::default();
    for i in 0..5 {
        judge(&p, &mut st, &errors(&mut rng, 0.01, 0.02), false, i);
    }
    let text = serde_json::to_string(&st).unwrap();
    let back: JudgeState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, st);
}

#[test]
fn test_names_are_the_same_in_json_and_in_words() {
    for t in Test::ALL {
        assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
    }
}

/// A segment with its own weight and its own baseline (a market where both
/// versions see 5 % errors, at 50 % canary, next to 0.2 % elsewhere at 10 %):
/// compared within each segment, nothing is wrong; pooled, the canary would
/// seem to carry more than its share of errors.
#[test]
fn segments_are_compared_with_stable_of_the_same_segment() {
    let p = policy();
    let run = |pooled: bool| {
        let mut rng = StdRng::seed_from_u64(11);
        let mut st = JudgeState::default();
        for i in 0..200 {
            let mut strata = Vec::new();
            let mut all = Cell::default();
            for (segment, n, rate) in [(None, [450u64, 50u64], 0.002), (Some(0u16), [50, 50], 0.05)] {
                let mut c = Cell::default();
                c.n[Event::Error.idx()] = n;
                c.x[Event::Error.idx()] = [binomial(&mut rng, n[0], rate), binomial(&mut rng, n[1], rate)];
                all.add(&c);
                let stratum = Stratum { segment: if pooled { None } else { segment }, per_user: false };
                strata.push(StratumCounts {
                    stratum: Some(stratum),
                    weight_bp: 1000,
                    weight_min_bp: 0,
                    revision: c,
                    epoch: c,
                });
            }
            if pooled {
                strata = vec![StratumCounts {
                    stratum: Some(WEB),
                    weight_bp: 1000,
                    weight_min_bp: 0,
                    revision: all,
                    epoch: all,
                }];
            }
            let iv = Interval { strata, requests: all, frozen: Frozen::default(), user_multiplicity: 0 };
            if judge(&p, &mut st, &iv, false, i * 10_000).verdict == Verdict::Fail {
                return true;
            }
        }
        false
    };
    assert!(!run(false), "within segments the canary is as good as stable");
    assert!(run(true), "pooled, the segment's higher share and higher baseline look like a bad canary");
}

#[test]
fn a_user_counted_by_every_replica_weighs_one_unit() {
    // One bad player whose requests reach three replicas is counted once by
    // each: with multiplicity 3 the evidence equals one unit's.
    let p = Analysis::default();
    let user = Stratum { segment: None, per_user: true };
    let mut c = Cell::default();
    c.n[Event::Error.idx()] = [90, 10];
    c.x[Event::Error.idx()] = [0, 1];
    let iv = |x_c: u64, m: u32| {
        let mut c = c;
        c.x[Event::Error.idx()] = [0, x_c];
        Interval {
            strata: vec![StratumCounts {
                stratum: Some(user),
                weight_bp: 1000,
                weight_min_bp: 0,
                revision: c,
                epoch: c,
            }],
            requests: c,
            frozen: Frozen::default(),
            user_multiplicity: m,
        }
    };
    let e = |x_c: u64, m: u32| {
        let mut st = JudgeState::default();
        judge(&p, &mut st, &iv(x_c, m), false, 0);
        st.scopes[0].tests[&Test::E].two.log_value()
    };
    assert!((e(3, 3) - e(1, 1)).abs() < 1e-9);
    assert!(e(3, 1) > e(1, 1) + 1.0, "unweighted, the same player would count three times");
}

#[test]
fn a_state_saved_with_the_retired_latency_tests_still_loads() {
    // Saved by a version with L50–L999: those tests are left out, the rest
    // (and with it the route's latch, beside it in state.json) loads.
    let saved = r#"{"epoch": 2, "scopes": [{"epoch": 0, "since_ms": 5, "tests": {
        "E": {"two": {"log": [0.5, 0, 0, 0, 0, 0, 0, 0]}},
        "L95": {"two": {"log": [3, 0, 0, 0, 0, 0, 0, 0]}}}}],
        "budgeted": ["E", "L50", "L95", "L99", "L999"], "alpha_floor": 0.01, "k_ceiling": 5,
        "frozen": {"latency_us": [1, 2, 3, 4], "tolerance": 0.05}}"#;
    let st: JudgeState = serde_json::from_str(saved).unwrap();
    assert_eq!(st.scopes[0].tests.keys().copied().collect::<Vec<_>>(), vec![Test::E]);
    assert_eq!(st.scopes[0].tests[&Test::E].two.log[0], 0.5);
    assert_eq!(st.budgeted, vec![Test::E]);
    assert_eq!((st.k_ceiling, st.frozen.rank_us), (5, None), "the α memory stays; old lines are not ranks");
}
