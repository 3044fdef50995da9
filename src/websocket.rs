//! WebSocket upgrades (design §9): routed like any request, relayed byte for
//! byte after both sides switched protocols, tracked here because hyper's
//! graceful shutdown does not see upgraded connections.
//!
//! The `Hub` knows every open socket (route, version, a signal to close it)
//! and runs their relay tasks on its own `TaskTracker`, so shutdown can tell
//! them all to close with 1001 and wait for them, and a rollback or kill can
//! close a route's canary sockets with 1012 at `close_rate`.

pub mod frame;
mod io;
mod relay;

use crate::metrics::RouteMetrics;
use crate::routing::Version;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

pub use relay::Settings;

use crate::labels::CloseWhy;

impl CloseWhy {
    /// Reason text in the close frames weir writes.
    fn reason_text(self) -> &'static str {
        match self {
            CloseWhy::Rollback => "weir: version withdrawn, reconnect",
            CloseWhy::Shutdown => "weir: shutting down",
            CloseWhy::Error => "weir: upstream failed",
            CloseWhy::Client | CloseWhy::Upstream => "weir: closing",
        }
    }
}

/// What a socket's relay is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Open,
    Close { code: u16, why: CloseWhy },
}

/// A WebSocket handshake: `GET` over HTTP/1.1 with `Connection: upgrade` and
/// `Upgrade: websocket`.
pub fn is_upgrade(method: &http::Method, version: http::Version, headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    method == http::Method::GET
        && version == http::Version::HTTP_11
        && has_token(CONNECTION, "upgrade")
        && has_token(UPGRADE, "websocket")
}

/// WebSocket over HTTP/2 (RFC 8441): a `CONNECT` with `:protocol: websocket`.
/// weir opens the upstream side as an HTTP/1.1 upgrade and answers the
/// client 200 on the stream.
pub fn is_extended_connect(method: &http::Method, version: http::Version, ext: &http::Extensions) -> bool {
    method == http::Method::CONNECT
        && version == http::Version::HTTP_2
        && ext.get::<hyper::ext::Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, base64; RFC 6455 §4.1).
pub fn new_key() -> HeaderValue {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    HeaderValue::from_str(&key).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The `Sec-WebSocket-Accept` an upstream must answer `key` with (RFC 6455 §4.2.2).
pub fn accept_for(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// The client side of a WebSocket handshake, taken before the request is
/// taken apart.
pub struct ClientUpgrade {
    pub on: OnUpgrade,
    /// What the socket keeps of its client connection.
    pub hold: crate::limits::ConnHold,
    /// RFC 8441 (HTTP/2 client): the key weir sends the upstream, whose
    /// answer it checks itself; `None` for an HTTP/1.1 client.
    pub h2_key: Option<HeaderValue>,
    /// HTTP/1.1 client: the key it sent (and weir forwards). weir checks
    /// the upstream's `Sec-WebSocket-Accept` against it too, rather than
    /// tunnel to an upstream that did not answer this handshake.
    pub client_key: Option<HeaderValue>,
}

/// The upstream's 101 names `Upgrade: websocket`.
pub fn accepts_websocket(headers: &HeaderMap) -> bool {
    headers.get_all(UPGRADE).iter().any(|v| v.to_str().is_ok_and(|s| s.trim().eq_ignore_ascii_case("websocket")))
}

/// What the hub needs to know about a socket it is given.
pub struct NewSocket {
    pub route: Arc<str>,
    pub version: Version,
    pub metrics: Arc<RouteMetrics>,
    pub settings: Settings,
    /// What the socket keeps of its client connection, until the end.
    pub hold: crate::limits::ConnHold,
    /// Evidence unit of the handshake: the session's end and its round
    /// trips are evidence of its version too.
    pub unit: Option<crate::evidence::Unit>,
}

struct Entry {
    route: Arc<str>,
    version: Version,
    signal: Arc<watch::Sender<Signal>>,
}

type Sockets = Arc<Mutex<HashMap<u64, Entry>>>;

/// Every open WebSocket.
pub struct Hub {
    sockets: Sockets,
    tracker: TaskTracker,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    /// Where paced closers run (absent only outside a runtime, e.g. benches).
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sockets: Arc::default(),
            tracker: TaskTracker::new(),
            next_id: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// Removes a socket from the hub and settles its gauge however its task ends.
struct Registration {
    id: u64,
    sockets: Sockets,
    metrics: Arc<RouteMetrics>,
    version: Version,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        self.metrics.version(self.version).websocket_gone();
    }
}

/// How long both upgrades may take to complete after the 101.
const UPGRADE_WAIT: Duration = Duration::from_secs(10);

impl Hub {
    pub fn active(&self) -> usize {
        self.sockets.lock().map_or(0, |s| s.len())
    }

    /// Relay a socket whose handshake succeeded (upstream answered 101 and
    /// the 101 is on its way to the client).
    pub fn spawn(&self, socket: NewSocket, client: OnUpgrade, upstream: OnUpgrade) {
        let NewSocket { route, version, metrics, settings, hold, unit } = socket;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = watch::channel(Signal::Open);
        let signal = Arc::new(tx);
        if self.shutting_down.load(Ordering::Acquire) {
            signal.send_replace(Signal::Close { code: 1001, why: CloseWhy::Shutdown });
        }
        self.sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Entry { route, version, signal: Arc::clone(&signal) });
        metrics.version(version).websocket_opened();
        let reg = Registration { id, sockets: Arc::clone(&self.sockets), metrics, version };
        self.tracker.spawn(async move {
            let both = tokio::time::timeout(UPGRADE_WAIT, async { tokio::join!(client, upstream) }).await;
            let rm = Arc::clone(&reg.metrics);
            let sink = move |rtt: Duration| {
                rm.version(version).rtt(Instant::now(), rtt);
                if let Some(u) = &unit {
                    rm.evidence.record_rtt(u, version, rtt);
                }
            };
            let why = match both {
                Ok((Ok(c), Ok(u))) => {
                    let rtt = Some(&sink as relay::RttSink<'_>);
                    // Bare TCP where the upgrade allows it (idle sockets then
                    // hold no buffers); TLS and HTTP/2 streams as they come.
                    relay::relay(TokioIo::new(c), TokioIo::new(u), &signal, &settings, rtt).await
                }
                _ => CloseWhy::Error,
            };
            let m = reg.metrics.version(reg.version);
            m.websocket_closed(why);
            if why == CloseWhy::Error {
                // An abnormal close caused by the upstream counts against that
                // version (design §6); socket lifetime never enters latency.
                m.window.record_error_only(Instant::now());
            }
            // The session's end is one more unit of test E: bad when the
            // upstream broke it, fine when a side closed normally; closes
            // weir made itself (rollback, shutdown) say nothing of a version.
            if let (Some(u), CloseWhy::Error | CloseWhy::Client | CloseWhy::Upstream) = (&unit, why) {
                reg.metrics.evidence.record(u, version, why == CloseWhy::Error, None);
            }
            tracing::debug!(version = reg.version.as_str(), close = why.as_str(), "websocket closed");
            drop(reg);
            drop(hold);
        });
    }

    /// Close a route's canary sockets with 1012, `per_second` at a time, so
    /// clients do not all reconnect in the same instant.
    pub fn close_canary(&self, route: &str, per_second: f64) {
        let targets: Vec<Arc<watch::Sender<Signal>>> = self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|e| &*e.route == route && e.version == Version::Canary)
            .map(|e| Arc::clone(&e.signal))
            .collect();
        if targets.is_empty() {
            return;
        }
        tracing::info!(route, sockets = targets.len(), per_second, "closing canary websockets (1012)");
        let close = |s: &watch::Sender<Signal>| {
            s.send_if_modified(|v| {
                let open = *v == Signal::Open;
                if open {
                    *v = Signal::Close { code: 1012, why: CloseWhy::Rollback };
                }
                open
            });
        };
        let Some(rt) = &self.runtime else {
            targets.iter().for_each(|s| close(s));
            return;
        };
        // Pace in ticks of at least 10 ms, several sockets per tick at high rates.
        let tick = Duration::from_secs_f64((1.0 / per_second.max(0.001)).max(0.01));
        let per_tick = ((per_second * tick.as_secs_f64()).round() as usize).max(1);
        rt.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            for batch in targets.chunks(per_tick) {
                interval.tick().await;
                batch.iter().for_each(|s| close(s));
            }
        });
    }

    /// Shutdown: every socket gets 1001 now; new ones get it at once.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.tracker.close();
        for e in self.sockets.lock().unwrap_or_else(|p| p.into_inner()).values() {
            e.signal.send_if_modified(|v| {
                let open = *v == Signal::Open;
                if open {
                    *v = Signal::Close { code: 1001, why: CloseWhy::Shutdown };
                }
                open
            });
        }
    }

    /// Wait until every relay task has ended (after `shutdown`).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}
