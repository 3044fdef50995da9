//! Watching the config file for changes.
//!
//! The watch is on the file's *directory*: a watch on the file itself dies
//! after the first Kubernetes ConfigMap `..data` symlink swap or an editor's
//! save-by-rename. Any event in the directory starts a debounce; once the
//! directory has been quiet for `DEBOUNCE` the reload runs (it hash-compares,
//! so unrelated events cost one read). A slow poll runs as well, as a safety
//! net for filesystems without inotify and in case the watcher cannot be
//! created at all.

use super::Reloader;
use notify::{RecursiveMode, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Quiet time after the last event before reloading: long enough for an
/// editor or a chunked writer to finish, short enough to feel immediate.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// Longest a stream of events can postpone a reload.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Poll period when the watcher works (safety net) and when it does not.
pub const POLL_WITH_WATCH: Duration = Duration::from_secs(5);
pub const POLL_WITHOUT_WATCH: Duration = Duration::from_secs(1);

/// Start watching. The directory watch is registered before this returns,
/// so no edit made after it can be missed; the loop runs until `stop`.
pub fn spawn(reloader: Arc<Reloader>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<()>(1);
    let dir = reloader
        .path()
        .parent()
        .map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p })
        .unwrap_or_else(|| std::path::Path::new("."))
        .to_path_buf();
    // The callback runs on notify's own thread; a full channel already means
    // "a reload is pending", so dropping extra signals is correct.
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    .map(|mut w| {
        // Certificate directories (often a Secret mounted elsewhere). A
        // directory that cannot be watched is still covered by the poll.
        for d in super::cert_dirs(&reloader.live().load().snapshot) {
            if d != dir
                && let Err(e) = w.watch(&d, RecursiveMode::NonRecursive)
            {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch certificate directory; polling it");
            }
        }
        w
    });
    let poll_every = match &watcher {
        Ok(_) => {
            tracing::info!(dir = %dir.display(), "watching config directory");
            POLL_WITH_WATCH
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch config directory; polling instead");
            POLL_WITHOUT_WATCH
        }
    };
    tokio::spawn(run(reloader, stop, rx, poll_every, watcher.ok()))
}

async fn run(
    reloader: Arc<Reloader>,
    stop: CancellationToken,
    mut rx: mpsc::Receiver<()>,
    poll_every: Duration,
    // Held only to keep the watch alive for as long as this loop runs.
    _watcher: Option<notify::RecommendedWatcher>,
) {
    let mut poll = tokio::time::interval(poll_every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: it catches an edit made between loading
    // the config and registering the watch.
    // Set while the file is empty or missing: look again once it has had
    // time to be written, so a file that stays so is reported promptly.
    let mut recheck: Option<tokio::time::Instant> = None;
    loop {
        let trigger = tokio::select! {
            _ = stop.cancelled() => break,
            _ = poll.tick() => "poll",
            Some(()) = rx.recv() => {
                debounce(&mut rx).await;
                "watch"
            }
            () = sleep_until_some(recheck) => "recheck",
        };
        let r = Arc::clone(&reloader);
        // Reading and validating is blocking work; keep it off the workers.
        let _ = tokio::task::spawn_blocking(move || r.reload(trigger, true)).await;
        recheck = match (reloader.settling(), recheck) {
            // Settled either way: applied, or reported by that recheck.
            _ if trigger == "recheck" => None,
            (false, _) => None,
            (true, Some(at)) => Some(at),
            (true, None) => Some(tokio::time::Instant::now() + super::SETTLE + DEBOUNCE),
        };
    }
}

/// Sleep until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Wait until no event arrived for `DEBOUNCE` (at most `MAX_DELAY`).
async fn debounce(rx: &mut mpsc::Receiver<()>) {
    let deadline = tokio::time::Instant::now() + MAX_DELAY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEBOUNCE) => return,
            _ = tokio::time::sleep_until(deadline) => return,
            got = rx.recv() => if got.is_none() { return },
        }
    }
}
