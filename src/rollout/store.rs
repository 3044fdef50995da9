//! `state_dir` on disk: `state.json` (every route's rollout state, replaced
//! atomically: temp file, fsync, rename, fsync of the directory),
//! `journal.jsonl` (one JSON object a line, appended and fsync'd, each
//! line chained to the one before by hash: `crate::journal`; rotated by
//! size or age into `journal-<seq>.jsonl`, the chain running on) and
//! `filters/<route key>.bin` (a route's counted-user filters, replaced the
//! same way, written only with that route's verdicts so the state file
//! stays small however many sticky routes there are).

use super::machine::RouteState;
use crate::config::JournalRotation as Rotation;
use crate::journal::{Head, rotated_journals};
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
    /// The chain's newest line.
    head: Head,
    /// Bytes in the current journal file and when it was started.
    journal_bytes: u64,
    journal_since: std::time::SystemTime,
    rotation: Rotation,
}

/// The chain's head on disk: the current file's last chained line, or the
/// newest rotated file's (a rotation cut short before its first line).
fn head_on_disk(dir: &Path) -> Head {
    let tail = |p: &Path| -> Option<Head> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = crate::files::open_regular(p).ok()?;
        let len = f.metadata().ok()?.len();
        // Lines are at most a few KiB; the last MiB holds the newest whole one.
        let start = len.saturating_sub(1024 * 1024);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        let from = if start > 0 { buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1) } else { 0 };
        crate::journal::head_of(&buf[from..])
    };
    tail(&dir.join(JOURNAL)).or_else(|| rotated_journals(dir).last().and_then(|p| tail(p))).unwrap_or_default()
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
        let head = head_on_disk(dir);
        // Non-blocking, and only a regular file: a FIFO would hang the
        // open (a writer waits for a reader) where no signal can stop it.
        let journal = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new().create(true).append(true).custom_flags(libc::O_NONBLOCK).open(dir.join(JOURNAL))?
        };
        let meta = journal.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{JOURNAL} is not a regular file")));
        }
        let journal_since =
            meta.created().or_else(|_| meta.modified()).unwrap_or_else(|_| std::time::SystemTime::now());
        let loaded = match crate::files::read_capped(&dir.join(STATE), crate::files::MAX_STATE) {
            Ok(bytes) => parse_state(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => Loaded { unreadable_file: Some(e.to_string()), ..Loaded::default() },
        };
        if loaded.unreadable_file.is_some() || !loaded.unreadable_routes.is_empty() {
            // Keep the bad file for a human; the next save replaces state.json.
            // (Only a regular file: copying a FIFO would block.)
            if fs::metadata(dir.join(STATE)).is_ok_and(|m| m.is_file()) {
                let _ = fs::copy(dir.join(STATE), dir.join("state.json.unreadable"));
            }
        }
        let store = Self {
            dir: dir.to_path_buf(),
            journal,
            head,
            journal_bytes: meta.len(),
            journal_since,
            rotation: Rotation::default(),
        };
        Ok((store, loaded))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_rotation(&mut self, rotation: Rotation) {
        self.rotation = rotation;
    }

    /// The journal chain's newest line.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Replace `state.json` atomically. It records the journal's head too,
    /// so lines cut from the end of the journal can be told.
    pub fn save(&self, routes: &BTreeMap<String, RouteState>) -> io::Result<()> {
        let head = serde_json::json!({"seq": self.head.seq, "hash": self.head.hash});
        let mut doc = serde_json::json!({"format": FORMAT, "routes": routes, "journal_head": head}).to_string();
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
        crate::files::read_capped(&self.dir.join(Self::filters_name(route)), crate::files::MAX_STATE).ok()
    }

    /// Append one line, chained to the one before, and fsync it; rotate
    /// first when the file is due.
    /// `entry` gets its `seq` and `prev`.
    pub fn journal(&mut self, entry: &mut Value) -> io::Result<()> {
        if self.rotation_due() {
            self.rotate()?;
        }
        self.append(entry)
    }

    fn append(&mut self, entry: &mut Value) -> io::Result<()> {
        let (mut line, head) = crate::journal::link(entry, &self.head);
        line.push('\n');
        self.journal.write_all(line.as_bytes())?;
        self.journal.sync_data()?;
        self.head = head;
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    fn rotation_due(&self) -> bool {
        self.journal_bytes > 0
            && (self.journal_bytes >= self.rotation.max_bytes
                || self.rotation.max_age.is_some_and(|age| self.journal_since.elapsed().is_ok_and(|e| e >= age)))
    }

    /// Close the current file as `journal-<last seq>.jsonl` and start a new
    /// one whose first line links to it.
    fn rotate(&mut self) -> io::Result<()> {
        let rotated = format!("journal-{:012}.jsonl", self.head.seq);
        fs::rename(self.dir.join(JOURNAL), self.dir.join(&rotated))?;
        self.journal = OpenOptions::new().create(true).append(true).open(self.dir.join(JOURNAL))?;
        File::open(&self.dir)?.sync_all()?;
        self.journal_bytes = 0;
        self.journal_since = std::time::SystemTime::now();
        let mut first = serde_json::json!({
            "time": crate::clock::rfc3339_now(),
            "event": "journal_rotated",
            "previous_file": rotated,
        });
        self.append(&mut first)
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
    use crate::labels::RollbackReason;

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
        store.journal(&mut serde_json::json!({"n": 1})).unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.journal(&mut serde_json::json!({"n": 2})).unwrap();
        let text = fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.iter().map(|l| l["n"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert_eq!(lines.iter().map(|l| l["seq"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(2)]);
        assert_eq!(lines[0]["prev"], crate::journal::GENESIS);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_chain_survives_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.set_rotation(Rotation { max_bytes: 300, max_age: None });
        for n in 0..10 {
            store.journal(&mut serde_json::json!({"event": "verdict", "n": n, "pad": "x".repeat(60)})).unwrap();
        }
        drop(store);
        // Reopened, it carries on from the head on disk.
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.journal(&mut serde_json::json!({"event": "verdict", "n": 10})).unwrap();
        store.save(&BTreeMap::new()).unwrap();
        let rotated = rotated_journals(dir.path());
        assert!(rotated.len() >= 2, "rotated by size: {rotated:?}");
        let mut files: Vec<(String, Vec<u8>)> =
            rotated.iter().map(|p| (p.display().to_string(), fs::read(p).unwrap())).collect();
        files.push(("journal.jsonl".into(), fs::read(dir.path().join(JOURNAL)).unwrap()));
        let r = crate::journal::verify(&files, None);
        assert_eq!(r.broken, None);
        // 11 entries plus one `journal_rotated` line per rotation.
        assert_eq!(r.lines, 11 + rotated.len() as u64);
        assert_eq!(&r.head, store.head());
        let state: Value = serde_json::from_slice(&fs::read(dir.path().join(STATE)).unwrap()).unwrap();
        assert_eq!(state["journal_head"]["hash"], store.head().hash.as_str(), "state.json names the head");
        let first = String::from_utf8(files[1].1.clone()).unwrap();
        assert!(first.starts_with("{") && first.contains("journal_rotated"), "{first}");
    }
}
