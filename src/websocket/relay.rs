//! Relaying one upgraded connection, byte for byte, in both directions.
//!
//! Each direction is a pump with one buffer: 512 bytes while the socket is
//! chatty or idle (most of a relayed socket's life; it is most of weir's
//! memory per idle socket), grown eightfold, up to 64 KiB, each time a read
//! fills it (bulk transfer), and shrunk back after a run of small reads.
//! Memory per socket is bounded
//! whatever the peers do: a slow reader simply stops the pump that writes to
//! it, and TCP flow control pushes back on the sender. The pumps
//! track frame boundaries so weir can add its own close (or ping) frame
//! between two frames, never inside one.
//!
//! Endings:
//! - a close signal (rollback 1012, shutdown 1001): each pump writes a close
//!   frame to its destination at the next boundary, then reads and discards
//!   what its source still sends until that side's close frame, EOF or a
//!   short timeout;
//! - the upstream goes away without a close frame: the client gets 1011;
//! - the client goes away: the upstream gets 1001;
//! - a normal close handshake passes through untouched.

use super::frame::{Consumed, FrameTracker, OP_CLOSE, OP_PONG, close_frame, ping_frame};
use super::io::{BUF, Endpoint, Source};
use super::{CloseWhy, Signal};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// A direction whose reads keep filling the buffer (bulk transfer) grows it
/// (×8 per full read) up to this size, so fewer, larger syscalls; never more.
const BUF_BULK: usize = 64 * 1024;
/// This many reads in a row that would have fit in `BUF` shrink a grown
/// buffer back to `BUF`.
const SMALL_READS_TO_SHRINK: u32 = 8;
/// How long a closing side gets to answer our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long a pump may take to reach a frame boundary once asked to close
/// (a peer that stops mid-frame cannot hold a close back for longer).
const BOUNDARY_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → upstream: frames we add must be masked.
    ToUpstream,
    /// Upstream → client.
    ToClient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The source closed, failed, or sent something that is not WebSocket.
    SrcGone,
    /// Writing to the destination failed.
    DstGone,
    /// We wrote a close frame because of a signal.
    Closed,
    /// No byte from the client for the idle timeout.
    Idle,
    /// The source sent a frame that breaks RFC 6455 (reserved opcode,
    /// fragmented or oversized control frame, bad length): the frames
    /// before it went on, then a close frame to the destination.
    Protocol,
}

/// Close code for a peer that broke RFC 6455.
const PROTOCOL_ERROR: u16 = 1002;

/// Who sent the first close frame: 0 nobody, 1 client, 2 upstream.
const FIRST_NONE: u8 = 0;
const FIRST_CLIENT: u8 = 1;
const FIRST_UPSTREAM: u8 = 2;

pub struct Settings {
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    /// The upstream is pinged this often and its pong timed; zero = never.
    pub rtt_interval: Duration,
}

/// Where measured round trips go.
pub type RttSink<'a> = &'a (dyn Fn(Duration) + Send + Sync);

/// Payload of weir's round-trip probes.
const RTT_PAYLOAD: &[u8] = b"weir-rtt";

struct Shared<'a> {
    first_close: AtomicU8,
    /// Set (before weir's close frame goes to the upstream) when the client
    /// broke the protocol: the upstream's frames still in flight reach the
    /// client, and its close answer is replaced by weir's 1002.
    client_broke: AtomicBool,
    /// ms since `epoch` of the last byte from the client.
    client_seen: AtomicU64,
    epoch: Instant,
    /// µs since `epoch` (+1) when weir's outstanding probe ping was sent; 0: none.
    probe_sent: AtomicU64,
    rtt: Option<RttSink<'a>>,
}

impl Shared<'_> {
    fn client_idle(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.client_seen.load(Ordering::Relaxed)))
    }
}

/// A ticking interval that lets ticks it missed go (no bursts).
fn every(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// The next tick of `i`; never, when there is no interval.
async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn mask() -> [u8; 4] {
    rand::random()
}

/// Relay until both sides are done; returns why the socket closed.
/// Round trips of weir's probe pings to the upstream go to `rtt`.
pub async fn relay<C: Endpoint, U: Endpoint>(
    client: C,
    upstream: U,
    signal: &watch::Sender<Signal>,
    settings: &Settings,
    rtt: Option<RttSink<'_>>,
) -> CloseWhy {
    let (cr, cw) = client.halves();
    let (ur, uw) = upstream.halves();
    let shared = Shared {
        first_close: AtomicU8::new(FIRST_NONE),
        client_broke: AtomicBool::new(false),
        client_seen: AtomicU64::new(0),
        epoch: Instant::now(),
        probe_sent: AtomicU64::new(0),
        rtt,
    };
    let c2u = pump(cr, uw, Dir::ToUpstream, signal.subscribe(), &shared, settings);
    let u2c = pump(ur, cw, Dir::ToClient, signal.subscribe(), &shared, settings);
    let (mut c2u, mut u2c) = (std::pin::pin!(c2u), std::pin::pin!(u2c));
    let (side, end) = tokio::select! {
        e = &mut c2u => (Dir::ToUpstream, e),
        e = &mut u2c => (Dir::ToClient, e),
    };
    let why = match (end, shared.first_close.load(Ordering::Relaxed), side) {
        // A client's broken frame is the client's doing; an upstream's
        // counts against its version.
        (End::Protocol, _, Dir::ToUpstream) => CloseWhy::Client,
        (End::Protocol, _, Dir::ToClient) => CloseWhy::Error,
        (End::Closed, _, _) => match *signal.borrow() {
            Signal::Close { why, .. } => why,
            Signal::Open => CloseWhy::Error,
        },
        (End::Idle, _, _) => CloseWhy::Client,
        (_, FIRST_CLIENT, _) => CloseWhy::Client,
        (_, FIRST_UPSTREAM, _) => CloseWhy::Upstream,
        (End::SrcGone, _, Dir::ToUpstream) | (End::DstGone, _, Dir::ToClient) => CloseWhy::Client,
        (End::SrcGone, _, Dir::ToClient) | (End::DstGone, _, Dir::ToUpstream) => CloseWhy::Error,
    };
    // Ask the other direction to finish too (a no-op if it already is).
    if end != End::Closed {
        // The side that broke the protocol hears 1002 (RFC 6455 §7.4.1).
        let code = match (end, why) {
            (End::Protocol, _) => PROTOCOL_ERROR,
            (_, CloseWhy::Error) => 1011,
            _ => 1001,
        };
        signal.send_if_modified(|s| match s {
            Signal::Open => {
                *s = Signal::Close { code, why };
                true
            }
            Signal::Close { .. } => false,
        });
    }
    let other = async {
        match side {
            Dir::ToUpstream => u2c.await,
            Dir::ToClient => c2u.await,
        }
    };
    let _ = tokio::time::timeout(BOUNDARY_WAIT + CLOSE_WAIT * 2, other).await;
    why
}

/// Copy `src` to `dst`, tracking frames; on a close signal, write a close
/// frame at the next boundary and drain `src` until its close answer.
async fn pump<R, W>(
    src: R,
    dst: W,
    dir: Dir,
    signal: watch::Receiver<Signal>,
    shared: &Shared<'_>,
    settings: &Settings,
) -> End
where
    R: Source,
    W: AsyncWrite + Unpin,
{
    let mut p = Pump::new(src, dst, dir, signal, shared, settings);
    let end = loop {
        if let ControlFlow::Break(end) = p.close_pending_at_boundary().await {
            break end;
        }
        let step = tokio::select! {
            changed = p.signal.changed(), if p.pending.is_none() => p.signal_changed(changed),
            // The upstream did not answer weir's close in time: close the
            // client at the next boundary anyway.
            _ = tokio::time::sleep_until(p.await_peer_close.unwrap_or(p.close_by)), if p.await_peer_close.is_some() => {
                p.stop_awaiting_peer_close()
            }
            // A peer stopped mid-frame: give up on a clean close.
            _ = tokio::time::sleep_until(p.close_by), if p.pending.is_some() => ControlFlow::Break(End::DstGone),
            _ = tick(&mut p.ticker), if p.pending.is_none() && p.ticker.is_some() => p.idle_or_ping_due().await,
            _ = tick(&mut p.prober), if p.pending.is_none() && p.prober.is_some() => p.probe_due().await,
            read = p.src.fill(&mut p.buf, p.held) => p.forward(read).await,
        };
        if let ControlFlow::Break(end) = step {
            break end;
        }
    };
    p.finish(end).await
}

/// One direction's state from one step of its loop to the next.
struct Pump<'s, R, W> {
    src: R,
    dst: W,
    signal: watch::Receiver<Signal>,
    shared: &'s Shared<'s>,
    settings: &'s Settings,
    to_upstream: bool,
    /// Taken when bytes arrive (see `Source::fill`).
    buf: Vec<u8>,
    frames: FrameTracker,
    /// weir's own close (code, reason), waiting for a frame boundary.
    pending: Option<(u16, &'static str)>,
    /// When a pending close gives up on a clean close.
    close_by: Instant,
    /// Client → upstream watches for idleness (checked four times per
    /// timeout); upstream → client pings a quiet client. None: off.
    ticker: Option<tokio::time::Interval>,
    /// Client → upstream also carries weir's round-trip probes. None: off.
    prober: Option<tokio::time::Interval>,
    probe_every: Duration,
    /// Reads in a row that would have fit in `BUF`.
    small_reads: u32,
    /// Bytes read past a boundary where we stopped to close.
    leftover: Vec<u8>,
    /// The start of a frame header not yet whole, kept at the front of `buf`
    /// and fed again with the next read: only whole, checked headers are
    /// forwarded, so the destination is always between frames when a frame
    /// of weir's own (close, ping) or a refusal comes.
    held: usize,
    /// Upstream → client after the client broke the protocol: the close to
    /// the client waits (at most CLOSE_WAIT) for the upstream's close answer,
    /// so the replies it sends before that still arrive.
    await_peer_close: Option<Instant>,
    /// The source's close frame was seen (and replaced): nothing to drain.
    answered: bool,
}

impl<'s, R, W> Pump<'s, R, W>
where
    R: Source,
    W: AsyncWrite + Unpin,
{
    fn new(
        src: R,
        dst: W,
        dir: Dir,
        signal: watch::Receiver<Signal>,
        shared: &'s Shared<'s>,
        settings: &'s Settings,
    ) -> Self {
        let to_upstream = dir == Dir::ToUpstream;
        // Zero turns either timer off.
        let period = if to_upstream { settings.idle_timeout / 4 } else { settings.ping_interval };
        let timer_on = !period.is_zero();
        let period = period.max(Duration::from_millis(50));
        let probing = to_upstream && !settings.rtt_interval.is_zero() && shared.rtt.is_some();
        let probe_every = settings.rtt_interval.max(Duration::from_millis(100));
        Pump {
            src,
            dst,
            signal,
            shared,
            settings,
            to_upstream,
            buf: Vec::new(),
            frames: FrameTracker::default(),
            pending: None,
            close_by: Instant::now() + Duration::from_secs(86_400),
            ticker: timer_on.then(|| every(period)),
            prober: probing.then(|| every(probe_every)),
            probe_every,
            small_reads: 0,
            leftover: Vec::new(),
            held: 0,
            await_peer_close: None,
            answered: false,
        }
    }

    /// The mask for a frame of weir's own: only client → upstream masks.
    fn key(&self) -> Option<[u8; 4]> {
        self.to_upstream.then(mask)
    }

    /// Write a close frame of weir's own and flush; a failure changes nothing.
    async fn send_close(&mut self, code: u16, reason: &str) {
        let _ = self.dst.write_all(&close_frame(code, reason, self.key())).await;
        let _ = self.dst.flush().await;
    }

    /// A close is pending, the destination is between frames and no close
    /// answer is awaited (any more): write it and end.
    async fn close_pending_at_boundary(&mut self) -> ControlFlow<End> {
        if let Some((code, reason)) = self.pending
            && self.frames.at_boundary()
            && self.await_peer_close.is_none_or(|by| Instant::now() >= by)
        {
            self.leftover.extend_from_slice(&self.buf[..self.held]);
            self.send_close(code, reason).await;
            return ControlFlow::Break(End::Closed);
        }
        ControlFlow::Continue(())
    }

    /// The close signal changed: a close becomes pending, with its deadlines.
    fn signal_changed(&mut self, changed: Result<(), watch::error::RecvError>) -> ControlFlow<End> {
        if changed.is_err() {
            return ControlFlow::Break(End::SrcGone);
        }
        if let Signal::Close { code, why } = *self.signal.borrow_and_update() {
            let reason = if code == PROTOCOL_ERROR { "weir: protocol error" } else { why.reason_text() };
            self.pending = Some((code, reason));
            self.close_by = Instant::now() + BOUNDARY_WAIT;
            if !self.to_upstream && self.shared.client_broke.load(Ordering::Relaxed) {
                self.await_peer_close = Some(Instant::now() + CLOSE_WAIT);
                self.close_by += CLOSE_WAIT;
            }
        }
        ControlFlow::Continue(())
    }

    fn stop_awaiting_peer_close(&mut self) -> ControlFlow<End> {
        self.await_peer_close = None;
        ControlFlow::Continue(())
    }

    /// Client → upstream: close a client idle for the timeout; upstream →
    /// client: ping a quiet client.
    async fn idle_or_ping_due(&mut self) -> ControlFlow<End> {
        if self.to_upstream {
            if self.shared.client_idle() >= self.settings.idle_timeout && self.frames.at_boundary() {
                let _ = self.dst.write_all(&close_frame(1001, "weir: idle timeout", self.key())).await;
                return ControlFlow::Break(End::Idle);
            }
        } else if self.shared.client_idle() >= self.settings.ping_interval
            && self.frames.at_boundary()
            && self.dst.write_all(&ping_frame(b"weir", None)).await.is_err()
        {
            // Keepalive: the client's pong goes on to the upstream,
            // where an unsolicited pong is allowed (RFC 6455 §5.5.3).
            return ControlFlow::Break(End::DstGone);
        }
        ControlFlow::Continue(())
    }

    /// Send a round-trip probe to the upstream, unless one is out: one at a
    /// time; one unanswered for 4 periods is lost.
    async fn probe_due(&mut self) -> ControlFlow<End> {
        let shared = self.shared;
        let now_us = shared.epoch.elapsed().as_micros() as u64 + 1;
        let sent = shared.probe_sent.load(Ordering::Relaxed);
        let lost = sent != 0 && now_us.saturating_sub(sent) > 4 * self.probe_every.as_micros() as u64;
        if (sent == 0 || lost) && self.frames.at_boundary() {
            if self.dst.write_all(&ping_frame(RTT_PAYLOAD, self.key())).await.is_err()
                || self.dst.flush().await.is_err()
            {
                return ControlFlow::Break(End::DstGone);
            }
            shared.probe_sent.store(shared.epoch.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
        }
        ControlFlow::Continue(())
    }

    /// A read from the source: forward what may go on, in one write.
    async fn forward(&mut self, read: std::io::Result<usize>) -> ControlFlow<End> {
        let n = match read {
            Ok(0) | Err(_) => return ControlFlow::Break(self.source_gone().await),
            Ok(n) => self.held + n,
        };
        self.size_buffer(n);
        self.held = 0;
        if self.to_upstream {
            self.shared.client_seen.store(self.shared.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        let (upto, end) = self.scan(n);
        if end.is_none() && self.leftover.is_empty() {
            self.held = self.frames.take_partial_header();
        }
        if self.dst.write_all(&self.buf[..upto - self.held]).await.is_err() {
            return ControlFlow::Break(End::DstGone);
        }
        self.buf.copy_within(upto - self.held..upto, 0);
        if self.answered {
            // Upstream → client only, so unmasked.
            self.send_close(PROTOCOL_ERROR, "weir: protocol error").await;
            return ControlFlow::Break(End::Closed);
        }
        if let Some(e) = end {
            return ControlFlow::Break(self.refuse_broken(e).await);
        }
        if self.dst.flush().await.is_err() {
            return ControlFlow::Break(End::DstGone);
        }
        self.shrink_when_chatty();
        ControlFlow::Continue(())
    }

    /// The source is gone without a close frame: tell the other side properly.
    async fn source_gone(&mut self) -> End {
        if self.frames.at_boundary() && self.shared.first_close.load(Ordering::Relaxed) == FIRST_NONE {
            let (code, reason) =
                if self.to_upstream { (1001, "weir: client gone") } else { (1011, "weir: upstream failed") };
            self.send_close(code, reason).await;
        }
        End::SrcGone
    }

    /// A read of `n` bytes that filled the buffer grows it (bulk); count the
    /// reads that would have fit in `BUF`.
    fn size_buffer(&mut self, n: usize) {
        let grown = self.buf.len();
        if n == grown && grown < BUF_BULK {
            self.buf.resize((grown * 8).min(BUF_BULK), 0);
        }
        self.small_reads = if grown > BUF && n <= BUF { self.small_reads + 1 } else { 0 };
    }

    /// Chatty again after a burst: give the big buffer back (what is kept is
    /// at most a partial frame header).
    fn shrink_when_chatty(&mut self) {
        if self.small_reads >= SMALL_READS_TO_SHRINK {
            self.buf.truncate(BUF.max(self.held));
            self.buf.shrink_to_fit();
            self.small_reads = 0;
        }
    }

    /// How much of `buf[..n]` to forward: all of it, unless a close of our
    /// own is waiting for the frame in flight to end (then up to that end),
    /// or the stream stops being WebSocket (then the valid prefix, and why).
    fn scan(&mut self, n: usize) -> (usize, Option<End>) {
        let mut upto = 0;
        while upto < n {
            let start = upto;
            let began = self.frames.at_boundary();
            let Ok(step) = self.frames.consume(&self.buf[upto..n]) else {
                return (upto, Some(End::Protocol));
            };
            upto += step.used;
            if began && self.is_close_answer_to_replace(step) {
                // The client hears 1002 in its place (the frames before it went on).
                self.answered = true;
                return (start, Some(End::Closed));
            }
            if step.frame_end == Some(OP_PONG) && !self.to_upstream {
                self.time_probe();
            }
            if step.frame_end == Some(OP_CLOSE) {
                let my_close = if self.to_upstream { FIRST_CLIENT } else { FIRST_UPSTREAM };
                let first = &self.shared.first_close;
                let _ = first.compare_exchange(FIRST_NONE, my_close, Ordering::Relaxed, Ordering::Relaxed);
            }
            if step.frame_end.is_some() && self.pending.is_some() && self.await_peer_close.is_none() {
                // Our close frame goes here; what follows is not forwarded.
                self.leftover.extend_from_slice(&self.buf[upto..n]);
                break;
            }
        }
        (upto, None)
    }

    /// The frame starting at `step` is the upstream's answer to the close
    /// weir sent it after the client broke the protocol.
    fn is_close_answer_to_replace(&self, step: Consumed) -> bool {
        !self.to_upstream
            && step.frame_end.or(self.frames.opcode()) == Some(OP_CLOSE)
            && self.shared.client_broke.load(Ordering::Relaxed)
    }

    /// The upstream's pong to weir's probe (a pong that answers the client's
    /// own ping while a probe is out is taken for it: either way it times
    /// the upstream).
    fn time_probe(&self) {
        let shared = self.shared;
        let sent = shared.probe_sent.swap(0, Ordering::Relaxed);
        if let (Some(sink), true) = (shared.rtt, sent != 0) {
            let now_us = shared.epoch.elapsed().as_micros() as u64 + 1;
            sink(Duration::from_micros(now_us.saturating_sub(sent)));
        }
    }

    /// The frames before the broken one went on; the destination hears why
    /// nothing more will come.
    async fn refuse_broken(&mut self, end: End) -> End {
        if self.to_upstream {
            self.shared.client_broke.store(true, Ordering::Relaxed);
        }
        let (code, reason) = if self.to_upstream {
            (1001, "weir: client broke the WebSocket protocol")
        } else {
            (1011, "weir: upstream broke the WebSocket protocol")
        };
        self.send_close(code, reason).await;
        end
    }

    /// After our close (or idle close), drain the source until its answer;
    /// then shut the destination.
    async fn finish(mut self, end: End) -> End {
        if (end == End::Closed || end == End::Idle) && !self.answered {
            drain(&mut self.src, &mut self.buf, self.frames, &self.leftover).await;
        }
        let _ = self.dst.shutdown().await;
        end
    }
}

/// After our close frame: read and discard until the source's own close
/// frame, EOF or `CLOSE_WAIT`.
async fn drain<R: Source>(src: &mut R, buf: &mut Vec<u8>, mut frames: FrameTracker, leftover: &[u8]) {
    let saw_close = |frames: &mut FrameTracker, mut data: &[u8]| {
        while !data.is_empty() {
            match frames.consume(data) {
                Ok(s) if s.frame_end == Some(OP_CLOSE) => return true,
                Ok(s) => data = &data[s.used..],
                Err(_) => return true,
            }
        }
        false
    };
    if saw_close(&mut frames, leftover) {
        return;
    }
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, src.fill(buf, 0)).await {
            Ok(Ok(n)) if n > 0 => {
                if saw_close(&mut frames, &buf[..n]) {
                    return;
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests;
