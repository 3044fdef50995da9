//! Bodies crossing the upstream boundary.
//!
//! `ReqBody` streams the client's body to the upstream, enforcing
//! `max_request_body` when the length was not known up front and counting
//! bytes for the access log. `PooledBody` streams the upstream's response and
//! returns the connection to its endpoint's idle stack only once the body
//! has been read to the end; dropped early, the connection is closed.

use super::pool::{Busy, Endpoint};
use super::wire::{self, Connection, Piece, RespFraming};
use crate::labels::Unsolicited;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use super::error::{BodyTimeout, BodyTooLarge, BoxError, ClientBody, UpstreamError};

/// Request body sent upstream.
pub struct ReqBody {
    inner: Option<Incoming>,
    /// A body held whole (shadow copies).
    full: Option<Bytes>,
    limit: u64,
    seen: u64,
    /// Shared with the access log; only allocated when a body is present.
    counter: Option<Arc<AtomicU64>>,
    /// Copies being kept as the body streams (a shadow's, a retry's).
    tees: Vec<Tee>,
    /// Slow-body guard: reset on every frame, fires after `idle`.
    idle: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// What to do with what is left of it when the answer ends first.
    leftover: wire::Leftover,
    /// A gRPC call's messages, counted as they pass (streaming or unary).
    grpc: Option<Box<(crate::grpc::Messages, Arc<std::sync::atomic::AtomicU32>)>>,
}

/// A copy of the body as it streams by, for a shadow request or a retry.
/// The copy costs a reference count per chunk; the primary is never held
/// back. Over `max` bytes, or if the body fails or is abandoned, the copy
/// is dropped (the receiver sees the sender go away).
pub struct Tee {
    chunks: Vec<Bytes>,
    size: u64,
    max: u64,
    /// A copy to send again as the request itself (a retry): a body with
    /// trailers cannot be, so the copy is dropped when trailers come.
    exact: bool,
    done: tokio::sync::oneshot::Sender<Bytes>,
}

impl Tee {
    pub fn new(max: u64) -> (Self, tokio::sync::oneshot::Receiver<Bytes>) {
        let (done, rx) = tokio::sync::oneshot::channel();
        (Self { chunks: Vec::new(), size: 0, max, exact: false, done }, rx)
    }

    /// A copy for replaying the request: whole data, no trailers.
    pub fn exact(max: u64) -> (Self, tokio::sync::oneshot::Receiver<Bytes>) {
        let (mut tee, rx) = Self::new(max);
        tee.exact = true;
        (tee, rx)
    }

    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        let _ = self.done.send(body);
    }
}

impl ReqBody {
    /// Count the gRPC messages the body carries into `count` as it streams.
    pub fn with_grpc_count(mut self, count: Arc<std::sync::atomic::AtomicU32>) -> Self {
        self.grpc = Some(Box::new((crate::grpc::Messages::default(), count)));
        self
    }

    pub fn empty() -> Self {
        Self {
            inner: None,
            full: None,
            limit: 0,
            seen: 0,
            counter: None,
            tees: Vec::new(),
            idle: None,
            leftover: wire::Leftover::Drain,
            grpc: None,
        }
    }

    /// The client's body, cut after `idle` without data and at `limit` bytes.
    pub fn new(inner: Incoming, limit: u64, idle: std::time::Duration, counter: Option<Arc<AtomicU64>>) -> Self {
        let sleep = Box::pin(tokio::time::sleep(idle));
        Self {
            inner: Some(inner),
            full: None,
            limit,
            seen: 0,
            counter,
            tees: Vec::new(),
            idle: Some((idle, sleep)),
            leftover: wire::Leftover::Drain,
            grpc: None,
        }
    }

    /// A body already in memory.
    pub fn full(body: Bytes) -> Self {
        let full = (!body.is_empty()).then_some(body);
        Self {
            inner: None,
            full,
            limit: u64::MAX,
            seen: 0,
            counter: None,
            tees: Vec::new(),
            idle: None,
            leftover: wire::Leftover::Drain,
            grpc: None,
        }
    }

    /// The body of an HTTP/2 request: when the upstream's answer ends
    /// before it, the rest is not drained but the stream reset with
    /// NO_ERROR (RFC 9113 §8.1), so the client stops sending at once.
    pub fn over_h2(mut self) -> Self {
        self.leftover = wire::Leftover::Reset;
        self
    }

    pub(super) fn leftover(&self) -> wire::Leftover {
        self.leftover
    }

    /// Copy the body into `tee` as it streams.
    pub fn with_tee(mut self, tee: Tee) -> Self {
        if self.inner.is_none() {
            tee.finish();
        } else {
            self.tees.push(tee);
        }
        self
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(b) = this.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if let Some((every, sleep)) = this.idle.as_mut() {
            if polled.is_pending() {
                if sleep.as_mut().poll(cx).is_ready() {
                    this.tees.clear();
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
            } else {
                sleep.as_mut().reset(tokio::time::Instant::now() + *every);
            }
        }
        match ready!(polled) {
            None => {
                this.tees.drain(..).for_each(Tee::finish);
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                this.tees.clear();
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if let Some(g) = this.grpc.as_mut() {
                        g.0.feed(data);
                        g.1.store(g.0.count(), Ordering::Relaxed);
                    }
                    this.seen = this.seen.saturating_add(n);
                    if let Some(c) = &this.counter {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    if this.seen > this.limit {
                        this.tees.clear();
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.tees.retain_mut(|t| {
                        t.size = t.size.saturating_add(n);
                        t.chunks.push(data.clone());
                        t.size <= t.max
                    });
                } else if frame.is_trailers() {
                    this.tees.retain(|t| !t.exact);
                }
                // hyper stops polling once the body says it has ended.
                if inner.is_end_stream() {
                    this.tees.drain(..).for_each(Tee::finish);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.full, &self.inner) {
            (Some(b), _) => SizeHint::with_exact(b.len() as u64),
            (None, Some(i)) => i.size_hint(),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

/// Response body from an upstream. A body read by weir's own exchange
/// (`wire`) gives its connection back to the endpoint once read to the end
/// and nothing stray follows; dropped early or broken, the connection is
/// closed. A WebSocket handshake's answer comes from hyper and is never
/// pooled.
pub enum PooledBody {
    /// Read from weir's own connection, which goes back to the pool after it.
    Own(ConnectionBody),
    Detached(Incoming),
    /// A stream of an HTTP/2 upstream connection (trailers included); the
    /// stream and the request count as in flight until it ends or is dropped.
    H2(Incoming, (super::h2::Stream, Busy)),
}

pub struct ConnectionBody {
    wire: Option<Connection>,
    framing: RespFraming,
    /// A chunked body's trailer fields, gathered until its end.
    trailers: Option<Box<http::HeaderMap>>,
    endpoint: Arc<Endpoint>,
    /// The request counts as in flight on its endpoint until this body
    /// ends or is dropped.
    busy: Option<Busy>,
    /// The exchange allows another request on this connection.
    keep_alive: bool,
    /// A read failure held back for one turn, so the bytes already handed
    /// out (and the response head) reach the client before it is cut off.
    failed: Option<wire::BodyError>,
    /// Longest the body may stall (`body_timeout`).
    idle: std::time::Duration,
    /// Armed on the first read that has to wait (most bodies never do, so
    /// most never allocate it); pushed back by every piece of body.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PooledBody {
    pub(super) fn wire(
        wire: Connection,
        framing: RespFraming,
        (endpoint, busy): (Arc<Endpoint>, Busy),
        keep_alive: bool,
        idle: std::time::Duration,
    ) -> Self {
        let mut b = ConnectionBody {
            wire: Some(wire),
            framing,
            trailers: None,
            endpoint,
            busy: Some(busy),
            keep_alive,
            failed: None,
            idle,
            timer: None,
        };
        b.release_if_done();
        PooledBody::Own(b)
    }

    pub(super) fn h2(inner: Incoming, stream: super::h2::Stream, busy: Busy) -> Self {
        PooledBody::H2(inner, (stream, busy))
    }

    /// A body whose connection must not be reused (after a 101).
    pub(super) fn detached(inner: Incoming) -> Self {
        PooledBody::Detached(inner)
    }
}

impl ConnectionBody {
    /// At the body's end: back to the pool when the framing allows it and
    /// nothing was read past the end; bytes past the end (a second response,
    /// a body after a HEAD) close the connection and are counted.
    fn release_if_done(&mut self) {
        if self.framing != RespFraming::Done {
            return;
        }
        let Some(wire) = self.wire.take() else { return };
        self.busy = None;
        let stray = wire::bytes_after_body(&wire);
        if stray > 0 {
            self.endpoint.note_unsolicited(Unsolicited::AfterResponse, stray);
        } else if self.keep_alive && wire.is_whole() {
            self.endpoint.put(wire);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            PooledBody::Detached(inner) | PooledBody::H2(inner, _) => {
                Pin::new(inner).poll_frame(cx).map(|f| f.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
            }
            PooledBody::Own(b) => {
                if let Some(e) = b.failed.take() {
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                let Some(wire) = b.wire.as_mut() else { return Poll::Ready(None) };
                let polled = match wire::poll_body(wire, &mut b.framing, &mut b.trailers, cx) {
                    Poll::Pending => {
                        let idle = b.idle;
                        let timer = b.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        Err(wire::BodyError::Idle(idle))
                    }
                    Poll::Ready(r) => r,
                };
                if let (Ok(Piece::Data(_)), Some(t)) = (&polled, b.timer.as_mut()) {
                    t.as_mut().reset(tokio::time::Instant::now() + b.idle);
                }
                match polled {
                    Ok(Piece::Data(data)) => {
                        b.release_if_done();
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(Piece::Trailers(t)) => {
                        b.release_if_done();
                        Poll::Ready(Some(Ok(Frame::trailers(t))))
                    }
                    Ok(Piece::End) => {
                        b.release_if_done();
                        Poll::Ready(None)
                    }
                    Err(e) => {
                        // Broken mid-body: never reuse this connection. The
                        // error is reported on the next poll; hyper flushes
                        // what it has in between.
                        b.wire = None;
                        b.busy = None;
                        b.endpoint.failed();
                        b.failed = Some(e);
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Detached(inner) | PooledBody::H2(inner, _) => inner.is_end_stream(),
            PooledBody::Own(b) => b.framing == RespFraming::Done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Detached(inner) | PooledBody::H2(inner, _) => inner.size_hint(),
            PooledBody::Own(b) => match b.framing {
                RespFraming::Done => SizeHint::with_exact(0),
                RespFraming::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}

/// Read a body declared empty to its end; any data in it is an error. The
/// body's own stall guard (`body_timeout`) bounds the wait.
pub async fn expect_empty(mut body: ReqBody) -> Result<(), UpstreamError> {
    use http_body::Body as _;
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            None => return Ok(()),
            Some(Err(e)) => return Err(wire::body_error(e)),
            Some(Ok(frame)) if frame.data_ref().is_some_and(|d| !d.is_empty()) => {
                return Err(UpstreamError::ClientBody(ClientBody::DataOnEmpty));
            }
            Some(Ok(_)) => {}
        }
    }
}
