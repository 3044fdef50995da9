//! The upstream leg's HTTP/1.1 exchange, run inside the request's own task.
//!
//! hyper's client drives every connection from a separate task and hands
//! requests, responses and body chunks across channels; for a proxy that
//! sends one request per connection at a time that is two task switches and
//! three channels per request. Here the request task writes the head, streams
//! the body, reads the response head and hands the connection to the response
//! body, which reads it to the end and puts the connection back in the pool.
//!
//! What it does (RFC 9112): request framing by `Content-Length` (passed
//! through) or chunked (re-framed); response framing by HEAD/1xx/204/304 (no
//! body), `Transfer-Encoding` (chunked last, else read to close),
//! `Content-Length` (one value, or identical repeats), else read to close;
//! interim 1xx responses skipped; `Connection: close` and HTTP/1.0 answers
//! end the connection. The response is read while the request body is still
//! being sent, so an upstream that answers early (413, 401) is heard.
//! WebSocket handshakes do not come here (hyper's client does the upgrade).
//!
//! The socket is plain TCP or TLS over TCP (`Stream`); the exchange is the
//! same on both, and the reuse checks look at the TCP socket under either.

use super::error::{BoxError, Malformed};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod stream;
pub use stream::Stream;
use stream::peek_stream;

/// Largest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Interim (1xx) responses accepted before the final one. Each is skipped;
/// an upstream sending an endless stream of them would otherwise keep a
/// core busy until `request_timeout`.
pub const MAX_INTERIM: usize = 16;
/// Longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// First read size; bodies read in larger pieces (see `read_more`).
const HEAD_READ: usize = 4 * 1024;
/// Read buffer an idle connection may keep.
const KEEP_IDLE: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;

/// What `Connection::idle_state` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleState {
    /// Nothing waiting: the connection may carry the next request.
    Quiet,
    /// The upstream closed it (or the socket failed).
    Closed,
    /// Bytes no request asked for (at least this many): a response nobody
    /// is waiting for, or the tail of one that said it had ended.
    Unsolicited(usize),
}

/// One upstream connection and the bytes read from it but not yet used.
pub struct Connection {
    io: Io,
    buf: BytesMut,
}

enum Io {
    Whole(Stream),
    /// Only the read side: the write side is still uploading the request
    /// body in its own task (the upstream answered early). Never pooled.
    /// Dropping it (the response has ended, or was abandoned) tells that
    /// task through the sender's drop (see `exchange_streaming`).
    Read {
        half: Box<dyn AsyncRead + Send + Unpin>,
        _answered: tokio::sync::oneshot::Sender<()>,
    },
}

impl Connection {
    pub fn new(io: Stream) -> Self {
        Self { io: Io::Whole(io), buf: BytesMut::new() }
    }

    /// The socket, for handing over to hyper (WebSocket handshakes). Only
    /// idle connections are handed over, and they hold no unread bytes.
    pub fn into_io(self) -> Option<Stream> {
        match self.io {
            Io::Whole(s) => Some(s),
            Io::Read { .. } => None,
        }
    }

    /// Can go back to the pool at all (not a read side alone).
    pub fn is_whole(&self) -> bool {
        matches!(self.io, Io::Whole(_))
    }

    /// What an idle connection holds, asked of the kernel itself: one
    /// `recv(MSG_PEEK | MSG_DONTWAIT)`. Not tokio's `try_read`: that makes
    /// no system call unless the reactor has already reported the socket
    /// readable, so bytes that arrived but were not yet reported would be
    /// missed, and the next request would read them as its answer
    /// (docs/upstream-client.md, "When a connection may be reused").
    pub fn idle_state(&mut self) -> IdleState {
        if !self.buf.is_empty() {
            return IdleState::Unsolicited(self.buf.len());
        }
        let Io::Whole(io) = &mut self.io else { return IdleState::Closed };
        peek_stream(io)
    }

    /// Send the ACK for what was read now, not after the delayed-ACK timer
    /// (up to 40 ms on Linux). An upstream that wrote a second response
    /// right behind the first may have it held back by Nagle's algorithm
    /// until that ACK: without this it would arrive only when the next
    /// request's bytes carry the ACK, exactly when it would be taken for
    /// that request's answer. With it, it arrives while the connection is
    /// idle, where `idle_state` sees it.
    pub fn ack_now(&self) {
        if let Io::Whole(io) = &self.io {
            let _ = socket2::SockRef::from(io.tcp()).set_tcp_quickack(true);
        }
    }

    /// Going idle: keep a head-sized read buffer for the next exchange (it
    /// is reclaimed in place once the last response's header values are
    /// dropped), give back anything a large body made it grow to.
    pub fn shrink(&mut self) {
        if self.buf.capacity() > KEEP_IDLE {
            self.buf = BytesMut::new();
        }
    }

    /// Read whatever is available into the buffer (at least one byte, or
    /// 0 at end of stream).
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < want / 2 {
            self.buf.reserve(want);
        }
        match &mut self.io {
            Io::Whole(Stream::Tcp(io)) => loop {
                std::task::ready!(io.poll_read_ready(cx))?;
                match io.try_read_buf(&mut self.buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Io::Whole(Stream::Tls(io)) => tokio_util::io::poll_read_buf(Pin::new(&mut **io), cx, &mut self.buf),
            Io::Read { half, .. } => tokio_util::io::poll_read_buf(Pin::new(half), cx, &mut self.buf),
        }
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqFraming {
    /// No body and no framing header.
    None,
    /// `Content-Length` (from the client, or added).
    Length(u64),
    Chunked,
}

/// Decide the request framing and add the header it needs. `Content-Length`
/// from the client is kept (weir already refused conflicting framing); an
/// empty POST/PUT/PATCH gets `content-length: 0`; a body of unknown length
/// is sent chunked.
pub fn request_framing(method: &Method, headers: &mut HeaderMap, body: &impl Body) -> ReqFraming {
    if let Some(n) = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        return ReqFraming::Length(n);
    }
    if body.is_end_stream() {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
            return ReqFraming::Length(0);
        }
        return ReqFraming::None;
    }
    if let Some(n) = body.size_hint().exact() {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        return ReqFraming::Length(n);
    }
    ReqFraming::Chunked
}

/// Request line and headers, ready to write.
pub fn encode_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    added: &[(&'static HeaderName, HeaderValue)],
    framing: ReqFraming,
) -> Vec<u8> {
    let all = || headers.iter().chain(added.iter().map(|(k, v)| (*k, v)));
    let mut size = method.as_str().len() + target.len() + 16;
    for (k, v) in all() {
        size += k.as_str().len() + v.len() + 4;
    }
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in all() {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == ReqFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The client's body failed (too large, stalled, broken).
    Body(super::error::UpstreamError),
    /// Socket error or end of stream before a complete response head.
    /// `answered`: some response bytes had arrived; `unsent`: writing the
    /// request failed (the upstream cannot have acted on all of it).
    Io { error: io::Error, answered: bool, unsent: bool },
    /// The response head is not HTTP/1.x we can frame.
    Protocol(Malformed),
    /// No response head within `request_timeout` of the request's end.
    Timeout,
    /// The upstream took no request body bytes for `body_timeout`.
    Stalled(Duration),
    /// Bytes arrived before any of the request was written (at least this
    /// many): an answer to nothing. The upstream has not seen the request.
    Unsolicited(usize),
}

/// What a request body must be for the exchange: weir's `ReqBody`, or
/// anything else that streams bytes and fails with a boxed error.
pub trait ReqBodyLike: Body<Data = Bytes, Error = BoxError> + Unpin {}
impl<T: Body<Data = Bytes, Error = BoxError> + Unpin> ReqBodyLike for T {}

/// The two deadlines of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From the end of the request (body sent) to the response head.
    pub head: Duration,
    /// Longest the upstream may take no request body bytes.
    pub upload: Duration,
}

/// A parsed response head and how its body is framed.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: RespFraming,
    /// The connection may carry another request after this body.
    pub keep_alive: bool,
}

/// Send a request that has no body to send (its head is all of it) and
/// read the response head, both at once: the first complete head wins.
/// The `bool` reports whether the whole head was written (if not, the
/// connection cannot be reused). The head deadline runs from the end of
/// the request. Requests with a body go through `exchange_streaming`: this
/// path, every GET, carries no body state, and its future stays small.
pub async fn exchange(
    wire: &mut Connection,
    head: &[u8],
    method: &Method,
    deadlines: Deadlines,
) -> Result<(Head, bool), ExchangeError> {
    let Connection { io, buf } = wire;
    let Io::Whole(io) = io else {
        return Err(ExchangeError::Protocol(Malformed::StillUploading));
    };
    // Looked at again right before the head is written, with no await in
    // between: the pool's look at checkout may be long past on a busy core,
    // and a response that arrived since answers nothing. (Without this, a
    // stray landing between checkout and write crossed answers under CPU
    // load: tests/crossed_answers.rs.)
    if !buf.is_empty() {
        return Err(ExchangeError::Unsolicited(buf.len()));
    }
    if let IdleState::Unsolicited(n) = peek_stream(io) {
        return Err(ExchangeError::Unsolicited(n));
    }
    match io {
        Stream::Tcp(s) => {
            let (rd, wr) = s.split();
            exchange_on((rd, wr), buf, head, method, deadlines).await
        }
        Stream::Tls(s) => {
            let (rd, wr) = tokio::io::split(&mut **s);
            exchange_on((rd, wr), buf, head, method, deadlines).await
        }
    }
}

/// `exchange` on the two halves of the socket.
async fn exchange_on(
    (mut rd, mut wr): (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    buf: &mut BytesMut,
    head: &[u8],
    method: &Method,
    deadlines: Deadlines,
) -> Result<(Head, bool), ExchangeError> {
    let send = stalls(deadlines.upload, wr.write_all(head));
    let recv = read_head(&mut rd, buf, method);
    let timer = tokio::time::sleep(deadlines.head);
    tokio::pin!(send, recv, timer);
    let mut request_ended = false;
    let mut write_failed: Option<io::Error> = None;
    loop {
        tokio::select! {
            biased;
            written = &mut send, if !request_ended => {
                write_failed = upload_ended(written)?;
                request_ended = true;
                timer.as_mut().reset(tokio::time::Instant::now() + deadlines.head);
            },
            () = &mut timer, if request_ended => return Err(ExchangeError::Timeout),
            head = &mut recv => {
                return match head {
                    Ok(h) => Ok((h, request_ended && write_failed.is_none())),
                    Err(ExchangeError::Io { error, answered: false, .. }) => {
                        let unsent = write_failed.is_some();
                        Err(ExchangeError::Io { error: write_failed.unwrap_or(error), answered: false, unsent })
                    }
                    Err(e) => Err(e),
                };
            }
        }
    }
}

/// Like `exchange`, for a request with a body, which may outlive the
/// exchange: when the upstream answers before the body is all sent, the
/// upload goes on in its own task while the answer goes to the client
/// (an upstream that answers early may still read). Once that answer has
/// ended, the rest of the body is the client's alone: drained or reset as
/// `leftover` says, never left hanging on a write the upstream does not
/// take. Returns the head, the connection (whole when the body was all
/// sent; else its read side only, never pooled), and whether the body was
/// all sent.
pub async fn exchange_streaming(
    wire: Connection,
    head: Vec<u8>,
    body: impl ReqBodyLike + Send + 'static,
    framing: ReqFraming,
    method: &Method,
    deadlines: Deadlines,
    leftover: Leftover,
) -> Result<(Head, Connection, bool), ExchangeError> {
    let Connection { io, buf } = wire;
    let Io::Whole(io) = io else {
        return Err(ExchangeError::Protocol(Malformed::StillUploading));
    };
    let mut body = body;
    // The head goes out with the first piece of body (a body that fails at
    // once never puts a head on the wire), which may keep the client a
    // while. Anything the upstream sent in the meantime answers nothing:
    // look again right before the head is written (no await between).
    let mut trailers = None;
    let first = first_piece(&mut body, &mut trailers).await?;
    let mut io = io;
    if let IdleState::Unsolicited(n) = peek_stream(&mut io) {
        return Err(ExchangeError::Unsolicited(n));
    }
    let upload = (head, first, body, (framing, trailers), leftover);
    match io {
        Stream::Tcp(s) => {
            let (rd, wr) = s.into_split();
            let reunite = |rd: tokio::net::tcp::OwnedReadHalf, wr| rd.reunite(wr).ok().map(Stream::Tcp);
            streaming_on((rd, wr), reunite, buf, upload, method, deadlines).await
        }
        tls @ Stream::Tls(_) => {
            let (rd, wr) = tokio::io::split(tls);
            let reunite = |rd: tokio::io::ReadHalf<Stream>, wr| rd.is_pair_of(&wr).then(|| rd.unsplit(wr));
            streaming_on((rd, wr), reunite, buf, upload, method, deadlines).await
        }
    }
}

/// What `exchange_streaming` uploads: the head, the body's first piece and
/// the rest, its framing and trailers, and what to do with leftovers.
type Upload<B> = (Vec<u8>, Option<Bytes>, B, (ReqFraming, Option<http::HeaderMap>), Leftover);

/// `exchange_streaming` on the two halves of the socket; `reunite` puts a
/// fully sent connection back together.
async fn streaming_on<R, W, B>(
    (mut rd, wr): (R, W),
    reunite: impl FnOnce(R, W) -> Option<Stream>,
    mut buf: BytesMut,
    (head, first, body, framing, leftover): Upload<B>,
    method: &Method,
    deadlines: Deadlines,
) -> Result<(Head, Connection, bool), ExchangeError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    B: ReqBodyLike + Send + 'static,
{
    // Fires (by the sender being dropped) when the answer's body has ended
    // or was dropped: the sender goes with the read side (`Io::Read`) when
    // the upstream answers early, and is dropped with this function otherwise.
    let (answered_tx, answered) = tokio::sync::oneshot::channel::<()>();
    let pace = Pace { limit: deadlines.upload, answered: Some(answered) };
    let mut upload = Box::pin(upload::run(wr, head, first, body, framing, pace, leftover));
    let timer = tokio::time::sleep(deadlines.head);
    tokio::pin!(timer);
    let mut sent_all: Option<W> = None;
    let mut request_ended = false;
    let mut write_failed: Option<io::Error> = None;
    let answer = {
        let recv = read_head(&mut rd, &mut buf, method);
        tokio::pin!(recv);
        loop {
            tokio::select! {
                biased;
                (wr, sent) = &mut upload, if !request_ended => {
                    write_failed = upload_ended(sent)?;
                    if write_failed.is_none() {
                        sent_all = Some(wr);
                    }
                    request_ended = true;
                    timer.as_mut().reset(tokio::time::Instant::now() + deadlines.head);
                },
                () = &mut timer, if request_ended => return Err(ExchangeError::Timeout),
                head = &mut recv => break head,
            }
        }
    };
    let head = match answer {
        Ok(h) => h,
        Err(ExchangeError::Io { error, answered: false, .. }) => {
            let unsent = write_failed.is_some();
            return Err(ExchangeError::Io { error: write_failed.unwrap_or(error), answered: false, unsent });
        }
        Err(e) => return Err(e),
    };
    if let Some(wr) = sent_all {
        let io = reunite(rd, wr).ok_or_else(|| ExchangeError::Protocol(Malformed::Halves))?;
        return Ok((head, Connection { io: Io::Whole(io), buf }, true));
    }
    if !request_ended {
        // An early answer while the body is still coming: the upload goes
        // on in its own task (see `upload::run` for how it ends).
        tokio::spawn(async move {
            let (_wr, sent) = upload.await;
            if let Err(Sent::Io(e)) = &sent {
                tracing::debug!(error = %e, "upload after an early answer ended early");
            }
        });
    }
    Ok((head, Connection { io: Io::Read { half: Box::new(rd), _answered: answered_tx }, buf }, false))
}

/// The body's first piece, read before the head is written (see
/// `exchange_streaming`); None for a body that ends without data.
async fn first_piece(
    body: &mut impl ReqBodyLike,
    trailers: &mut Option<http::HeaderMap>,
) -> Result<Option<Bytes>, ExchangeError> {
    next_data(body, trailers).await.map_err(|e| match e {
        Sent::Body(e) => ExchangeError::Body(e),
        Sent::Io(error) => ExchangeError::Io { error, answered: false, unsent: true },
        Sent::Answered => ExchangeError::Protocol(Malformed::EndedBeforeSent),
        Sent::Stalled(d) => ExchangeError::Stalled(d),
    })
}

async fn read_head(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Head, ExchangeError> {
    let mut answered = false;
    let mut interim = 0;
    loop {
        if !buf.is_empty() {
            answered = true;
            match parse_head(buf, method)? {
                Parsed::Done(head) => return Ok(head),
                Parsed::Interim => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(too_many_interim());
                    }
                    continue;
                }
                Parsed::Partial => {}
            }
            if buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Protocol(Malformed::HeadTooLarge));
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(HEAD_READ);
        }
        match rd.read_buf(buf).await {
            Ok(0) => {
                let error = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response head");
                return Err(ExchangeError::Io { error, answered, unsent: false });
            }
            Ok(_) => {}
            Err(error) => return Err(ExchangeError::Io { error, answered, unsent: false }),
        }
    }
}

fn too_many_interim() -> ExchangeError {
    ExchangeError::Protocol(Malformed::TooManyInterim(MAX_INTERIM))
}

mod response;
mod upload;

pub use upload::{Leftover, body_error};
use upload::{Pace, Sent, next_data, stalls, upload_ended};

pub use response::*;

#[cfg(test)]
mod tests;
