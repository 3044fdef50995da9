//! Reading the small files weir is pointed at (config, secrets, tokens,
//! certificates) without trusting them: only regular files (a FIFO would
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

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// Read `path` whole if it is a regular file of at most `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a directory" } else { "not a regular file (a FIFO, socket or device?)" };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}")));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {}; the limit is {}", human(meta.len()), human(max)),
        ));
    }
    let f = std::fs::File::open(path)?;
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the check and the read: read one byte more
    // than allowed to notice.
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("grew past the limit of {}", human(max))));
    }
    Ok(out)
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
        // Symlinks are followed (ConfigMap mounts are symlinks).
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_capped(&link, 5).unwrap(), b"hello");
    }
}
