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

/// True if a hyper error was caused by our body timeout.
pub fn is_body_timeout(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTimeout>() {
            return true;
        }
        source = s.source();
    }
    false
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
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<BodyTooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
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
    Reset(String),
    #[error("invalid response: {0}")]
    Protocol(String),
    #[error("unsolicited 101 Switching Protocols")]
    Protocol101,
    #[error("request body over the limit")]
    BodyTooLarge,
    #[error("request body stalled")]
    BodyTimeout,
    #[error("request body failed: {0}")]
    ClientBody(String),
    #[error("the upstream took no request body bytes for {0:?} (upstream body_timeout)")]
    UploadStalled(Duration),
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

    /// Which `retry.on` word this failure is, if any.
    pub fn retry_on(&self) -> Option<RetryOn> {
        match self {
            UpstreamError::Connect(_) | UpstreamError::ConnectTimeout | UpstreamError::NoEndpoints => {
                Some(RetryOn::ConnectFailure)
            }
            UpstreamError::Reset(_) | UpstreamError::Protocol(_) => Some(RetryOn::Reset),
            UpstreamError::Timeout => Some(RetryOn::Timeout),
            _ => None,
        }
    }
}
