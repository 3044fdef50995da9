//! (A `#[cfg(test)]` module.) Rollouts with injected time: verdicts are due every `interval`, a fail
//! rolls back at once and publishes weight 0 in the overlay, the latch and
//! the judge's state survive a config change and a reopen of the state
//! directory, and a new revision clears them.

use super::*;
use crate::config;
use crate::routing::Phase;
use std::time::Duration;

fn snapshot(dir: &Path, revision: &str, weight: u32) -> Snapshot {
    let text = format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nupstreams:\n  a: {{endpoints: [\"127.0.0.1:1\"]}}\n  b: {{endpoints: [\"127.0.0.1:2\"]}}\n\
         routes:\n  - name: app\n    stable: {{upstream: a}}\n    canary: {{upstream: b, revision: \"{revision}\"}}\n    weight: {weight}\n\
         \x20   analysis: {{interval: 10s, window: 60s}}\n"
    );
    match config::parse(text.as_bytes(), &dir.join("weir.yaml")) {
        Ok(s) => s,
        Err(e) => panic!("{:?}", e.problems()),
    }
}

fn app(s: &Snapshot) -> &Route {
    &s.table.routes[0]
}

fn unit() -> crate::evidence::Unit {
    crate::evidence::Unit {
        stratum: crate::analysis::Stratum { segment: None, per_user: false },
        weight_bp: 2000,
        user: 0,
    }
}

#[test]
fn verdicts_are_taken_every_interval_and_a_fail_rolls_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = snapshot(dir.path(), "2", 20);
    let reg = Registry::default();
    let mut book = Rollouts::open(&cfg.state_dir, &cfg, &reg, 0).unwrap();
    let t0 = Instant::now();
    let m = reg.route(&app(&cfg).name);
    let record = |n: usize, v: Version, every: usize| {
        for i in 0..n {
            m.evidence.record(&unit(), v, i % every == 0, Some(Duration::from_millis(5)));
        }
    };
    record(200, Version::Stable, 1000);
    record(50, Version::Canary, 1000);
    // Not due before the first interval.
    let (changed, next) = book.tick(&cfg, &reg, t0 + Duration::from_secs(1), 1000);
    assert!(!changed);
    assert_eq!(next, Some(t0 + Duration::from_secs(1) + Duration::from_secs(10)));
    let (changed, _) = book.tick(&cfg, &reg, t0 + Duration::from_secs(11), 11_000);
    assert!(!changed, "a healthy interval");
    assert_eq!(m.recent_verdicts().last().unwrap()["verdict"], "pass");
    record(400, Version::Stable, 1000);
    record(100, Version::Canary, 2);
    let (changed, _) = book.tick(&cfg, &reg, t0 + Duration::from_secs(12), 12_000);
    assert!(!changed, "not due again yet");
    let (changed, _) = book.tick(&cfg, &reg, t0 + Duration::from_secs(21), 21_000);
    assert!(changed, "one fail rolls back");
    let last = m.recent_verdicts().last().cloned().unwrap();
    assert_eq!((last["verdict"].as_str(), last["test"].as_str()), (Some("fail"), Some("E")), "{last}");
    assert!(book.state("app").unwrap().judge.revision().unwrap().tests[&crate::analysis::Test::E].two.value() > 100.0);
    let eff = book.overlay(&cfg);
    assert!(app(&eff).overlay.rolled_back);
    assert_eq!(app(&eff).overlay.phase, Phase::RolledBack);

    // A weight edit keeps the latch; reopening the directory too.
    let edited = snapshot(dir.path(), "2", 40);
    book.reconcile(Some(&cfg), &edited, 30_000);
    assert!(app(&book.overlay(&edited)).overlay.rolled_back);
    drop(book);
    let mut book = Rollouts::open(&edited.state_dir, &edited, &reg, 40_000).unwrap();
    assert!(app(&book.overlay(&edited)).overlay.rolled_back, "latched across a restart");
    let new_rev = snapshot(dir.path(), "3", 40);
    book.reconcile(Some(&edited), &new_rev, 50_000);
    let eff = book.overlay(&new_rev);
    assert!(!app(&eff).overlay.rolled_back);
    assert_eq!(app(&eff).overlay.weight_bp, 4000);
}

#[test]
fn admin_steering_refuses_what_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = snapshot(dir.path(), "2", 20);
    let reg = Registry::default();
    let mut book = Rollouts::open(&cfg.state_dir, &cfg, &reg, 0).unwrap();
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert_eq!(book.steer(&cfg, &reg, "nope", Steer::Kill, peer, 1), Err(SteerError::NoSuchRoute));
    assert!(matches!(book.steer(&cfg, &reg, "app", Steer::Promote, peer, 1), Err(SteerError::Refused(_))));
    assert_eq!(book.steer(&cfg, &reg, "app", Steer::Kill, peer, 1), Ok(true));
    assert_eq!(book.steer(&cfg, &reg, "app", Steer::Kill, peer, 2), Ok(false), "idempotent");
    assert_eq!(app(&book.overlay(&cfg)).overlay.phase, Phase::Killed);
    assert_eq!(book.steer(&cfg, &reg, "app", Steer::Unkill, peer, 3), Ok(true));
    assert_eq!(app(&book.overlay(&cfg)).overlay.phase, Phase::Steady);
}
