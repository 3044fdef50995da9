//! Question: what does one reload cost with a large table? Measures the
//! parts of `Reloader::reload` after the file is read: sha256 + YAML parse +
//! full validation + compile of 1,000 routes, and the swap itself
//! (`Live::install`, which carries over unchanged upstream pools).
//! Run: `cargo bench --bench reload`.
#![allow(clippy::panic)]

use divan::{Bencher, black_box};
use std::path::Path;
use weir::config;
use weir::live::Live;

fn main() {
    divan::main();
}

fn yaml(routes: usize) -> String {
    let mut y = String::from("listen: [{address: \"127.0.0.1:0\"}]\nupstreams:\n");
    for i in 0..routes / 10 {
        y.push_str(&format!("  s{i}: {{endpoints: [\"10.0.{}.{}:8080\"]}}\n", i / 250, i % 250));
        y.push_str(&format!("  c{i}: {{endpoints: [\"10.1.{}.{}:8080\"]}}\n", i / 250, i % 250));
    }
    y.push_str("routes:\n");
    for i in 0..routes {
        let u = i / 10;
        y.push_str(&format!(
            "  - name: r{i}\n    match: {{hosts: [h{i}.example.com], path_prefix: /p{i}}}\n    stable: {{upstream: s{u}, revision: \"1\"}}\n    canary: {{upstream: c{u}, revision: \"2\"}}\n    weight: 5\n    sticky: {{keys: [\"header:x-player-id\"]}}\n    segments:\n      - {{name: staff, match: {{header: {{x-employee: \"true\"}}}}, weight: 100}}\n"
        ));
    }
    y
}

#[divan::bench(args = [10, 100, 1000])]
fn parse_and_validate(b: Bencher, routes: usize) {
    let text = yaml(routes);
    b.bench(|| config::parse(black_box(text.as_bytes()), Path::new("weir.yaml")).map(|s| s.table.routes.len()));
}

#[divan::bench(args = [1000])]
fn install(b: Bencher, routes: usize) {
    let text = yaml(routes);
    // A private state_dir (relative paths resolve against the config's directory).
    let Ok(dir) = tempfile::tempdir() else { panic!("no temp dir") };
    let Ok(first) = config::parse(text.as_bytes(), &dir.path().join("weir.yaml")) else {
        panic!("invalid bench config")
    };
    let Ok(live) = Live::new(first.clone()) else { panic!("cannot open state_dir") };
    b.with_inputs(|| first.clone()).bench_local_values(|s| live.install(s));
}
