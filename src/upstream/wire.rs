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

use super::{BodyTimeout, BodyTooLarge, BoxError};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) or trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// First read size; bodies read in larger pieces (see `read_more`).
const HEAD_READ: usize = 4 * 1024;
/// Read buffer an idle connection may keep.
const KEEP_IDLE: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;

/// One upstream connection and the bytes read from it but not yet used.
pub struct Wire {
    io: Io,
    buf: BytesMut,
}

enum Io {
    Whole(TcpStream),
    /// Only the read side: the write side is still uploading the request
    /// body in its own task (the upstream answered early). Never pooled.
    Read(tokio::net::tcp::OwnedReadHalf),
}

impl Wire {
    pub fn new(io: TcpStream) -> Self {
        Self { io: Io::Whole(io), buf: BytesMut::new() }
    }

    /// The socket, for handing over to hyper (WebSocket handshakes). Only
    /// idle connections are handed over, and they hold no unread bytes.
    pub fn into_io(self) -> Option<TcpStream> {
        match self.io {
            Io::Whole(s) => Some(s),
            Io::Read(_) => None,
        }
    }

    /// Can go back to the pool at all (not a read side alone).
    pub fn is_whole(&self) -> bool {
        matches!(self.io, Io::Whole(_))
    }

    /// An idle connection is usable if the peer has neither closed it nor
    /// sent anything. No system call unless the reactor saw it readable.
    pub fn is_idle_usable(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let Io::Whole(io) = &self.io else { return false };
        let mut probe = [0u8; 1];
        matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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
            Io::Whole(io) => loop {
                std::task::ready!(io.poll_read_ready(cx))?;
                match io.try_read_buf(&mut self.buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Io::Read(rd) => tokio_util::io::poll_read_buf(std::pin::Pin::new(rd), cx, &mut self.buf),
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
pub fn encode_head(method: &Method, target: &str, headers: &HeaderMap, framing: ReqFraming) -> Vec<u8> {
    let mut size = method.as_str().len() + target.len() + 16;
    for (k, v) in headers {
        size += k.as_str().len() + v.len() + 4;
    }
    let mut out = Vec::with_capacity(size + 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in headers {
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
    Body(super::UpstreamError),
    /// Socket error or end of stream before a complete response head.
    /// `answered`: some response bytes had arrived; `unsent`: writing the
    /// request failed (the upstream cannot have acted on all of it).
    Io { error: io::Error, answered: bool, unsent: bool },
    /// The response head is not HTTP/1.x we can frame.
    Protocol(String),
    /// No response head within `request_timeout` of the request's end.
    Timeout,
    /// The upstream took no request body bytes for `body_timeout`.
    Stalled(Duration),
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

/// Send the request (head, then body) and read the response head, both at
/// once: the first complete head wins, even if the body is still going.
/// `body_done` reports whether the whole request body was sent (if not, the
/// connection cannot be reused). The head deadline runs from the end of
/// the request: a slow upload that keeps moving is not a slow upstream.
pub async fn exchange(
    wire: &mut Wire,
    head: &[u8],
    mut body: impl ReqBodyLike,
    framing: ReqFraming,
    method: &Method,
    deadlines: Deadlines,
) -> Result<(Head, bool), ExchangeError> {
    let Wire { io, buf } = wire;
    let Io::Whole(io) = io else {
        return Err(ExchangeError::Protocol("a connection still uploading cannot carry a request".into()));
    };
    let (mut rd, mut wr) = io.split();
    let send = async {
        if framing == ReqFraming::None {
            return stalls(deadlines.upload, wr.write_all(head)).await;
        }
        send_body(&mut wr, head, &mut body, framing, deadlines.upload).await
    };
    let recv = read_head(&mut rd, buf, method);
    let timer = tokio::time::sleep(deadlines.head);
    tokio::pin!(send, recv, timer);
    let mut body_done = false;
    let mut request_ended = false;
    let mut write_failed: Option<io::Error> = None;
    loop {
        tokio::select! {
            biased;
            sent = &mut send, if !body_done && write_failed.is_none() => {
                match sent {
                    Ok(()) => body_done = true,
                    Err(Sent::Body(e)) => return Err(ExchangeError::Body(e)),
                    Err(Sent::Stalled(d)) => return Err(ExchangeError::Stalled(d)),
                    // Keep listening: the upstream may have answered and closed.
                    Err(Sent::Io(e)) => write_failed = Some(e),
                }
                request_ended = true;
                timer.as_mut().reset(tokio::time::Instant::now() + deadlines.head);
            },
            () = &mut timer, if request_ended => return Err(ExchangeError::Timeout),
            head = &mut recv => {
                return match head {
                    Ok(h) => Ok((h, body_done)),
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
/// exchange: when the upstream answers before the body is all sent and
/// keeps the connection, the upload goes on in its own task (the upstream
/// gets the whole body while the client gets the answer). Returns the head,
/// the connection (whole when the body was all sent; else its read side
/// only, never pooled), and whether the body was all sent.
pub async fn exchange_streaming(
    wire: Wire,
    head: Vec<u8>,
    body: impl ReqBodyLike + Send + 'static,
    framing: ReqFraming,
    method: &Method,
    deadlines: Deadlines,
) -> Result<(Head, Wire, bool), ExchangeError> {
    let Wire { io, mut buf } = wire;
    let Io::Whole(io) = io else {
        return Err(ExchangeError::Protocol("a connection still uploading cannot carry a request".into()));
    };
    let (mut rd, wr) = io.into_split();
    let limit = deadlines.upload;
    let mut upload = Box::pin(async move {
        let mut wr = wr;
        let mut body = body;
        let sent = send_body(&mut wr, &head, &mut body, framing, limit).await;
        (wr, sent)
    });
    let timer = tokio::time::sleep(deadlines.head);
    tokio::pin!(timer);
    let mut sent_all: Option<tokio::net::tcp::OwnedWriteHalf> = None;
    let mut request_ended = false;
    let mut write_failed: Option<io::Error> = None;
    let answer = {
        let recv = read_head(&mut rd, &mut buf, method);
        tokio::pin!(recv);
        loop {
            tokio::select! {
                biased;
                (wr, sent) = &mut upload, if !request_ended => {
                    match sent {
                        Ok(()) => sent_all = Some(wr),
                        Err(Sent::Body(e)) => return Err(ExchangeError::Body(e)),
                        Err(Sent::Stalled(d)) => return Err(ExchangeError::Stalled(d)),
                        // Keep listening: the upstream may have answered and closed.
                        Err(Sent::Io(e)) => write_failed = Some(e),
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
        let io = rd.reunite(wr).map_err(|_| ExchangeError::Protocol("socket halves do not match".into()))?;
        return Ok((head, Wire { io: Io::Whole(io), buf }, true));
    }
    if !request_ended && head.keep_alive {
        // An early answer on a connection the upstream keeps: it still
        // expects the rest of the body. Bounded by `body_timeout` per write
        // and by the client's own body timeout.
        tokio::spawn(async move {
            let (_wr, sent) = upload.await;
            if let Err(Sent::Io(e)) = &sent {
                tracing::debug!(error = %e, "upload after an early answer ended early");
            }
        });
    }
    Ok((head, Wire { io: Io::Read(rd), buf }, false))
}

enum Sent {
    Io(io::Error),
    Body(super::UpstreamError),
    /// The upstream took nothing for this long.
    Stalled(Duration),
}

/// One write, cut off when the upstream takes nothing for `limit`.
async fn stalls(limit: Duration, write: impl std::future::Future<Output = io::Result<()>>) -> Result<(), Sent> {
    match tokio::time::timeout(limit, write).await {
        Err(_) => Err(Sent::Stalled(limit)),
        Ok(r) => r.map_err(Sent::Io),
    }
}

/// Stream the body after the head. The head waits for the first piece of
/// body and goes out with it (one write; and a body that fails at once
/// never puts a request head on the upstream's wire).
async fn send_body(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    head: &[u8],
    body: &mut impl ReqBodyLike,
    framing: ReqFraming,
    limit: Duration,
) -> Result<(), Sent> {
    let mut sent: u64 = 0;
    let mut pending_head = Some(head);
    let mut out: Vec<u8> = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(Sent::Body(body_error(&e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => d,
                _ => continue, // empty data, or trailers (not forwarded)
            },
        };
        sent = sent.saturating_add(data.len() as u64);
        if matches!(framing, ReqFraming::Length(n) if sent > n) {
            return Err(Sent::Body(super::UpstreamError::ClientBody("body longer than its Content-Length".into())));
        }
        out.clear();
        if let Some(h) = pending_head.take() {
            out.extend_from_slice(h);
        }
        if framing == ReqFraming::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.is_empty() && framing != ReqFraming::Chunked {
            stalls(limit, wr.write_all(&data)).await?;
            continue;
        }
        out.extend_from_slice(&data);
        if framing == ReqFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        stalls(limit, wr.write_all(&out)).await?;
    }
    if matches!(framing, ReqFraming::Length(n) if sent != n) {
        return Err(Sent::Body(super::UpstreamError::ClientBody("body shorter than its Content-Length".into())));
    }
    out.clear();
    if let Some(h) = pending_head.take() {
        out.extend_from_slice(h);
    }
    if framing == ReqFraming::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if out.is_empty() {
        return Ok(());
    }
    stalls(limit, wr.write_all(&out)).await
}

/// Sort a request body error into the limit, the stall, or a broken client.
fn body_error(e: &BoxError) -> super::UpstreamError {
    if e.is::<BodyTooLarge>() {
        super::UpstreamError::BodyTooLarge
    } else if e.is::<BodyTimeout>() {
        super::UpstreamError::BodyTimeout
    } else {
        super::UpstreamError::ClientBody(e.to_string())
    }
}

async fn read_head(
    rd: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Head, ExchangeError> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            answered = true;
            match parse_head(buf, method)? {
                Parsed::Done(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
            if buf.len() >= MAX_HEAD {
                return Err(ExchangeError::Protocol("response head too large".into()));
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

enum Parsed {
    Done(Head),
    /// A 1xx other than 101 was consumed; parse again.
    Interim,
    Partial,
}

fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ExchangeError> {
    // Uninitialised slots: zeroing 128 headers would cost more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        // The limit holds on the bytes of the head, however they arrived
        // (a whole oversized head can come in one read).
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(ExchangeError::Protocol("response head too large".into()));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(ExchangeError::Protocol(format!("invalid response head: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Protocol(format!("invalid status {code}")))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    if version == Version::HTTP_10 && resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        // HTTP/1.0 has no transfer codings (RFC 9112 §6.1): such framing
        // cannot be trusted (hyper's client refuses it too).
        return Err(ExchangeError::Protocol("Transfer-Encoding in an HTTP/1.0 response".into()));
    }
    // Header values are kept as slices of the head's bytes: remember where
    // each one lies, then cut the head off the buffer once.
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(resp.headers.len());
    let mut facts = Framing::default();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ExchangeError::Protocol(format!("invalid header name {:?}", h.name)))?;
        facts.note(&name, h.value)?;
        let start = (h.value.as_ptr() as usize).wrapping_sub(base);
        spans.push((name, start, start + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        let value = head
            .get(start..end)
            .map(|s| head.slice_ref(s))
            .and_then(|b| HeaderValue::from_maybe_shared(b).ok())
            .ok_or_else(|| ExchangeError::Protocol(format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    if facts.transfer_encoding {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a
        // forwarder removes the length: the client must see only the framing
        // weir read the body with, never a length that truncates it.
        headers.remove(CONTENT_LENGTH);
    }
    let (framing, mut keep_alive) = response_framing(method, status, &facts);
    keep_alive &= version == Version::HTTP_11 && !facts.close;
    Ok(Parsed::Done(Head { status, version, headers, framing, keep_alive }))
}

/// What the framing headers of a response say, gathered in the one pass
/// over its headers (standard names compare as enum tags: no hashing).
#[derive(Default)]
struct Framing {
    transfer_encoding: bool,
    /// The last transfer coding named is `chunked`.
    chunked_last: bool,
    content_length: Option<u64>,
    /// `Connection: close`.
    close: bool,
}

impl Framing {
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), ExchangeError> {
        let tokens = || value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty());
        if name == CONTENT_LENGTH {
            for t in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                let n = (!t.is_empty() && t.len() <= 19 && t.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| ExchangeError::Protocol("invalid Content-Length".into()))?;
                if self.content_length.is_some_and(|l| l != n) {
                    return Err(ExchangeError::Protocol("conflicting Content-Length values".into()));
                }
                self.content_length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            if tokens().next().is_none() {
                // Readers disagree on an empty coding list (hyper's client
                // reads it as "not chunked"): refuse rather than guess.
                return Err(ExchangeError::Protocol("empty Transfer-Encoding".into()));
            }
            self.transfer_encoding = true;
            if let Some(last) = tokens().next_back() {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == CONNECTION && tokens().any(|t| t.eq_ignore_ascii_case(b"close")) {
            self.close = true;
        }
        Ok(())
    }
}

/// How the response body ends (RFC 9112 §6.3). The bool: the framing
/// allows reusing the connection afterwards.
fn response_framing(method: &Method, status: StatusCode, f: &Framing) -> (RespFraming, bool) {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Never reused: the connection now belongs to another protocol.
        return (RespFraming::Done, false);
    }
    if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return (RespFraming::Done, true);
    }
    if f.transfer_encoding {
        // With both, Transfer-Encoding wins and the connection is not
        // trusted again.
        return if f.chunked_last {
            (RespFraming::Chunked(Chunk::Size), f.content_length.is_none())
        } else {
            (RespFraming::Close, false)
        };
    }
    match f.content_length {
        Some(0) => (RespFraming::Done, true),
        Some(n) => (RespFraming::Length(n), true),
        None => (RespFraming::Close, false),
    }
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespFraming {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes of chunk data left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (bytes of
    /// the section so far).
    Trailers(usize),
}

/// A piece of response body, or the end.
pub enum Step {
    Data(Bytes),
    End,
}

/// Why a response body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream closed the connection {0} bytes before the end of the body")]
    Truncated(u64),
    #[error("upstream closed the connection in the middle of a chunked body")]
    TruncatedChunked,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("reading the upstream body failed: {0}")]
    Io(#[from] io::Error),
    #[error("no response body bytes from the upstream for {0:?} (upstream body_timeout)")]
    Idle(Duration),
}

/// Read the next piece of body from `wire` as framed by `framing`.
pub fn poll_body(wire: &mut Wire, framing: &mut RespFraming, cx: &mut Context<'_>) -> Poll<Result<Step, BodyError>> {
    loop {
        match framing {
            RespFraming::Done => return Poll::Ready(Ok(Step::End)),
            RespFraming::Length(0) => {
                *framing = RespFraming::Done;
                return Poll::Ready(Ok(Step::End));
            }
            RespFraming::Length(left) => {
                if !wire.buf.is_empty() {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(wire.buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        *framing = RespFraming::Done;
                    }
                    return Poll::Ready(Ok(Step::Data(wire.buf.split_to(n).freeze())));
                }
                let want = usize::try_from(*left).unwrap_or(BODY_READ).clamp(HEAD_READ, BODY_READ);
                if std::task::ready!(wire.poll_read_more(cx, want))? == 0 {
                    return Poll::Ready(Err(BodyError::Truncated(*left)));
                }
            }
            RespFraming::Close => {
                if !wire.buf.is_empty() {
                    return Poll::Ready(Ok(Step::Data(wire.buf.split().freeze())));
                }
                if std::task::ready!(wire.poll_read_more(cx, BODY_READ))? == 0 {
                    *framing = RespFraming::Done;
                    return Poll::Ready(Ok(Step::End));
                }
            }
            RespFraming::Chunked(state) => {
                match decode_chunked(&mut wire.buf, state)? {
                    Decoded::Data(b) => return Poll::Ready(Ok(Step::Data(b))),
                    Decoded::End => {
                        *framing = RespFraming::Done;
                        return Poll::Ready(Ok(Step::End));
                    }
                    Decoded::NeedMore => {}
                }
                if std::task::ready!(wire.poll_read_more(cx, BODY_READ))? == 0 {
                    return Poll::Ready(Err(BodyError::TruncatedChunked));
                }
            }
        }
    }
}

pub enum Decoded {
    Data(Bytes),
    End,
    NeedMore,
}

/// Advance the chunked decoder over what `buf` holds.
pub fn decode_chunked(buf: &mut BytesMut, state: &mut Chunk) -> Result<Decoded, BodyError> {
    loop {
        match state {
            Chunk::Size => {
                let eol = match find_crlf(buf) {
                    Some(eol) if eol <= MAX_CHUNK_LINE => eol,
                    Some(_) => return Err(BodyError::Chunked("chunk-size line too long")),
                    None if buf.len() > MAX_CHUNK_LINE => {
                        return Err(BodyError::Chunked("chunk-size line too long"));
                    }
                    None => return Ok(Decoded::NeedMore),
                };
                let line = &buf[..eol];
                let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
                if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
                    return Err(BodyError::Chunked("invalid chunk size"));
                }
                let size = digits.iter().fold(0u64, |acc, d| {
                    let v = match d {
                        b'0'..=b'9' => d - b'0',
                        b'a'..=b'f' => d - b'a' + 10,
                        _ => d - b'A' + 10,
                    };
                    acc * 16 + u64::from(v)
                });
                buf.advance(eol + 2);
                *state = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                if *left == 0 {
                    *state = Chunk::DataEnd;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BodyError::Chunked("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers(seen) => {
                // The section's limit counts every byte of it, line by line.
                let eol = match find_crlf(buf) {
                    Some(eol) if *seen + eol + 2 <= MAX_TRAILERS => eol,
                    Some(_) => return Err(BodyError::Chunked("trailer section too long")),
                    None if *seen + buf.len() > MAX_TRAILERS => {
                        return Err(BodyError::Chunked("trailer section too long"));
                    }
                    None => return Ok(Decoded::NeedMore),
                };
                buf.advance(eol + 2);
                *seen += eol + 2;
                if eol == 0 {
                    return Ok(Decoded::End);
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// True when the body ended exactly at the end of what was read, so the
/// connection holds no stray bytes.
pub fn clean_after_body(wire: &Wire) -> bool {
    wire.buf.is_empty()
}

/// A whole response in `bytes`, as one exchange would read it (a GET; the
/// connection closes after the last byte): status and body, or the error
/// that would cut it. For the differential test against hyper's client.
pub fn parse_whole(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut buf = BytesMut::from(bytes);
    let head = loop {
        match parse_head(&mut buf, &Method::GET) {
            Ok(Parsed::Done(h)) => break h,
            Ok(Parsed::Interim) => continue,
            Ok(Parsed::Partial) => return Err("connection closed before a response head".into()),
            Err(ExchangeError::Protocol(why)) => return Err(why),
            Err(_) => return Err("exchange failed".into()),
        }
    };
    let mut body = Vec::new();
    let mut framing = head.framing;
    match &mut framing {
        RespFraming::Done => {}
        RespFraming::Length(n) => {
            let n = usize::try_from(*n).unwrap_or(usize::MAX);
            if buf.len() < n {
                return Err(BodyError::Truncated((n - buf.len()) as u64).to_string());
            }
            body.extend_from_slice(&buf[..n]);
        }
        RespFraming::Close => body.extend_from_slice(&buf),
        RespFraming::Chunked(state) => loop {
            match decode_chunked(&mut buf, state).map_err(|e| e.to_string())? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => break,
                Decoded::NeedMore => return Err(BodyError::TruncatedChunked.to_string()),
            }
        },
    }
    Ok((head.status.as_u16(), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ReqBody;
    use proptest::prelude::*;

    /// Feed `wire` to the decoder in pieces cut at `cuts`; returns the body
    /// and whether the end was seen, or the first error.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), BodyError> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let (mut buf, mut state, mut out, mut from) = (BytesMut::new(), Chunk::Size, Vec::new(), 0);
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            loop {
                match decode_chunked(&mut buf, &mut state)? {
                    Decoded::Data(b) => out.extend_from_slice(&b),
                    Decoded::End => return Ok((out, true)),
                    Decoded::NeedMore => break,
                }
            }
        }
        Ok((out, false))
    }

    proptest! {
        /// Any body, chunked any way and delivered in any pieces, decodes
        /// to itself and ends exactly once.
        #[test]
        fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2000),
                              sizes in proptest::collection::vec(1usize..300, 1..20),
                              cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let mut wire = Vec::new();
            let (mut rest, mut i) = (&body[..], 0);
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let decoded = decode_in_pieces(&wire, &cuts);
            prop_assert!(matches!(decoded, Ok((ref out, true)) if *out == body));
        }

        /// Hostile bytes never panic and never yield more data than given.
        #[test]
        fn chunked_garbage_is_safe(wire in proptest::collection::vec(any::<u8>(), 0..512),
                                   cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            if let Ok((out, _)) = decode_in_pieces(&wire, &cuts) {
                prop_assert!(out.len() <= wire.len());
            }
        }

        /// Response heads made of arbitrary bytes parse or fail cleanly.
        #[test]
        fn response_heads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = BytesMut::from(&raw[..]);
            let _ = parse_head(&mut buf, &Method::GET);
        }
    }

    fn chunked(input: &[u8]) -> Result<(Vec<u8>, bool), BodyError> {
        let mut buf = BytesMut::from(input);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            match decode_chunked(&mut buf, &mut state)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok((out, true)),
                Decoded::NeedMore => return Ok((out, false)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, done) = chunked(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n").unwrap_or_default();
        assert_eq!(body, b"hello world");
        assert!(done);
        let (body, done) = chunked(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap_or_default();
        assert_eq!(body, b"0123456789");
        assert!(done);
    }

    #[test]
    fn chunked_bodies_wait_for_more_at_every_boundary() {
        let full = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            let mut state = Chunk::Size;
            let mut out = Vec::new();
            let mut done = false;
            for piece in [&full[cut..], &b""[..]] {
                loop {
                    match decode_chunked(&mut buf, &mut state) {
                        Ok(Decoded::Data(b)) => out.extend_from_slice(&b),
                        Ok(Decoded::End) => {
                            done = true;
                            break;
                        }
                        Ok(Decoded::NeedMore) => break,
                        Err(e) => unreachable!("cut {cut}: {e}"),
                    }
                }
                buf.extend_from_slice(piece);
            }
            assert!(done, "cut {cut}");
            assert_eq!(out, b"hello", "cut {cut}");
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"12345678901234567\r\n", b"\r\n", b"-1\r\n"] {
            assert!(chunked(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(chunked(&long).is_err());
    }

    #[test]
    fn every_limit_holds_on_bytes_received_even_in_one_read() {
        // A chunk line longer than the limit that arrives whole, CRLF included.
        let mut line = b"5;".to_vec();
        line.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE));
        line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert!(matches!(chunked(&line), Err(BodyError::Chunked("chunk-size line too long"))));
        // A trailer section over the limit made of short lines, in one read.
        let mut t = b"0\r\n".to_vec();
        for i in 0..(MAX_TRAILERS / 20 + 10) {
            t.extend_from_slice(format!("x-t{i:05}: {}\r\n", "v".repeat(8)).as_bytes());
        }
        t.extend_from_slice(b"\r\n");
        assert!(matches!(chunked(&t), Err(BodyError::Chunked("trailer section too long"))));
        // A response head over the limit with few headers, whole in the buffer.
        let mut h = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        h.extend(std::iter::repeat_n(b'a', 100 * 1024));
        h.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
        assert!(matches!(head(&h, &Method::GET), Err(ExchangeError::Protocol(m)) if m.contains("too large")));
        // Just under the limits still passes.
        let (body, done) = chunked(b"5;e=1\r\nhello\r\n0\r\nx: 1\r\n\r\n").unwrap_or_default();
        assert_eq!((body.as_slice(), done), (&b"hello"[..], true));
    }

    #[test]
    fn with_both_framings_the_length_is_not_forwarded() {
        let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", &Method::GET))
            .unwrap();
        assert!(h.headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(h.framing, RespFraming::Chunked(Chunk::Size));
        assert!(!h.keep_alive, "a response framed two ways is not trusted again");
    }

    fn head(raw: &[u8], method: &Method) -> Result<Parsed, ExchangeError> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, method)
    }

    fn done(p: Result<Parsed, ExchangeError>) -> Option<Head> {
        match p {
            Ok(Parsed::Done(h)) => Some(h),
            _ => None,
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = Method::GET;
        let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", &get));
        assert_eq!(h.as_ref().map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Length(5), true)));
        let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &get));
        assert_eq!(h.map(|h| h.framing), Some(RespFraming::Chunked(Chunk::Size)));
        let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", &get));
        assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Chunked(Chunk::Size), false)));
        let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &get));
        assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Close, false)));
        let h = done(head(b"HTTP/1.1 200 OK\r\n\r\n", &get));
        assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Close, false)));
        let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &Method::HEAD));
        assert_eq!(h.map(|h| h.framing), Some(RespFraming::Done));
        let h = done(head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", &get));
        assert_eq!(h.map(|h| h.framing), Some(RespFraming::Done));
        let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", &get));
        assert_eq!(h.map(|h| h.keep_alive), Some(false));
        let h = done(head(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", &get));
        assert_eq!(h.map(|h| h.keep_alive), Some(false));
        let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &get));
        assert_eq!(h.map(|h| h.framing), Some(RespFraming::Length(5)));
    }

    #[test]
    fn broken_heads_are_protocol_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
            b"HTTP/1.1 999x OK\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, &Method::GET), Err(ExchangeError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_values_kept_intact() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: one two\r\nContent-Length: 0\r\n\r\n";
        let mut buf = BytesMut::from(&raw[..]);
        assert!(matches!(parse_head(&mut buf, &Method::POST), Ok(Parsed::Interim)));
        let h = done(parse_head(&mut buf, &Method::POST));
        assert_eq!(h.as_ref().map(|h| h.status), Some(StatusCode::CREATED));
        assert_eq!(h.as_ref().and_then(|h| h.headers.get("x-a")), Some(&HeaderValue::from_static("one two")));
        assert!(buf.is_empty());
    }

    #[test]
    fn request_heads_carry_framing() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("a"));
        let empty = ReqBody::empty();
        assert_eq!(request_framing(&Method::GET, &mut h, &empty), ReqFraming::None);
        assert_eq!(request_framing(&Method::POST, &mut h, &empty), ReqFraming::Length(0));
        assert_eq!(h.get(CONTENT_LENGTH), Some(&HeaderValue::from_static("0")));
        let full = ReqBody::full(Bytes::from_static(b"abc"));
        let mut h2 = HeaderMap::new();
        assert_eq!(request_framing(&Method::PUT, &mut h2, &full), ReqFraming::Length(3));
        let wire = encode_head(&Method::GET, "/x?y", &h, ReqFraming::Chunked);
        assert_eq!(
            String::from_utf8_lossy(&wire),
            "GET /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
