//! Why an attempt failed: the upstream room's error vocabulary, at the
//! bottom of its ladder so every inner room can use it.

use crate::config::RetryOn;
use std::time::Duration;

/// The client stopped sending its body for longer than `body_timeout`.
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no request body data within the body timeout")
    }
}
impl std::error::Error for BodyTimeout {}

/// The first error of type `T` among the causes of a hyper error.
fn cause<T: std::error::Error + 'static>(e: &hyper::Error) -> Option<&T> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        source = s.source();
    }
    None
}

/// True if a hyper error was caused by our body timeout.
pub fn is_body_timeout(e: &hyper::Error) -> bool {
    cause::<BodyTimeout>(e).is_some()
}

/// The client sent more than `max_request_body`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over the configured limit")
    }
}
impl std::error::Error for BodyTooLarge {}

/// True if a hyper error was caused by our body limit.
pub fn is_body_too_large(e: &hyper::Error) -> bool {
    cause::<BodyTooLarge>(e).is_some()
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an upstream could not answer. Mapped to a status in `proxy::error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect refused or failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("no endpoint to send to (none known yet, or all tried)")]
    NoEndpoints,
    #[error("no response headers within the request timeout")]
    Timeout,
    #[error("connection reset or closed before a response: {0}")]
    Reset(Reset),
    #[error("invalid response: {0}")]
    Protocol(Malformed),
    #[error("unsolicited 101 Switching Protocols")]
    Protocol101,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyTimeout,
    #[error("request body failed: {0}")]
    ClientBody(ClientBody),
    #[error("the upstream took no request body bytes for {0:?} (upstream body_timeout)")]
    UploadStalled(Duration),
}

/// How the connection ended before a whole answer.
#[derive(Debug, thiserror::Error)]
pub enum Reset {
    /// The socket failed or closed (weir's own HTTP/1.1 exchange).
    #[error("{0}")]
    Io(std::io::Error),
    /// hyper's client (HTTP/2 streams, WebSocket handshakes) ended it.
    #[error("{0}")]
    Hyper(hyper::Error),
    /// The HTTP/2 connection preface and settings did not complete.
    #[error("HTTP/2 handshake: {0}")]
    H2Handshake(hyper::Error),
    /// A connection still streaming an upload cannot carry a handshake.
    #[error("connection not whole")]
    NotWhole,
    /// The HTTP/2 upstream refused the stream (REFUSED_STREAM, RFC 9113
    /// §8.7): it did not process the request, so any method may be sent
    /// again.
    #[error("stream refused (not processed): {0}")]
    Refused(hyper::Error),
}

/// Why an answer was refused: what weir will not frame or pass on.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("response head too large")]
    HeadTooLarge,
    #[error("invalid response head: {0}")]
    Head(httparse::Error),
    #[error("invalid status {0}")]
    Status(u16),
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncodingInHttp10,
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value for header {0}")]
    HeaderValue(http::HeaderName),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    #[error("empty Transfer-Encoding")]
    EmptyTransferEncoding,
    #[error("more than {0} interim (1xx) responses")]
    TooManyInterim(usize),
    #[error("the upstream sent a response before the request")]
    AnswerBeforeRequest,
    /// hyper's client could not parse the answer.
    #[error("{0}")]
    Hyper(hyper::Error),
    #[error("cannot form an HTTP/2 request: {0}")]
    H2Request(http::Error),
    #[error("WebSocket to an HTTP/2 upstream is not supported")]
    WebSocketOverH2,
    /// weir's own invariants (never expected; a bug if seen).
    #[error("a connection still uploading cannot carry a request")]
    StillUploading,
    #[error("socket halves do not match")]
    Halves,
    #[error("no answer can end before the request is sent")]
    EndedBeforeSent,
}

/// How the client's request body failed (not the upstream's fault).
#[derive(Debug, thiserror::Error)]
pub enum ClientBody {
    #[error("body longer than its Content-Length")]
    Longer,
    #[error("body shorter than its Content-Length")]
    Shorter,
    #[error("data on a request whose content-length is 0")]
    DataOnEmpty,
    /// The client connection broke or sent something invalid.
    #[error("{0}")]
    Broken(BoxError),
    /// hyper refused the body while sending it.
    #[error("{0}")]
    Hyper(hyper::Error),
}

use crate::labels::ErrorKind;

impl UpstreamError {
    /// Which `weir_upstream_errors_total{kind}` counts it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            UpstreamError::Connect(_) | UpstreamError::NoEndpoints => ErrorKind::Connect,
            UpstreamError::ConnectTimeout | UpstreamError::Timeout | UpstreamError::UploadStalled(_) => {
                ErrorKind::Timeout
            }
            UpstreamError::Reset(_) => ErrorKind::Reset,
            UpstreamError::Protocol(_) | UpstreamError::Protocol101 => ErrorKind::Protocol,
            UpstreamError::BodyTooLarge | UpstreamError::BodyTimeout | UpstreamError::ClientBody(_) => {
                ErrorKind::Client
            }
        }
    }

    /// True when the request never left weir (safe to send elsewhere).
    pub fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout | UpstreamError::NoEndpoints)
    }

    /// True when the upstream never acted on the request: not connected,
    /// or an HTTP/2 stream it refused. Safe to send again for any method.
    pub fn is_unprocessed(&self) -> bool {
        self.is_connect() || matches!(self, UpstreamError::Reset(Reset::Refused(_)))
    }

    /// Which `retry.on` word this failure is, if any. A refused HTTP/2
    /// stream is a `connect_failure`: the request reached no application.
    pub fn retry_on(&self) -> Option<RetryOn> {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::ConnectTimeout
            | UpstreamError::NoEndpoints
            | UpstreamError::Reset(Reset::Refused(_)) => Some(RetryOn::ConnectFailure),
            UpstreamError::Reset(_) | UpstreamError::Protocol(_) => Some(RetryOn::Reset),
            UpstreamError::Timeout => Some(RetryOn::Timeout),
            _ => None,
        }
    }
}

/// Sort a hyper client error into what happened.
pub fn classify(e: hyper::Error) -> UpstreamError {
    if is_body_too_large(&e) {
        return UpstreamError::BodyTooLarge;
    }
    if is_body_timeout(&e) {
        return UpstreamError::BodyTimeout;
    }
    if e.is_user() || e.is_body_write_aborted() {
        return UpstreamError::ClientBody(ClientBody::Hyper(e));
    }
    if e.is_parse() || e.is_parse_status() {
        return UpstreamError::Protocol(Malformed::Hyper(e));
    }
    if refused_stream(&e) {
        return UpstreamError::Reset(Reset::Refused(e));
    }
    UpstreamError::Reset(Reset::Hyper(e))
}

/// True if hyper's error is the upstream's RST_STREAM with REFUSED_STREAM.
fn refused_stream(e: &hyper::Error) -> bool {
    cause::<h2::Error>(e).is_some_and(|h2| h2.is_remote() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}
