//! The request body's way to the upstream, for requests that have one:
//! the head goes out with the first piece of body; each write must be
//! taken within `body_timeout` while the answer is awaited, and within
//! `AFTER_ANSWER` once an early answer has ended; what the upstream no
//! longer takes is drained or reset (`Leftover`), never left hanging.

use super::super::error::{BodyTimeout, BodyTooLarge, BoxError, ClientBody, UpstreamError};
use super::{ExchangeError, ReqBodyLike, ReqFraming};
use bytes::Bytes;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// What becomes of a request body the upstream no longer needs: its
/// response has ended before the body did, or the upstream stopped
/// taking it after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Read to its end and dropped (HTTP/1.1: closing the client's
    /// connection on unread bytes could reset it before it reads the
    /// answer; nginx's lingering close does the same).
    Drain,
    /// Dropped once the response has ended (HTTP/2: the stream is then
    /// reset with NO_ERROR, RFC 9113 §8.1, and the client stops sending).
    Reset,
}

/// The upload of one request body (see `exchange_streaming`): the head with
/// the first piece of body, then the rest as the upstream takes it; when
/// the upstream stops taking it, what is left is drained or reset as
/// `leftover` says. Returns the write half and how the upload ended.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut wr: W,
    head: Vec<u8>,
    first: Option<Bytes>,
    mut body: impl ReqBodyLike,
    (framing, trailers): (ReqFraming, Option<http::HeaderMap>),
    mut pace: Pace,
    leftover: Leftover,
) -> (W, Result<(), Sent>) {
    let sent = send_body(&mut wr, &head, (first, trailers), &mut body, framing, &mut pace).await;
    if matches!(sent, Err(Sent::Io(_) | Sent::Answered)) {
        // The upstream stopped taking the body; it may have answered
        // early (a 413, a 401). The rest is the client's: drained or,
        // on HTTP/2 once the answer has ended, reset (see `Leftover`).
        // The body's own limits (size, `body_timeout` per read) bound
        // the drain; without an answer the exchange fails at once and
        // this is dropped with it.
        match (leftover, pace.answered.take()) {
            (Leftover::Drain, _) => discard(&mut body).await,
            // The answer has ended: drop the body now (the stream reset).
            (Leftover::Reset, None) => {}
            // Drained until the answer ends, then dropped.
            (Leftover::Reset, Some(answered)) => {
                tokio::select! {
                    () = discard(&mut body) => {}
                    _ = answered => {}
                }
            }
        }
    }
    (wr, sent)
}

pub(super) enum Sent {
    Io(io::Error),
    /// The answer has ended and the upstream stopped taking the body
    /// (`AFTER_ANSWER`).
    Answered,
    Body(UpstreamError),
    /// The upstream took nothing for this long.
    Stalled(Duration),
}

/// How an upload ended, for the exchange: a body or stall error ends it;
/// a failed write does not (the upstream may have answered and closed), it
/// is kept to report if no answer comes.
pub(super) fn upload_ended(sent: Result<(), Sent>) -> Result<Option<io::Error>, ExchangeError> {
    match sent {
        Ok(()) => Ok(None),
        Err(Sent::Body(e)) => Err(ExchangeError::Body(e)),
        Err(Sent::Stalled(d)) => Err(ExchangeError::Stalled(d)),
        Err(Sent::Io(e)) => Ok(Some(e)),
        // Only after the exchange has handed the answer on; kept as a
        // failed write should it ever be seen here.
        Err(Sent::Answered) => Ok(Some(io::Error::other("the answer ended before the request body"))),
    }
}

/// How long, once the answer has ended, the upstream may take to accept
/// each write of the rest of the body. An upstream that answered early and
/// still reads (a streaming API that acknowledges first) gets the whole
/// body; one that stopped reading no longer holds the client's upload:
/// what is left is drained or reset (`Leftover`).
const AFTER_ANSWER: Duration = Duration::from_secs(1);

/// The upload's write deadlines: `body_timeout` per write while the answer
/// has not ended, then `AFTER_ANSWER`.
pub(super) struct Pace {
    pub(super) limit: Duration,
    /// Resolves when the answer has ended (see `exchange_streaming`);
    /// None once it has.
    pub(super) answered: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Pace {
    async fn write(&mut self, wr: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) -> Result<(), Sent> {
        let write = wr.write_all(bytes);
        tokio::pin!(write);
        if let Some(answered) = self.answered.as_mut() {
            let limit = self.limit;
            tokio::select! {
                biased;
                done = tokio::time::timeout(limit, &mut write) => {
                    return match done {
                        Err(_) => Err(Sent::Stalled(limit)),
                        Ok(r) => r.map_err(Sent::Io),
                    };
                }
                _ = answered => self.answered = None,
            }
        }
        match tokio::time::timeout(AFTER_ANSWER, &mut write).await {
            Err(_) => Err(Sent::Answered),
            Ok(r) => r.map_err(Sent::Io),
        }
    }
}

/// One write, cut off when the upstream takes nothing for `limit`.
pub(super) async fn stalls(
    limit: Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> Result<(), Sent> {
    match tokio::time::timeout(limit, write).await {
        Err(_) => Err(Sent::Stalled(limit)),
        Ok(r) => r.map_err(Sent::Io),
    }
}

/// Read what is left of a body and drop it (see the early answer in
/// `exchange_streaming`). Ends at the body's end or its first error: the
/// body's own limits bound it.
pub(super) async fn discard(body: &mut impl ReqBodyLike) {
    while let Some(Ok(_)) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await {}
}

/// The next non-empty piece of body, or None at its end. Trailer fields
/// are kept in `trailers` (those a trailer may carry), for a chunked
/// upload's last chunk.
pub(super) async fn next_data(
    body: &mut impl ReqBodyLike,
    trailers: &mut Option<http::HeaderMap>,
) -> Result<Option<Bytes>, Sent> {
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx)).await;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(Sent::Body(body_error(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) if !d.is_empty() => return Ok(Some(d)),
                Ok(_) => {}
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        let mut kept = http::HeaderMap::new();
                        for (name, value) in t.iter().filter(|(n, _)| crate::headers::trailer_allowed(n)) {
                            kept.append(name, value.clone());
                        }
                        if !kept.is_empty() {
                            *trailers = Some(kept);
                        }
                    }
                }
            },
        }
    }
}

/// The last chunk of a chunked upload, with the trailer fields if any
/// (RFC 9112 §7.1.2).
fn last_chunk(out: &mut Vec<u8>, trailers: Option<&http::HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Stream the body after the head. The head goes out with the first piece
/// of body, `first` (already read: see `exchange_streaming`), in one write.
async fn send_body(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    head: &[u8],
    (first, mut trailers): (Option<Bytes>, Option<http::HeaderMap>),
    body: &mut impl ReqBodyLike,
    framing: ReqFraming,
    pace: &mut Pace,
) -> Result<(), Sent> {
    let mut sent: u64 = 0;
    let mut pending_head = Some(head);
    let mut out: Vec<u8> = Vec::new();
    let mut first = first;
    let empty = first.is_none();
    loop {
        let data = match first.take() {
            Some(d) => d,
            None if empty => break,
            None => match next_data(body, &mut trailers).await? {
                Some(d) => d,
                None => break,
            },
        };
        sent = sent.saturating_add(data.len() as u64);
        if matches!(framing, ReqFraming::Length(n) if sent > n) {
            return Err(Sent::Body(UpstreamError::ClientBody(ClientBody::Longer)));
        }
        out.clear();
        if let Some(h) = pending_head.take() {
            out.extend_from_slice(h);
        }
        if framing == ReqFraming::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.is_empty() && framing != ReqFraming::Chunked {
            pace.write(wr, &data).await?;
            continue;
        }
        out.extend_from_slice(&data);
        if framing == ReqFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        pace.write(wr, &out).await?;
    }
    if matches!(framing, ReqFraming::Length(n) if sent != n) {
        return Err(Sent::Body(UpstreamError::ClientBody(ClientBody::Shorter)));
    }
    out.clear();
    if let Some(h) = pending_head.take() {
        out.extend_from_slice(h);
    }
    if framing == ReqFraming::Chunked {
        // Trailers travel only in chunked framing; with a Content-Length
        // there is nowhere to put them, and they are dropped.
        last_chunk(&mut out, trailers.as_ref());
    }
    if out.is_empty() {
        return Ok(());
    }
    pace.write(wr, &out).await
}

/// Sort a request body error into the limit, the stall, or a broken client.
pub fn body_error(e: BoxError) -> UpstreamError {
    if e.is::<BodyTooLarge>() {
        UpstreamError::BodyTooLarge
    } else if e.is::<BodyTimeout>() {
        UpstreamError::BodyTimeout
    } else {
        UpstreamError::ClientBody(ClientBody::Broken(e))
    }
}
