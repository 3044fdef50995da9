//! `weir journal verify PATH`: one journal file, or a state directory
//! (every rotated file, the current one, and the head `state.json` records).
//! Exit 0 intact, 1 broken, 2 unreadable.

use super::{Head, claimed_start, rotated_journals, verify};
use crate::files::{MAX_JOURNAL, MAX_STATE, read_capped};
use std::path::Path;
use std::process::ExitCode;

type Files = Result<Vec<(String, Vec<u8>)>, std::io::Error>;

/// The files to check, the head the first continues (a lone rotated file),
/// and the directory's `state.json` bytes.
fn gather(path: &Path) -> (Files, Option<Head>, Option<Vec<u8>>) {
    let read = |p: &Path| read_capped(p, MAX_JOURNAL).map(|b| (p.display().to_string(), b));
    if path.is_dir() {
        let mut names = rotated_journals(path);
        let current = path.join("journal.jsonl");
        if current.exists() {
            names.push(current);
        }
        let files = names.iter().map(|p| read(p)).collect();
        (files, None, read_capped(&path.join("state.json"), MAX_STATE).ok())
    } else {
        let file = read(path);
        let from = file.as_ref().ok().and_then(|(_, b)| claimed_start(b)).filter(|h| h.seq > 0);
        (file.map(|f| vec![f]), from, None)
    }
}

/// Run the check and print what it found.
pub fn verify_dir(path: &Path) -> ExitCode {
    let (files, from, state) = gather(path);
    let files = match files {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("weir journal verify: no journal in {}", path.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("weir journal verify: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let r = verify(&files, from.as_ref());
    if let Some(b) = &r.broken {
        println!("journal BROKEN at {} line {}: {}", b.file, b.line, b.why);
        println!("(the {} lines before it verify)", r.lines);
        return ExitCode::FAILURE;
    }
    // state.json records the newest line at each save: a journal that ends
    // before it lost lines at its end.
    let recorded = state
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| Some((v["journal_head"]["seq"].as_u64()?, v["journal_head"]["hash"].as_str()?.to_owned())));
    if let Some((seq, hash)) = &recorded
        && (*seq > r.head.seq || (*seq == r.head.seq && *hash != r.head.hash))
    {
        println!(
            "journal BROKEN at its end: state.json records line seq {seq}, the journal ends at seq {} \
             (lines removed from the end, or the last line edited)",
            r.head.seq
        );
        return ExitCode::FAILURE;
    }
    if let Some(h) = &from {
        println!("continues from seq {} (the file before it is not checked here)", h.seq);
    }
    if r.unchained > 0 {
        println!("{} line(s) from before the chain (not protected)", r.unchained);
    }
    println!(
        "journal intact: {} chained line(s) in {} file(s), newest seq {}, hash {}{}",
        r.lines,
        files.len(),
        r.head.seq,
        r.head.hash,
        if recorded.is_some() { "; matches state.json" } else { "" }
    );
    ExitCode::SUCCESS
}
