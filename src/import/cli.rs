//! The body of `weir import …`: read the objects (a file or stdin), turn
//! them into a config, check it as `weir check` would, write it, and list
//! what was not translated. Exit 0 complete, 1 incomplete, 2 failed.

use super::{Imported, check, objects};
use crate::files::{MAX_CONFIG, read_capped};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// The input's text: a file, or stdin for `-`, both capped.
fn read_input(file: &Path) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        return match std::io::stdin().take(MAX_CONFIG * 16).read_to_string(&mut s) {
            Ok(_) => Ok(s),
            Err(e) => Err(e.to_string()),
        };
    }
    read_capped(file, MAX_CONFIG * 16)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))
}

/// Translate `file` with `translate` and write the config to `output`
/// (stdout when None).
pub fn run(file: &Path, output: Option<&Path>, translate: impl Fn(&[serde_json::Value]) -> Imported) -> ExitCode {
    let objects = match read_input(file).and_then(|t| objects(&t)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("weir import: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let imported = translate(&objects);
    let base = output.and_then(Path::parent).filter(|p| !p.as_os_str().is_empty());
    if let Err(problems) = check(&imported, base.unwrap_or(Path::new("."))) {
        // A bug of the importer: say so with what it wrote.
        eprintln!("weir import: the generated config does not pass weir check (please report):");
        for p in problems {
            eprintln!("  {p}");
        }
        eprintln!("{}", imported.yaml);
        return ExitCode::from(2);
    }
    let written = match output {
        Some(path) => std::fs::write(path, &imported.yaml).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{}", imported.yaml);
            Ok(())
        }
    };
    if let Err(e) = written {
        eprintln!("weir import: {e}");
        return ExitCode::from(2);
    }
    for s in &imported.skipped {
        eprintln!("not translated: {s}");
    }
    eprintln!(
        "weir import: {} route(s) written; {} item(s) not translated{}",
        imported.routes,
        imported.skipped.len(),
        if imported.skipped.is_empty() { "" } else { " (listed above)" }
    );
    if imported.skipped.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
