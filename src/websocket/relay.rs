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

use super::frame::{FrameTracker, OP_CLOSE, OP_PONG, close_frame, ping_frame};
use super::io::{BUF, Endpoint, Source};
use super::{CloseWhy, Signal};
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
    mut src: R,
    mut dst: W,
    dir: Dir,
    mut signal: watch::Receiver<Signal>,
    shared: &Shared<'_>,
    settings: &Settings,
) -> End
where
    R: Source,
    W: AsyncWrite + Unpin,
{
    // Taken when bytes arrive (see `Source::fill`).
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = FrameTracker::default();
    let mut pending: Option<(u16, &'static str)> = None;
    let mut close_by = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let to_upstream = dir == Dir::ToUpstream;
    let key = || to_upstream.then(mask);
    let my_close = if to_upstream { FIRST_CLIENT } else { FIRST_UPSTREAM };
    // Client → upstream watches for idleness (checked four times per
    // timeout); upstream → client pings a quiet client. Zero turns either off.
    let period = if to_upstream { settings.idle_timeout / 4 } else { settings.ping_interval };
    let timer_on = !period.is_zero();
    let period = period.max(Duration::from_millis(50));
    let mut ticker = timer_on.then(|| every(period));
    // Client → upstream also carries weir's round-trip probes.
    let probing = to_upstream && !settings.rtt_interval.is_zero() && shared.rtt.is_some();
    let probe_every = settings.rtt_interval.max(Duration::from_millis(100));
    let mut prober = probing.then(|| every(probe_every));
    // Reads in a row that would have fit in `BUF`.
    let mut small_reads = 0u32;
    // Bytes read past a boundary where we stopped to close.
    let mut leftover: Vec<u8> = Vec::new();
    // The start of a frame header not yet whole, kept at the front of `buf`
    // and fed again with the next read: only whole, checked headers are
    // forwarded, so the destination is always between frames when a frame
    // of weir's own (close, ping) or a refusal comes.
    let mut held = 0;
    // Upstream → client after the client broke the protocol: the close to
    // the client waits (at most CLOSE_WAIT) for the upstream's close answer,
    // so the replies it sends before that still arrive.
    let mut await_peer_close: Option<Instant> = None;
    // The source's close frame was seen (and replaced): nothing to drain.
    let mut answered = false;
    let end = loop {
        if let Some((code, reason)) = pending
            && frames.at_boundary()
            && await_peer_close.is_none_or(|by| Instant::now() >= by)
        {
            leftover.extend_from_slice(&buf[..held]);
            let _ = dst.write_all(&close_frame(code, reason, key())).await;
            let _ = dst.flush().await;
            break End::Closed;
        }
        tokio::select! {
            changed = signal.changed(), if pending.is_none() => {
                if changed.is_err() {
                    break End::SrcGone;
                }
                if let Signal::Close { code, why } = *signal.borrow_and_update() {
                    let reason = if code == PROTOCOL_ERROR { "weir: protocol error" } else { why.reason_text() };
                    pending = Some((code, reason));
                    close_by = tokio::time::Instant::now() + BOUNDARY_WAIT;
                    if !to_upstream && shared.client_broke.load(Ordering::Relaxed) {
                        await_peer_close = Some(Instant::now() + CLOSE_WAIT);
                        close_by += CLOSE_WAIT;
                    }
                }
            }
            // The upstream did not answer weir's close in time: close the
            // client at the next boundary anyway.
            _ = tokio::time::sleep_until(await_peer_close.unwrap_or(close_by)), if await_peer_close.is_some() => {
                await_peer_close = None;
            }
            // A peer stopped mid-frame: give up on a clean close.
            _ = tokio::time::sleep_until(close_by), if pending.is_some() => break End::DstGone,
            _ = tick(&mut ticker), if pending.is_none() && timer_on => {
                if to_upstream {
                    if shared.client_idle() >= settings.idle_timeout && frames.at_boundary() {
                        let _ = dst.write_all(&close_frame(1001, "weir: idle timeout", key())).await;
                        break End::Idle;
                    }
                } else if shared.client_idle() >= settings.ping_interval
                    && frames.at_boundary()
                    && dst.write_all(&ping_frame(b"weir", None)).await.is_err()
                {
                    // Keepalive: the client's pong goes on to the upstream,
                    // where an unsolicited pong is allowed (RFC 6455 §5.5.3).
                    break End::DstGone;
                }
            }
            _ = tick(&mut prober), if pending.is_none() && probing => {
                // One probe at a time; one unanswered for 4 periods is lost.
                let now_us = shared.epoch.elapsed().as_micros() as u64 + 1;
                let sent = shared.probe_sent.load(Ordering::Relaxed);
                let lost = sent != 0 && now_us.saturating_sub(sent) > 4 * probe_every.as_micros() as u64;
                if (sent == 0 || lost) && frames.at_boundary() {
                    if dst.write_all(&ping_frame(RTT_PAYLOAD, key())).await.is_err() || dst.flush().await.is_err() {
                        break End::DstGone;
                    }
                    shared.probe_sent.store(shared.epoch.elapsed().as_micros() as u64 + 1, Ordering::Relaxed);
                }
            }
            read = src.fill(&mut buf, held) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        // Gone without a close frame: tell the other side properly.
                        if frames.at_boundary() && shared.first_close.load(Ordering::Relaxed) == FIRST_NONE {
                            let (code, reason) =
                                if to_upstream { (1001, "weir: client gone") } else { (1011, "weir: upstream failed") };
                            let _ = dst.write_all(&close_frame(code, reason, key())).await;
                            let _ = dst.flush().await;
                        }
                        break End::SrcGone;
                    }
                    Ok(n) => held + n,
                };
                let grown = buf.len();
                if n == grown && grown < BUF_BULK {
                    buf.resize((grown * 8).min(BUF_BULK), 0);
                }
                small_reads = if grown > BUF && n <= BUF { small_reads + 1 } else { 0 };
                held = 0;
                if to_upstream {
                    shared.client_seen.store(shared.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                // Find how much to forward: all of it, unless a close of our
                // own is waiting for the frame in flight to end (then up to
                // that end), or the stream stops being WebSocket (then the
                // valid prefix). One write per read, however many frames.
                let mut upto = 0;
                let mut end = None;
                while upto < n {
                    let start = upto;
                    let began = frames.at_boundary();
                    let Ok(step) = frames.consume(&buf[upto..n]) else {
                        end = Some(End::Protocol);
                        break;
                    };
                    upto += step.used;
                    if began
                        && !to_upstream
                        && step.frame_end.or(frames.opcode()) == Some(OP_CLOSE)
                        && shared.client_broke.load(Ordering::Relaxed)
                    {
                        // The upstream's answer to weir's close: the client
                        // hears 1002 in its place (the frames before it went on).
                        upto = start;
                        end = Some(End::Closed);
                        answered = true;
                        break;
                    }
                    if step.frame_end == Some(OP_PONG) && !to_upstream {
                        // The upstream's pong to weir's probe (a pong that
                        // answers the client's own ping while a probe is out
                        // is taken for it: either way it times the upstream).
                        let sent = shared.probe_sent.swap(0, Ordering::Relaxed);
                        if let (Some(sink), true) = (shared.rtt, sent != 0) {
                            let now_us = shared.epoch.elapsed().as_micros() as u64 + 1;
                            sink(Duration::from_micros(now_us.saturating_sub(sent)));
                        }
                    }
                    if step.frame_end == Some(OP_CLOSE) {
                        let _ = shared.first_close.compare_exchange(
                            FIRST_NONE, my_close, Ordering::Relaxed, Ordering::Relaxed,
                        );
                    }
                    if step.frame_end.is_some() && pending.is_some() && await_peer_close.is_none() {
                        // Our close frame goes here; what follows is not forwarded.
                        leftover.extend_from_slice(&buf[upto..n]);
                        break;
                    }
                }
                if end.is_none() && leftover.is_empty() {
                    held = frames.take_partial_header();
                }
                if dst.write_all(&buf[..upto - held]).await.is_err() {
                    break End::DstGone;
                }
                buf.copy_within(upto - held..upto, 0);
                if answered {
                    let _ = dst.write_all(&close_frame(PROTOCOL_ERROR, "weir: protocol error", None)).await;
                    let _ = dst.flush().await;
                    break End::Closed;
                }
                if let Some(e) = end {
                    // The frames before the broken one went on; the
                    // destination hears why nothing more will come.
                    if to_upstream {
                        shared.client_broke.store(true, Ordering::Relaxed);
                    }
                    let (code, reason) = if to_upstream {
                        (1001, "weir: client broke the WebSocket protocol")
                    } else {
                        (1011, "weir: upstream broke the WebSocket protocol")
                    };
                    let _ = dst.write_all(&close_frame(code, reason, key())).await;
                    let _ = dst.flush().await;
                    break e;
                }
                if dst.flush().await.is_err() {
                    break End::DstGone;
                }
                if small_reads >= SMALL_READS_TO_SHRINK {
                    // Chatty again after a burst: give the big buffer back
                    // (what is kept is at most a partial frame header).
                    buf.truncate(BUF.max(held));
                    buf.shrink_to_fit();
                    small_reads = 0;
                }
            }
        }
    };
    if (end == End::Closed || end == End::Idle) && !answered {
        drain(&mut src, &mut buf, frames, &leftover).await;
    }
    let _ = dst.shutdown().await;
    end
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
