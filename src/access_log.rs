//! The per-request JSON access log (design §8) on stdout, target `access`.
//!
//! Lines are formatted on the request's task and handed to one writer
//! thread over a bounded channel, so a slow stdout never blocks a request:
//! when the channel is full the line is dropped and counted instead.

use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// One request, as logged. Never carries raw sticky keys or header values
/// other than the request id and trace id.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub ts: String,
    pub target: &'static str,
    pub request_id: &'a str,
    pub trace_id: Option<&'a str>,
    pub client_ip: &'a str,
    /// Subject of the client certificate the listener verified (RFC 4514).
    pub client_subject: Option<&'a str>,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub version: Option<&'static str>,
    pub revision: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub bucket: Option<u16>,
    pub upstream: Option<&'a str>,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream_duration_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub flags: &'a [&'static str],
}

pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// A log writing to stdout from its own thread.
    pub fn stdout() -> Self {
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        let spawned = std::thread::Builder::new().name("weir-access-log".into()).spawn(move || writer(rx));
        Self { tx: spawned.ok().map(|_| tx), dropped: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, record: &Record<'_>) {
        let Some(tx) = &self.tx else { return };
        let Ok(line) = serde_json::to_string(record) else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines lost because stdout could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn writer(rx: Receiver<String>) {
    let stdout = std::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(line) = rx.recv() {
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // Batch whatever is already queued, then write once. The stdout lock
        // is taken per batch, never held while waiting: anything else in the
        // process that prints must not block behind the access log.
        while buf.len() < 60 * 1024
            && let Ok(more) = rx.try_recv()
        {
            buf.extend_from_slice(more.as_bytes());
            buf.push(b'\n');
        }
        let mut out = stdout.lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
}
