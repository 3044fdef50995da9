//! The response side of an exchange: the head parsed (with the framing
//! facts gathered in the same pass), how the body is framed (RFC 9112
//! §6.3), and the body read and decoded as it arrives. Every limit holds on
//! bytes received.

use super::super::error::Malformed;
use super::{
    BODY_READ, Connection, ExchangeError, HEAD_READ, Head, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_TRAILERS,
};
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

pub(super) enum Parsed {
    Done(Head),
    /// A 1xx other than 101 was consumed; parse again.
    Interim,
    Partial,
}

pub(super) fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ExchangeError> {
    // Uninitialised slots: zeroing 128 headers would cost more than parsing.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        // The limit holds on the bytes of the head, however they arrived
        // (a whole oversized head can come in one read).
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(ExchangeError::Protocol(Malformed::HeadTooLarge));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(ExchangeError::Protocol(Malformed::Head(e))),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Protocol(Malformed::Status(code)))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    if version == Version::HTTP_10 && resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding")) {
        // HTTP/1.0 has no transfer codings (RFC 9112 §6.1): such framing
        // cannot be trusted (hyper's client refuses it too).
        return Err(ExchangeError::Protocol(Malformed::TransferEncodingInHttp10));
    }
    // Header values are kept as slices of the head's bytes: remember where
    // each one lies, then cut the head off the buffer once.
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(resp.headers.len());
    let mut facts = Framing::default();
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ExchangeError::Protocol(Malformed::HeaderName(h.name.to_owned())))?;
        facts.note(&name, h.value)?;
        if dropped_on_arrival(&name, h.value) {
            continue;
        }
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
            .ok_or_else(|| ExchangeError::Protocol(Malformed::HeaderValue(name.clone())))?;
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

/// A hop-by-hop header that names nothing else: `Keep-Alive`, and a
/// `Connection` whose tokens are only `close`/`keep-alive` (what almost
/// every upstream sends). Every response weir forwards loses them
/// (`headers::hop::strip_hop_by_hop`) and the framing facts already hold what
/// they say, so they never enter the map: one insert, one lookup and one
/// removal fewer per response. A `Connection` naming anything else
/// (`upgrade`, another header) stays, for the strip and the 101 check.
fn dropped_on_arrival(name: &HeaderName, value: &[u8]) -> bool {
    if name == CONNECTION {
        let mut tokens = value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty());
        return tokens.all(|t| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close"));
    }
    name.as_str() == "keep-alive"
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
                    .ok_or_else(|| ExchangeError::Protocol(Malformed::ContentLength))?;
                if self.content_length.is_some_and(|l| l != n) {
                    return Err(ExchangeError::Protocol(Malformed::ConflictingContentLength));
                }
                self.content_length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            if tokens().next().is_none() {
                // Readers disagree on an empty coding list (hyper's client
                // reads it as "not chunked"): refuse rather than guess.
                return Err(ExchangeError::Protocol(Malformed::EmptyTransferEncoding));
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

/// A piece of response body, the trailer fields of a chunked one, or the end.
pub enum Piece {
    Data(Bytes),
    Trailers(http::HeaderMap),
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

/// Read the next piece of body from `wire` as framed by `framing`; a
/// chunked body's trailer fields are gathered in `trailers` and handed out
/// as one piece before the end.
pub fn poll_body(
    wire: &mut Connection,
    framing: &mut RespFraming,
    trailers: &mut Option<Box<http::HeaderMap>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Piece, BodyError>> {
    loop {
        match framing {
            RespFraming::Done => return Poll::Ready(Ok(Piece::End)),
            RespFraming::Length(0) => {
                *framing = RespFraming::Done;
                return Poll::Ready(Ok(Piece::End));
            }
            RespFraming::Length(left) => {
                if !wire.buf.is_empty() {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(wire.buf.len());
                    *left -= n as u64;
                    if *left == 0 {
                        *framing = RespFraming::Done;
                    }
                    return Poll::Ready(Ok(Piece::Data(wire.buf.split_to(n).freeze())));
                }
                let want = usize::try_from(*left).unwrap_or(BODY_READ).clamp(HEAD_READ, BODY_READ);
                if std::task::ready!(wire.poll_read_more(cx, want))? == 0 {
                    return Poll::Ready(Err(BodyError::Truncated(*left)));
                }
            }
            RespFraming::Close => {
                if !wire.buf.is_empty() {
                    return Poll::Ready(Ok(Piece::Data(wire.buf.split().freeze())));
                }
                if std::task::ready!(wire.poll_read_more(cx, BODY_READ))? == 0 {
                    *framing = RespFraming::Done;
                    return Poll::Ready(Ok(Piece::End));
                }
            }
            RespFraming::Chunked(state) => {
                match decode_chunked(&mut wire.buf, state, trailers)? {
                    Decoded::Data(b) => return Poll::Ready(Ok(Piece::Data(b))),
                    Decoded::End => {
                        *framing = RespFraming::Done;
                        return Poll::Ready(Ok(trailers.take().map_or(Piece::End, |t| Piece::Trailers(*t))));
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

/// Advance the chunked decoder over what `buf` holds. Trailer fields are
/// added to `trailers` (created at the first one), except those a trailer
/// may not carry (`headers::trailer_allowed`).
pub fn decode_chunked(
    buf: &mut BytesMut,
    state: &mut Chunk,
    trailers: &mut Option<Box<http::HeaderMap>>,
) -> Result<Decoded, BodyError> {
    loop {
        match state {
            Chunk::Size => {
                let eol = match find_line(buf)? {
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
                let eol = match find_line(buf)? {
                    Some(eol) if *seen + eol + 2 <= MAX_TRAILERS => eol,
                    Some(_) => return Err(BodyError::Chunked("trailer section too long")),
                    None if *seen + buf.len() > MAX_TRAILERS => {
                        return Err(BodyError::Chunked("trailer section too long"));
                    }
                    None => return Ok(Decoded::NeedMore),
                };
                if eol > 0 {
                    add_trailer(&buf[..eol], trailers)?;
                }
                buf.advance(eol + 2);
                *seen += eol + 2;
                if eol == 0 {
                    return Ok(Decoded::End);
                }
            }
        }
    }
}

/// One `name: value` trailer line into `trailers`. A line that is not a
/// field (no colon, a bad name, an obsolete folded continuation) is a
/// framing error like any other; a field a trailer may not carry is dropped.
fn add_trailer(line: &[u8], trailers: &mut Option<Box<http::HeaderMap>>) -> Result<(), BodyError> {
    let colon = line.iter().position(|b| *b == b':').ok_or(BodyError::Chunked("trailer line without a colon"))?;
    let name = http::HeaderName::from_bytes(&line[..colon]).map_err(|_| BodyError::Chunked("invalid trailer name"))?;
    let value = http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
        .map_err(|_| BodyError::Chunked("invalid trailer value"))?;
    if !crate::headers::trailer_allowed(&name) {
        return Ok(());
    }
    let map = trailers.get_or_insert_with(Box::default);
    if map.len() >= MAX_HEADERS {
        return Err(BodyError::Chunked("too many trailer fields"));
    }
    map.append(name, value);
    Ok(())
}

/// The length of the next line of chunked framing (a size line or a trailer
/// line) when its CRLF has arrived. A bare LF or CR is refused, not taken as
/// part of the line: a peer that ends lines with LF alone could otherwise
/// hide what follows (the next response) inside a trailer.
fn find_line(buf: &[u8]) -> Result<Option<usize>, BodyError> {
    let Some(lf) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.iter().position(|b| *b == b'\r').is_some_and(|cr| cr + 1 < buf.len()) {
            Err(BodyError::Chunked("bare CR in chunked framing"))
        } else {
            Ok(None)
        };
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(BodyError::Chunked("bare LF in chunked framing"));
    }
    if buf[..lf - 1].contains(&b'\r') {
        return Err(BodyError::Chunked("bare CR in chunked framing"));
    }
    Ok(Some(lf - 1))
}

/// Bytes read past the end of a body (0 when it ended exactly at the end of
/// what was read). Any is a reason never to reuse the connection.
pub fn bytes_after_body(wire: &Connection) -> usize {
    wire.buf.len()
}

/// A whole response in `bytes`, as one exchange would read it (a GET; the
/// connection closes after the last byte): status and body, or the error
/// that would cut it. For the differential test against hyper's client.
pub fn parse_whole(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut buf = BytesMut::from(bytes);
    let mut interim = 0;
    let head = loop {
        match parse_head(&mut buf, &Method::GET) {
            Ok(Parsed::Done(h)) => break h,
            Ok(Parsed::Interim) if interim < super::MAX_INTERIM => interim += 1,
            Ok(Parsed::Interim) => return Err(Malformed::TooManyInterim(super::MAX_INTERIM).to_string()),
            Ok(Parsed::Partial) => return Err("connection closed before a response head".into()),
            Err(ExchangeError::Protocol(why)) => return Err(why.to_string()),
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
            match decode_chunked(&mut buf, state, &mut None).map_err(|e| e.to_string())? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => break,
                Decoded::NeedMore => return Err(BodyError::TruncatedChunked.to_string()),
            }
        },
    }
    Ok((head.status.as_u16(), body))
}
