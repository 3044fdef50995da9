//! Replays the committed fuzz seed corpus (fuzz/corpus/<target>/) through
//! the same entry points the cargo-fuzz targets call, so every `cargo test`
//! re-checks the inputs that once mattered.

#![allow(clippy::panic)]

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.map(|e| e.path()).unwrap_or_default();
        if let Ok(bytes) = std::fs::read(&path) {
            f(&bytes);
            n += 1;
        }
    }
    n
}

#[test]

fn seed_corpus_replays_without_panics() {
    assert!(replay("config", weir::fuzzing::config) >= 5);
    assert!(replay("routing", weir::fuzzing::routing) >= 4);
    assert!(replay("bucket_cookie", weir::fuzzing::bucket_cookie) >= 4);
    assert!(replay("request", weir::fuzzing::request) >= 5);
    assert!(replay("ws_frames", weir::fuzzing::ws_frames) >= 4);
}
