//! The module ladder, checked: every module of `src/` sits on a layer, and
//! may use only modules on its own layer or below. Cycles between modules
//! are allowed only where listed below, each with the reason it remains.
//! A new module must be given a layer here; that is the point.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom-up. A module may use modules of its own layer and of layers below.
const LADDER: &[(&str, &[&str])] = &[
    (
        "leaves",
        &["access_log", "files", "grpc", "headers", "journal", "labels", "limits", "shards", "stats", "tls", "units"],
    ),
    ("domain", &["routing", "config", "analysis"]),
    ("parts", &["evidence", "upstream", "explain"]),
    ("metrics", &["metrics"]),
    ("runtime", &["websocket", "shadow", "rollout", "fleet", "notify"]),
    ("live", &["live"]),
    ("edges", &["proxy", "reload", "admin", "tasks"]),
    ("app", &["app", "demo", "fuzzing", "import", "lib", "status"]),
];

/// Cycles between two modules of one layer that remain, and why. None
/// today: the last one (config ↔ routing) went when the route policies
/// moved to `routing::policy` and the units to a leaf.
const KNOWN_CYCLES: &[(&str, &str, &str)] = &[];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
            // `tests.rs` files are test modules (`#[cfg(test)] mod tests;`):
            // a test may build its fixtures with a module above (a routing
            // table from YAML through `config`).
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without comments and without its test module(s).
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break; // test modules sit at the end of a file
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Top-level modules a piece of code names through `crate::`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(at) = code[i..].find("crate::") {
        let start = i + at + "crate::".len();
        if bytes.get(start) == Some(&b'{') {
            // `use crate::{a, b::c, d::{e, f}}`: the first name of each item.
            let mut depth = 0;
            let mut item_start = true;
            let mut name = String::new();
            for &b in &bytes[start..] {
                match b {
                    b'{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_ascii_alphanumeric() || c == b'_') => name.push(c as char),
                    _ if item_start && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = code[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // Items of the crate root itself (`crate::VERSION`) are not modules.
            if name.starts_with(|c: char| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
        i = start;
    }
    found
}

#[test]
fn every_module_uses_only_its_layer_and_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let layer: BTreeMap<&str, usize> =
        LADDER.iter().enumerate().flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i))).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for f in &all {
        let m = module_of(&src, f);
        if m == "main" {
            continue; // the binary: above everything
        }
        let Some(&own) = layer.get(m.as_str()) else {
            problems.push(format!("{}: module `{m}` has no layer in tests/architecture.rs", f.display()));
            continue;
        };
        for used in uses(&code(&std::fs::read_to_string(f).unwrap())) {
            if used == m {
                continue;
            }
            let Some(&theirs) = layer.get(used.as_str()) else {
                problems.push(format!("{}: uses `crate::{used}`, which has no layer", f.display()));
                continue;
            };
            if theirs > own {
                problems.push(format!(
                    "{}: `{m}` ({}) uses `{used}` ({}), a layer above it",
                    f.display(),
                    LADDER[own].0,
                    LADDER[theirs].0
                ));
            }
            graph.entry(m.clone()).or_default().insert(used);
        }
    }
    // Cycles: a pair that uses each other, beyond the known ones.
    for (a, outs) in &graph {
        for b in outs {
            let back = graph.get(b).is_some_and(|o| o.contains(a));
            let known = KNOWN_CYCLES.iter().any(|(x, y, _)| (x == a && y == b) || (x == b && y == a));
            if back && a < b && !known {
                problems.push(format!("`{a}` and `{b}` use each other"));
            }
        }
    }
    // A known cycle that is gone should leave the list.
    for (a, b, _) in KNOWN_CYCLES {
        let still = graph.get(*a).is_some_and(|o| o.contains(*b)) && graph.get(*b).is_some_and(|o| o.contains(*a));
        if !still {
            problems.push(format!("the cycle `{a}` ↔ `{b}` is gone: remove it from KNOWN_CYCLES"));
        }
    }
    assert!(problems.is_empty(), "the module ladder is broken:\n  {}", problems.join("\n  "));
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let found = uses("use crate::{config::{self, Snapshot}, routing};\nlet x = crate::metrics::LATENCY_BOUNDS;\n");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["config", "metrics", "routing"]);
    assert!(code("// crate::app\nlet a = 1;\n#[cfg(test)]\nmod tests { use crate::app; }").find("app").is_none());
}

/// The upstream room's own ladder (issue 33, "Where it lives"): its inner
/// rooms, bottom up. A file may name (through `super::` up to the room, or
/// `crate::upstream::`) only rooms of its own layer or below; naming the
/// room's own file (`upstream.rs`, the top that ties them together) from
/// inside is an upward import too.
const UPSTREAM_LADDER: &[&[&str]] =
    &[&["error"], &["wire", "h2"], &["pool"], &["body"], &["endpoints", "balance", "health", "retry"]];

/// Inner rooms a piece of code in `src/upstream/<room>/…` (at `depth` below
/// `src/upstream/`) names through the room: `super::…` climbing to the
/// room's top, or `crate::upstream::…`. A name that is no inner room is an
/// item of the top file.
fn room_uses(code: &str, depth: usize) -> BTreeSet<String> {
    let to_top = "super::".repeat(depth);
    let mut found = BTreeSet::new();
    for prefix in [to_top.as_str(), "crate::upstream::"] {
        let mut i = 0;
        while let Some(at) = code[i..].find(prefix) {
            let start = i + at + prefix.len();
            // `super::super::x` seen from one level down is not `super::x`.
            let before = code[..i + at].ends_with("super::");
            if !before {
                let rest = &code[start..];
                let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    group[..end]
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or("").to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                } else {
                    vec![rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()]
                };
                found.extend(names.into_iter().filter(|n| !n.is_empty() && n != "super"));
            }
            i = start;
        }
    }
    found
}

#[test]
fn the_upstream_rooms_use_only_their_layer_and_below() {
    let room = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/upstream");
    let mut all = Vec::new();
    files(&room, &mut all);
    let layer: BTreeMap<&str, usize> =
        UPSTREAM_LADDER.iter().enumerate().flat_map(|(i, mods)| mods.iter().map(move |m| (*m, i))).collect();
    let mut problems = Vec::new();
    for f in &all {
        let rel = f.strip_prefix(&room).unwrap();
        let depth = rel.components().count();
        let own = module_of(&room, f);
        let Some(&mine) = layer.get(own.as_str()) else {
            problems.push(format!("{}: room `{own}` has no layer in UPSTREAM_LADDER", f.display()));
            continue;
        };
        for used in room_uses(&code(&std::fs::read_to_string(f).unwrap()), depth) {
            if used == own {
                continue;
            }
            match layer.get(used.as_str()) {
                None => problems.push(format!("{}: `{own}` uses `{used}` of the top file (upstream.rs)", f.display())),
                Some(&theirs) if theirs > mine => {
                    problems.push(format!("{}: `{own}` uses `{used}`, a room above it", f.display()))
                }
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "the upstream ladder is broken:\n  {}", problems.join("\n  "));
    // The scanner itself.
    let seen = room_uses("use super::pool::{Busy};\nuse super::{error::X, wire};\nlet a = super::super::Upstream;", 1);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["error", "pool", "wire"]);
    let seen = room_uses("use super::super::error::X;\nuse super::Endpoints;", 2);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["error"]);
}
