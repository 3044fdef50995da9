//! Applying config changes while serving (design §3 "Hot reload").
//!
//! Every trigger — the directory watch, the poll safety net, SIGHUP and
//! `POST /reload` — ends in `Reloader::reload`: read the file by path,
//! compare its sha256 with what is serving, validate fully, refuse changes
//! that need a new socket, then `Live::install` in one swap. Any failure
//! leaves the serving table untouched, is logged with every problem and is
//! counted.

pub mod watch;

use crate::config::{self, ConfigError, Snapshot};
use crate::live::Live;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied { generation: u64, sha256: String },
    Unchanged { generation: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("restart required: {0}")]
    RestartRequired(String),
}

impl ReloadError {
    pub fn problems(&self) -> Vec<String> {
        match self {
            ReloadError::Config(e) => e.problems(),
            ReloadError::RestartRequired(_) => vec![self.to_string()],
        }
    }
}

/// The socket-level settings fixed at start; changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RestartOnly {
    listen: Vec<SocketAddr>,
    admin: SocketAddr,
    max_connections: usize,
    state_dir: PathBuf,
}

impl RestartOnly {
    fn of(s: &Snapshot) -> Self {
        Self {
            listen: s.listen.clone(),
            admin: s.admin,
            max_connections: s.limits.max_connections,
            state_dir: s.state_dir.clone(),
        }
    }
}

/// How long an empty or missing config file is taken for one being written.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Reloader {
    path: PathBuf,
    live: Arc<Live>,
    sockets: RestartOnly,
    /// sha256 of the last content we judged (applied or refused), so the
    /// poll and watch paths do not re-log the same bad file over and over.
    last_seen: Mutex<String>,
    /// When the watch or poll first found the file empty or missing, the
    /// usual look of a file in the middle of being written (an in-place
    /// write truncates first; a vim-style save renames the old file away
    /// first). Only a file still empty or missing `SETTLE` later is refused.
    settling_since: Mutex<Option<std::time::Instant>>,
    successes: AtomicU64,
    failures: AtomicU64,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<Live>) -> Self {
        let current = live.load();
        let sockets = RestartOnly::of(&current.snapshot);
        let last_seen = Mutex::new(current.snapshot.sha256.clone());
        Self {
            path,
            live,
            sockets,
            last_seen,
            settling_since: Mutex::new(None),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Re-read and apply the file. `quiet_repeat`: when the content is one
    /// we already refused, say nothing and count nothing (watch/poll use
    /// this; explicit triggers do not).
    pub fn reload(&self, trigger: &'static str, quiet_repeat: bool) -> Result<Outcome, ReloadError> {
        let read = crate::files::read_capped(&self.path, crate::files::MAX_CONFIG);
        let mid_write = match &read {
            Ok(b) => b.is_empty(),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if quiet_repeat && self.still_settling(mid_write) {
            tracing::debug!(trigger, "config file empty or missing; waiting for the write to finish");
            return Ok(Outcome::Unchanged { generation: self.live.load().generation });
        }
        let bytes = match read {
            Ok(b) => b,
            Err(source) => {
                let seen = format!("unreadable:{}", source.kind());
                if quiet_repeat && self.seen(&seen) {
                    return Ok(Outcome::Unchanged { generation: self.live.load().generation });
                }
                self.mark_seen(seen);
                let err = ReloadError::Config(ConfigError::Read { path: self.path.clone(), source });
                return Err(self.fail(trigger, err));
            }
        };
        let sha = config::sha256_hex(&bytes);
        let current = self.live.load();
        // Certificate files count as part of the config: a renewed or
        // replaced certificate reloads even when the YAML did not change.
        let certs_now = certs_fingerprint_on_disk(&current.snapshot);
        let seen_key = format!("{sha}/{certs_now}");
        if sha == current.snapshot.sha256 && certs_now == certs_fingerprint_loaded(&current.snapshot) {
            if !quiet_repeat {
                tracing::info!(trigger, generation = current.generation, sha256 = %sha, "config unchanged");
            }
            self.mark_seen(seen_key);
            return Ok(Outcome::Unchanged { generation: current.generation });
        }
        if quiet_repeat && self.seen(&seen_key) {
            return Ok(Outcome::Unchanged { generation: current.generation });
        }
        self.mark_seen(seen_key);
        let started = std::time::Instant::now();
        let snapshot = config::parse(&bytes, &self.path).map_err(|e| self.fail(trigger, e.into()))?;
        let wanted = RestartOnly::of(&snapshot);
        if wanted != self.sockets {
            let what = describe_socket_change(&self.sockets, &wanted);
            return Err(self.fail(trigger, ReloadError::RestartRequired(what)));
        }
        let routes = snapshot.table.routes.len();
        crate::config::log_warnings(&snapshot, &self.path);
        let generation = self.live.install(snapshot);
        self.successes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            trigger,
            generation,
            sha256 = %sha,
            routes,
            took_us = started.elapsed().as_micros() as u64,
            "config reloaded"
        );
        Ok(Outcome::Applied { generation, sha256: sha })
    }

    /// For automatic triggers: true while an empty or missing file has been
    /// so for less than `SETTLE` (the write that follows will trigger the
    /// watch again; the poll reports a file that stays that way).
    fn still_settling(&self, mid_write: bool) -> bool {
        let Ok(mut since) = self.settling_since.lock() else { return false };
        if !mid_write {
            *since = None;
            return false;
        }
        let first = *since.get_or_insert_with(std::time::Instant::now);
        first.elapsed() < SETTLE
    }

    /// True while an empty or missing file is given time to be written.
    pub fn settling(&self) -> bool {
        self.settling_since.lock().is_ok_and(|s| s.is_some())
    }

    fn seen(&self, sha: &str) -> bool {
        self.last_seen.lock().map(|s| *s == sha).unwrap_or(false)
    }

    fn mark_seen(&self, sha: String) {
        if let Ok(mut s) = self.last_seen.lock() {
            *s = sha;
        }
    }

    fn fail(&self, trigger: &'static str, err: ReloadError) -> ReloadError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let generation = self.live.load().generation;
        let problems = err.problems();
        for problem in &problems {
            tracing::error!(trigger, generation, path = %self.path.display(), problem = %problem, "config reload refused; still serving the previous config");
        }
        self.live.notifier.config_refused(&self.path.display().to_string(), &problems);
        err
    }
}

/// Fingerprint of the certificates the serving snapshot loaded.
fn certs_fingerprint_loaded(s: &Snapshot) -> String {
    let upstream = s.upstreams.iter().filter_map(|u| u.tls.as_ref()).map(|t| t.fingerprint.as_str());
    s.tls.iter().flatten().map(|t| t.fingerprint.as_str()).chain(upstream).collect::<Vec<_>>().join(",")
}

/// Fingerprint of the same files as they are on disk now.
fn certs_fingerprint_on_disk(s: &Snapshot) -> String {
    let upstream = s.upstreams.iter().filter_map(|u| u.tls.as_ref()).map(|t| t.fingerprint_on_disk());
    s.tls.iter().flatten().map(|t| crate::tls::fingerprint_on_disk(t)).chain(upstream).collect::<Vec<_>>().join(",")
}

/// Directories holding the serving snapshot's certificate files (watched
/// like the config directory).
pub fn cert_dirs(s: &Snapshot) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = s
        .tls
        .iter()
        .flatten()
        .flat_map(|t| {
            t.certs
                .iter()
                .flat_map(|c| [c.cert.parent(), c.key.parent()])
                .chain(t.client_auth.as_ref().map(|a| a.ca.parent()))
        })
        .flatten()
        .chain(
            s.upstreams.iter().filter_map(|u| u.tls.as_ref()).flat_map(|t| t.files.iter().filter_map(|f| f.parent())),
        )
        .map(Path::to_path_buf)
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn describe_socket_change(old: &RestartOnly, new: &RestartOnly) -> String {
    let mut parts = Vec::new();
    if old.listen != new.listen {
        parts.push(format!("listen changed from {:?} to {:?}", old.listen, new.listen));
    }
    if old.admin != new.admin {
        parts.push(format!("admin.address changed from {} to {}", old.admin, new.admin));
    }
    if old.max_connections != new.max_connections {
        parts.push(format!("limits.max_connections changed from {} to {}", old.max_connections, new.max_connections));
    }
    if old.state_dir != new.state_dir {
        parts.push(format!("state_dir changed from {} to {}", old.state_dir.display(), new.state_dir.display()));
    }
    parts.join("; ")
}
