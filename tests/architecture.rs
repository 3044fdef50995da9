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
        &[
            "access_log",
            "client_ip",
            "clock",
            "files",
            "grpc",
            "headers",
            "journal",
            "labels",
            "limits",
            "ratelimit",
            "shards",
            "stats",
            "tls",
            "units",
            "version",
        ],
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

/// The code of a file without comments and without its test items: each
/// `#[cfg(test)]` item (a `mod tests;` line, or an item and its braces) is
/// left out, and the code after it is kept.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if !t.starts_with("#[cfg(test)]") {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip the item the attribute is on (past further attributes).
        let mut depth = 0i32;
        let mut opened = false;
        for next in lines.by_ref() {
            let n = next.trim_start();
            if !opened && (n.starts_with("#[") || n.is_empty()) {
                continue;
            }
            depth += next.matches('{').count() as i32 - next.matches('}').count() as i32;
            opened |= next.contains('{');
            if (opened && depth <= 0) || (!opened && n.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// The first path segment of each item of a `{…}` group (nested groups
/// count as their first segment): `{a, b::c, d::{e, f}}` → a, b, d.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let (mut depth, mut item) = (0, String::new());
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    item.push(c);
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
                item.push(c);
            }
            ',' if depth == 1 => heads.push(std::mem::take(&mut item)),
            _ if depth >= 1 => item.push(c),
            _ => {}
        }
    }
    heads.push(item);
    heads
        .iter()
        .map(|i| i.trim().split("::").next().unwrap_or("").trim().to_owned())
        .filter(|h| !h.is_empty() && h != "self")
        .collect()
}

/// The names a path at `rest` (just after `crate::` or a climb to the crate
/// root) starts with: one, or each head of a group.
fn heads_at(rest: &str) -> Vec<String> {
    if rest.starts_with('{') {
        group_heads(rest)
    } else {
        vec![rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()]
    }
}

/// Top-level modules a piece of code names, through `crate::` or through
/// `super::` chains that climb to the crate root from a file `depth` levels
/// down (`src/a.rs`: 1, `src/a/b.rs`: 2). A name that starts upper-case is
/// an item of the crate root itself (lib.rs), returned as `crate::Name`.
fn uses_at(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut add = |name: String| {
        if name.starts_with(|c: char| c.is_ascii_uppercase()) {
            found.insert(format!("crate::{name}"));
        } else if !name.is_empty() {
            found.insert(name);
        }
    };
    let mut i = 0;
    while let Some(at) = code[i..].find("crate::") {
        let start = i + at + "crate::".len();
        let before = code[..i + at].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            heads_at(&code[start..]).into_iter().for_each(&mut add);
        }
        i = start;
    }
    let mut i = 0;
    while let Some(at) = code[i..].find("super::") {
        let begin = i + at;
        let before = code[..begin].chars().next_back();
        let mut end = begin;
        let mut climbs = 0;
        while code[end..].starts_with("super::") {
            climbs += 1;
            end += "super::".len();
        }
        let chained = code[..begin].ends_with("super::");
        if !chained && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && climbs == depth {
            heads_at(&code[end..]).into_iter().for_each(&mut add);
        }
        i = end;
    }
    found
}

/// `uses_at` for a top-level file (`src/a.rs`).
fn uses(code: &str) -> BTreeSet<String> {
    uses_at(code, 1)
}

/// How deep a file's module sits: `src/a.rs` 1, `src/a/b.rs` 2.
fn depth_of(src: &Path, file: &Path) -> usize {
    file.strip_prefix(src).unwrap().components().count()
}

/// Cycles in a module graph: every group of two or more modules that can
/// each reach the others, sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from.clone()]);
        while let Some(m) = todo.pop() {
            for n in graph.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (m, r) in &reaches {
        if !r.contains(*m) || out.iter().any(|c| c.contains(m)) {
            continue;
        }
        let group: Vec<String> = r.iter().filter(|n| reaches.get(n).is_some_and(|b| b.contains(*m))).cloned().collect();
        out.push(group);
    }
    out
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
        for used in uses_at(&code(&std::fs::read_to_string(f).unwrap()), depth_of(&src, f)) {
            if used == m {
                continue;
            }
            if used.starts_with("crate::") && m != "lib" {
                problems.push(format!("{}: uses `{used}`, an item of lib.rs (the top): give it a module", f.display()));
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
    // Cycles of any length (within a layer: edges across layers only go
    // down), beyond the known pairs.
    for group in cycles(&graph) {
        let known = group.len() == 2
            && KNOWN_CYCLES.iter().any(|(x, y, _)| group.contains(&x.to_string()) && group.contains(&y.to_string()));
        if !known {
            problems.push(format!("a cycle: {} use each other", group.join(", ")));
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

/// Each way around the ladder the first scanner missed, fed to it.
#[test]
fn the_scanner_catches_every_known_escape() {
    // A bare name before another item in a group (`live` was dropped).
    let found = uses("use crate::{labels, live::Live};");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["labels", "live"]);
    // `super::` climbing to the crate root, from one and two levels down.
    assert!(uses_at("use super::proxy::Proxy;", 1).contains("proxy"));
    assert!(uses_at("let a = super::super::app::start();", 2).contains("app"));
    assert!(uses_at("use super::super::{status, live::Live};", 2).contains("live"));
    assert!(uses_at("use super::sibling;", 2).is_empty(), "inside its own module: not a use");
    // Code after an early `#[cfg(test)]` item is still read.
    let c = code(
        "#[cfg(test)]\nfn helper() {\n    let x = 1;\n}\nuse crate::app;\n#[cfg(test)]\nmod tests;\nuse crate::demo;\n",
    );
    assert_eq!(uses(&c).into_iter().collect::<Vec<_>>(), vec!["app", "demo"], "{c}");
    assert!(!c.contains("helper"));
    // A cycle of three within one layer.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    // An item of lib.rs named from a module.
    assert!(uses("println!(\"{}\", crate::VERSION);").contains("crate::VERSION"));
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

/// Every `fn` of a file outside its tests, with its length in lines (from
/// the `fn` line to its closing brace at the same indent).
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().take_while(|l| l.trim() != "#[cfg(test)]").collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let trimmed = l.trim_start();
        let indent = l.len() - trimmed.len();
        let rest = trimmed
            .strip_prefix("pub(crate) ")
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .or_else(|| trimmed.strip_prefix("pub "))
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(sig) = rest.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = sig.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // The signature ends with `{` (a body) or `;` (a declaration).
        let mut j = i;
        while j < lines.len() && !lines[j].trim_end().ends_with('{') && !lines[j].trim_end().ends_with(';') {
            j += 1;
        }
        if j >= lines.len() || lines[j].trim_end().ends_with(';') {
            i += 1;
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let mut k = j + 1;
        while k < lines.len() && lines[k].trim_end() != close {
            k += 1;
        }
        out.push((name, k - i + 1));
        i = k + 1;
    }
    out
}

/// Longest a function of src/ may be, in lines (outside tests): longer
/// ones read as one block instead of named steps.
const MAX_FUNCTION_LINES: usize = 80;
/// Longest a file of src/ may be, in lines (tests included).
const MAX_FILE_LINES: usize = 600;

#[test]
fn no_function_past_80_lines_and_no_file_past_600() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    let mut problems = Vec::new();
    for f in &all {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!("{rel}: {lines} lines (at most {MAX_FILE_LINES}): give a part its own module"));
        }
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a test module
        }
        for (name, len) in function_lengths(&text) {
            if len > MAX_FUNCTION_LINES {
                problems.push(format!("{rel}: fn {name} is {len} lines (at most {MAX_FUNCTION_LINES})"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_length_scanner_measures_bodies() {
    let text = "fn a() {\n    x();\n}\npub(crate) async fn b(\n    y: u8,\n) -> u8 {\n    y\n}\nfn c();\n#[cfg(test)]\nfn d() {\n}\n";
    assert_eq!(function_lengths(text), vec![("a".to_string(), 3), ("b".to_string(), 5)]);
}
