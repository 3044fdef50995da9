//! `weir demo` end to end: the canary climbs, breaks, is rolled back by
//! weir's own analysis, the journal line is shown, and the demo exits
//! cleanly, leaving no port open and no temporary files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_demo_shows_a_climb_and_an_automatic_rollback_then_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Bounded: the demo ends by itself in well under its own 120 s limit.
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("weir demo did not end");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(status.success(), "exit {status:?}\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // Not a terminal here: one plain progress line every 2 s.
    assert!(text.contains("state=progressing step=2/5 weight=10%"), "{text}");
    assert!(text.contains("state=rolled_back") && text.contains("weight=0%"), "{text}");
    // The journal line that explains the rollback.
    let journal = text.lines().find(|l| l.starts_with('{') && l.contains("\"event\":\"rollback\"")).expect(&text);
    let j: serde_json::Value = serde_json::from_str(journal).unwrap();
    assert_eq!(j["actor"], "auto");
    assert_eq!(j["weight"]["to"], 0.0);
    assert!(j["inputs"]["since_revision"]["canary"]["requests"].as_u64().unwrap() > 0, "{j}");
    let fired = &j["inputs"]["fired"];
    assert!(["E", "R"].contains(&fired["test"].as_str().unwrap()), "{j}");
    assert!(fired["e_value"].as_f64().unwrap() >= fired["threshold"].as_f64().unwrap(), "{j}");
    assert!(j["why"].as_str().unwrap().contains("fired"), "{j}");
    // The plain view names the evidence as it climbs.
    assert!(text.contains("| evidence "), "{text}");
    assert!(text.contains("Summary:"), "{text}");

    // Nothing left behind: every address it printed is closed, its
    // temporary directory is gone.
    let addrs: Vec<SocketAddr> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter_map(|w| w.trim_start_matches("http://").parse().ok())
        .collect();
    assert!(addrs.len() >= 4, "{addrs:?}");
    for a in addrs {
        assert!(TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_err(), "{a} still open");
    }
    assert!(!std::env::temp_dir().join(format!("weir-demo-{pid}")).exists());
}
