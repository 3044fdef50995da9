//! Reading the small files weir is pointed at (config, secrets, tokens,
//! certificates, its own state) without trusting them: only regular files (a FIFO would
//! hang the reader, `/dev/zero` would never end), and never more than a cap
//! (a 1.5 GB file must not cost 1.5 GB of memory). Symlinks are followed,
//! so Kubernetes ConfigMap and Secret mounts work.

use std::io::{self, Read};
use std::path::Path;

/// Config files: far above any real routing table.
pub const MAX_CONFIG: u64 = 4 << 20;
/// Secrets and tokens.
pub const MAX_SECRET: u64 = 64 << 10;
/// PEM certificate chains and keys.
pub const MAX_PEM: u64 = 1 << 20;

/// State files (`state.json`, a route's counted-user filters): a few KiB
/// per route, and 32 KiB of filters; far below this.
pub const MAX_STATE: u64 = 64 << 20;
/// One journal file (`weir journal verify`); rotation keeps them far
/// smaller (`journal.rotate_size`, 64 MiB by default).
pub const MAX_JOURNAL: u64 = 1 << 30;

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// "is X; the limit is Y", in exact bytes when the rounded sizes would
/// read the same ("is 4.0 MiB; the limit is 4.0 MiB" says nothing).
fn over(len: u64, max: u64) -> String {
    let (a, b) = (human(len), human(max));
    if a == b { format!("is {len} bytes; the limit is {max} bytes ({b})") } else { format!("is {a}; the limit is {b}") }
}

/// Open `path` for reading if it is a regular file, without ever blocking:
/// the open is non-blocking (a FIFO would otherwise hang it until a writer
/// came, and no signal could stop it), and the opened file itself is
/// checked, so a file swapped after a look at its path cannot slip by.
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // A cheap look first: devices and FIFOs are refused without opening.
    not_regular(&std::fs::metadata(path)?)?;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    not_regular(&f.metadata()?)?;
    Ok(f)
}

fn not_regular(meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device?)" };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}")))
}

/// Read `path` whole if it is a regular file of at most `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, over(len, max)));
    }
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // The file may grow between the check and the read: read one byte more
    // than allowed to notice.
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("grew past the limit of {}", human(max))));
    }
    Ok(out)
}

/// A bearer token from `path` (`admin.token_file`, `--token-file`): a
/// capped regular file holding one token of visible ASCII (surrounding
/// whitespace and a final newline are trimmed). Anything else is refused
/// with why: an empty file would otherwise lock every mutation out, and a
/// token with spaces or control bytes cannot be sent in a header at all.
pub fn read_token(path: &Path) -> Result<String, String> {
    let bytes = read_capped(path, MAX_SECRET).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{} must hold one token of visible ASCII, without spaces", path.display()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"hello").unwrap();
        assert_eq!(read_capped(&ok, 5).unwrap(), b"hello");
        let e = read_capped(&ok, 4).unwrap_err().to_string();
        assert!(e.contains("is 5 bytes; the limit is 4 bytes"), "{e}");
        let e = read_capped(dir.path(), 10).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = read_capped(Path::new("/dev/zero"), MAX_CONFIG).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A sparse 1.5 GiB file is refused from its size, not read.
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(3 << 29).unwrap();
        let e = read_capped(&big, MAX_CONFIG).unwrap_err().to_string();
        assert!(e.contains("1.5 GiB; the limit is 4.0 MiB"), "{e}");
        // Sizes that round alike are told in bytes.
        let e = read_capped(&ok, 4).unwrap_err().to_string();
        assert!(e.contains("is 5 bytes; the limit is 4 bytes"), "{e}");
        let near = dir.path().join("near");
        std::fs::File::create(&near).unwrap().set_len(MAX_CONFIG + 1).unwrap();
        let e = read_capped(&near, MAX_CONFIG).unwrap_err().to_string();
        assert!(e.contains("is 4194305 bytes; the limit is 4194304 bytes (4.0 MiB)"), "{e}");
        // A FIFO is refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = read_capped(&fifo, 10).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // Tokens: one word of visible ASCII, trimmed.
        std::fs::write(&ok, b"  s3cret\n").unwrap();
        assert_eq!(read_token(&ok).unwrap(), "s3cret");
        std::fs::write(&ok, b"\n").unwrap();
        assert!(read_token(&ok).unwrap_err().contains("is empty"));
        std::fs::write(&ok, b"two words").unwrap();
        assert!(read_token(&ok).unwrap_err().contains("visible ASCII"));
        assert!(read_token(&fifo).unwrap_err().contains("not a regular file"));
        std::fs::write(&ok, b"hello").unwrap();
        // Symlinks are followed (ConfigMap mounts are symlinks).
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_capped(&link, 5).unwrap(), b"hello");
    }
}
