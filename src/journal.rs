//! The decision journal's hash chain: what makes it tamper-evident.
//!
//! Every line is one JSON object carrying `seq` (1, 2, 3, … across every
//! file of the journal) and `prev`, the SHA-256 (hex) of the exact bytes of
//! the line before it (without its newline); the very first line's `prev` is
//! 64 zeros. Editing a line changes its hash, so the next line's `prev` no
//! longer matches; removing or reordering lines breaks `seq`. Rotation
//! starts the next file with a `journal_rotated` line whose `prev` is the
//! last hash of the file before, so one chain runs through all files.
//!
//! What a chain cannot show by itself: lines cut from the very end (the
//! newest). `state.json` records the head (`journal_head`: seq and hash of
//! the newest line at each save), and `weir journal verify` checks the
//! journal still reaches it.
//!
//! Pure functions over bytes, the names of a journal directory's files, and
//! `weir journal verify` (`verify_dir`); the writer lives in `rollout::store`.

mod verify_dir;
pub use verify_dir::verify_dir;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain stands: the last line's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self { seq: 0, hash: GENESIS.to_owned() }
    }
}

pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Link `entry` to the chain after `head`; returns the line to append
/// (without newline) and the new head.
pub fn link(entry: &mut Value, head: &Head) -> (String, Head) {
    let seq = head.seq + 1;
    if let Value::Object(m) = entry {
        m.insert("seq".into(), Value::from(seq));
        m.insert("prev".into(), Value::from(head.hash.clone()));
    }
    let line = entry.to_string();
    let hash = hash_line(line.as_bytes());
    (line, Head { seq, hash })
}

/// The head after the last chained line of `text` (a journal file), if any
/// line carries a chain. Unchained lines (written before the chain existed)
/// are skipped.
pub fn head_of(text: &[u8]) -> Option<Head> {
    text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).rev().find_map(|line| {
        let v: Value = serde_json::from_slice(line).ok()?;
        let seq = v.get("seq")?.as_u64()?;
        v.get("prev")?.as_str()?;
        Some(Head { seq, hash: hash_line(line) })
    })
}

/// What `verify` found wrong first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// File (as given) and 1-based line number.
    pub file: String,
    pub line: usize,
    pub why: String,
}

/// Result of checking a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Chained lines checked.
    pub lines: u64,
    /// Lines before the chain began (from a weir without it).
    pub unchained: u64,
    pub head: Head,
    pub broken: Option<Break>,
}

/// Check one chain through `files` (name and bytes, oldest first). `from`:
/// the head the first file continues; None: the journal's beginning.
pub fn verify(files: &[(String, Vec<u8>)], from: Option<&Head>) -> Report {
    let mut head = from.cloned().unwrap_or_default();
    let mut report = Report { lines: 0, unchained: 0, head: head.clone(), broken: None };
    for (name, bytes) in files {
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let at = |why: String| Some(Break { file: name.clone(), line: i + 1, why });
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                report.broken = at("not a JSON object (edited or cut)".into());
                return report;
            };
            let (seq, prev) = match (v.get("seq").and_then(Value::as_u64), v.get("prev").and_then(Value::as_str)) {
                (Some(s), Some(p)) => (s, p),
                _ if report.lines == 0 => {
                    report.unchained += 1;
                    continue; // written before the chain existed
                }
                _ => {
                    report.broken = at("no seq/prev: a line inserted or edited".into());
                    return report;
                }
            };
            if seq != head.seq + 1 {
                let why = if seq <= head.seq {
                    format!("seq {seq} after {}: lines reordered or repeated", head.seq)
                } else {
                    format!("seq {seq} after {}: {} line(s) removed before this one", head.seq, seq - head.seq - 1)
                };
                report.broken = at(why);
                return report;
            }
            if prev != head.hash {
                report.broken = at(format!(
                    "prev does not match the line before: that line (seq {}) was edited, or this one was",
                    head.seq
                ));
                return report;
            }
            head = Head { seq, hash: hash_line(line) };
            report.lines += 1;
            report.head = head.clone();
        }
    }
    report
}

/// Where a single file says it continues from: its first chained line's
/// `seq - 1` and `prev` (a rotated file starts with `journal_rotated`).
pub fn claimed_start(bytes: &[u8]) -> Option<Head> {
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).find_map(|line| {
        let v: Value = serde_json::from_slice(line).ok()?;
        let seq = v.get("seq")?.as_u64()?;
        let prev = v.get("prev")?.as_str()?;
        Some(Head { seq: seq.saturating_sub(1), hash: prev.to_owned() })
    })
}

/// Rotated journal files, oldest first (by the seq in their name).
pub fn rotated_journals(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = name.strip_prefix("journal-")?.strip_suffix(".jsonl")?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn journal(n: u64) -> Vec<u8> {
        let mut head = Head::default();
        let mut out = Vec::new();
        for i in 0..n {
            let (line, h) = link(&mut json!({"event": "verdict", "i": i}), &head);
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
            head = h;
        }
        out
    }

    fn lines(b: &[u8]) -> Vec<Vec<u8>> {
        b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect()
    }

    fn join(ls: &[Vec<u8>]) -> Vec<u8> {
        ls.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect()
    }

    fn check(b: Vec<u8>) -> Report {
        verify(&[("journal.jsonl".into(), b)], None)
    }

    #[test]
    fn an_intact_chain_verifies_and_its_head_is_the_last_line() {
        let b = journal(5);
        let r = check(b.clone());
        assert_eq!((r.lines, r.broken), (5, None));
        assert_eq!(Some(r.head), head_of(&b));
    }

    #[test]
    fn an_edited_line_is_found() {
        let mut ls = lines(&journal(5));
        ls[2] = String::from_utf8(ls[2].clone()).unwrap().replace("\"i\":2", "\"i\":9").into_bytes();
        let r = check(join(&ls));
        let b = r.broken.unwrap();
        assert_eq!(b.line, 4, "the line after the edited one no longer links");
        assert!(b.why.contains("seq 3") && b.why.contains("edited"), "{}", b.why);
    }

    #[test]
    fn removed_and_reordered_lines_are_found() {
        let ls = lines(&journal(6));
        let removed = [&ls[..2], &ls[3..]].concat();
        let b = check(join(&removed)).broken.unwrap();
        assert_eq!(b.line, 3);
        assert!(b.why.contains("1 line(s) removed"), "{}", b.why);
        let mut swapped = ls.clone();
        swapped.swap(3, 4);
        let b = check(join(&swapped)).broken.unwrap();
        assert_eq!(b.line, 4);
        let first_gone = ls[1..].to_vec();
        assert!(check(join(&first_gone)).broken.is_some_and(|b| b.line == 1));
    }

    #[test]
    fn a_chain_runs_across_rotated_files() {
        let ls = lines(&journal(6));
        let files = [("a.jsonl".to_owned(), join(&ls[..3])), ("b.jsonl".to_owned(), join(&ls[3..]))];
        let r = verify(&files, None);
        assert_eq!((r.lines, r.broken), (6, None));
        // The second file alone continues from the first file's head.
        let from = head_of(&files[0].1).unwrap();
        assert_eq!(claimed_start(&files[1].1), Some(from.clone()));
        assert_eq!(verify(&files[1..], Some(&from)).broken, None);
        assert!(verify(&files[1..], None).broken.is_some(), "alone, from the beginning, it is not whole");
        // A missing middle file shows as removed lines.
        let r = verify(&[files[1].clone()], Some(&Head { seq: 1, hash: GENESIS.into() }));
        assert!(r.broken.is_some_and(|b| b.why.contains("removed")));
    }

    #[test]
    fn lines_from_before_the_chain_are_counted_not_failed() {
        let mut b = b"{\"event\":\"old\"}\n".to_vec();
        b.extend(journal(2));
        let r = check(b);
        assert_eq!((r.unchained, r.lines, r.broken), (1, 2, None));
        assert!(check(b"{\"seq\":1,\"prev\":\"x\"}\nnot json\n".to_vec()).broken.is_some());
    }
}
