//! `state_dir` on disk: `state.json` (every route's rollout state, replaced
//! atomically: temp file, fsync, rename, fsync of the directory),
//! `journal.jsonl` (one JSON object a line, appended and fsync'd) and
//! `filters/<route key>.bin` (a route's counted-user filters, replaced the
//! same way, written only with that route's verdicts so the state file
//! stays small however many sticky routes there are).

use super::machine::RouteState;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const STATE: &str = "state.json";
const JOURNAL: &str = "journal.jsonl";
const FORMAT: u64 = 1;
const FILTERS: &str = "filters";

/// Write `name` under `dir` atomically: temp file, fsync, rename, fsync of
/// the directory the file is in.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    // The rename itself is durable only once the directory is synced.
    File::open(path.parent().unwrap_or(dir))?.sync_all()
}

pub struct Store {
    dir: PathBuf,
    journal: File,
}

/// What was found on disk at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub routes: BTreeMap<String, RouteState>,
    /// Routes whose entry could not be read, with why.
    pub unreadable_routes: Vec<(String, String)>,
    /// The whole file could not be read (every route with a canary starts safe).
    pub unreadable_file: Option<String>,
}

impl Store {
    /// Create the directory if needed, open the journal and read the state.
    pub fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        fs::create_dir_all(dir)?;
        // A save cut short (kill -9 between write and rename) leaves its
        // temp file; state.json itself is whole, so the leftover can go.
        let _ = fs::remove_file(dir.join(format!("{STATE}.tmp")));
        if let Ok(entries) = fs::read_dir(dir.join(FILTERS)) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let journal = OpenOptions::new().create(true).append(true).open(dir.join(JOURNAL))?;
        let loaded = match fs::read(dir.join(STATE)) {
            Ok(bytes) => parse_state(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => Loaded { unreadable_file: Some(e.to_string()), ..Loaded::default() },
        };
        if loaded.unreadable_file.is_some() || !loaded.unreadable_routes.is_empty() {
            // Keep the bad file for a human; the next save replaces state.json.
            let _ = fs::copy(dir.join(STATE), dir.join("state.json.unreadable"));
        }
        Ok((Self { dir: dir.to_path_buf(), journal }, loaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replace `state.json` atomically.
    pub fn save(&self, routes: &BTreeMap<String, RouteState>) -> io::Result<()> {
        let mut doc = serde_json::json!({"format": FORMAT, "routes": routes}).to_string();
        doc.push('\n');
        replace(&self.dir, STATE, doc.as_bytes())
    }

    /// Where a route's filters live: a name derived from the route name, so
    /// any route name makes a safe file name.
    fn filters_name(route: &str) -> String {
        use sha2::Digest;
        format!("{FILTERS}/{}.bin", &hex::encode(sha2::Sha256::digest(route.as_bytes()))[..16])
    }

    /// Replace a route's counted-user filters atomically.
    pub fn save_filters(&self, route: &str, bytes: &[u8]) -> io::Result<()> {
        fs::create_dir_all(self.dir.join(FILTERS))?;
        replace(&self.dir, &Self::filters_name(route), bytes)
    }

    /// A route's saved filters, if any could be read.
    pub fn load_filters(&self, route: &str) -> Option<Vec<u8>> {
        fs::read(self.dir.join(Self::filters_name(route))).ok()
    }

    /// Append one line and fsync it.
    pub fn journal(&mut self, entry: &Value) -> io::Result<()> {
        let mut line = entry.to_string();
        line.push('\n');
        self.journal.write_all(line.as_bytes())?;
        self.journal.sync_data()
    }
}

fn parse_state(bytes: &[u8]) -> Loaded {
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return Loaded { unreadable_file: Some(format!("not valid JSON: {e}")), ..Loaded::default() },
    };
    if doc.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        return Loaded { unreadable_file: Some(format!("unknown format (expected {FORMAT})")), ..Loaded::default() };
    }
    let Some(entries) = doc.get("routes").and_then(Value::as_object) else {
        return Loaded { unreadable_file: Some("no `routes` object".into()), ..Loaded::default() };
    };
    let mut out = Loaded::default();
    for (name, v) in entries {
        match serde_json::from_value::<RouteState>(v.clone()) {
            Ok(s) => {
                out.routes.insert(name.clone(), s);
            }
            Err(e) => out.unreadable_routes.push((name.clone(), e.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::machine::RollbackReason;

    #[test]
    fn save_then_open_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(dir.path()).unwrap();
        assert!(loaded.routes.is_empty() && loaded.unreadable_file.is_none());
        let mut routes = BTreeMap::new();
        let mut s = RouteState::fresh("2", None, 5);
        s.rollback(RollbackReason::ErrorRate, 6);
        routes.insert("checkout".to_string(), s);
        store.save(&routes).unwrap();
        assert!(!dir.path().join("state.json.tmp").exists());
        let (_, again) = Store::open(dir.path()).unwrap();
        assert_eq!(again.routes, routes);
    }

    #[test]
    fn a_corrupt_file_or_entry_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE),
            b"{\"format\":1,\"routes\":{\"a\":{\"revision\":\"1\"},\"b\":{\"step\":\"x\"}}}",
        )
        .unwrap();
        let (_, l) = Store::open(dir.path()).unwrap();
        assert_eq!(l.routes.len(), 1);
        assert_eq!(l.unreadable_routes.len(), 1);
        assert_eq!(l.unreadable_routes[0].0, "b");
        fs::write(dir.path().join(STATE), b"\x00garbage").unwrap();
        let (_, l) = Store::open(dir.path()).unwrap();
        assert!(l.unreadable_file.is_some());
        assert!(dir.path().join("state.json.unreadable").exists());
    }

    #[test]
    fn filters_are_kept_per_route_under_any_route_name() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_filters("a/../b"), None);
        store.save_filters("a/../b", b"one").unwrap();
        store.save_filters("c", b"two").unwrap();
        store.save_filters("c", b"three").unwrap();
        assert_eq!(store.load_filters("a/../b").as_deref(), Some(&b"one"[..]));
        assert_eq!(store.load_filters("c").as_deref(), Some(&b"three"[..]));
        let names: Vec<String> = fs::read_dir(dir.path().join(FILTERS))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with(".bin") && !n.contains("..")), "{names:?}");
    }

    #[test]
    fn journal_lines_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.journal(&serde_json::json!({"n": 1})).unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.journal(&serde_json::json!({"n": 2})).unwrap();
        let text = fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n");
    }
}
