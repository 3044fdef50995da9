//! Retries of a request that can be sent twice: to another endpoint of the
//! same version (never the other version), within the upstream's retry
//! budget and what is left of `timeouts.request`, with the body sent again
//! from a copy kept while the first attempt streamed it.

use super::Completion;
use super::edge::AttemptLimits;
use super::phases::{self, Choice};
use crate::config::RetryOn;
use crate::upstream::{PooledBody, ReqBody, Tried, Upstream, UpstreamError};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response};
use tokio::sync::oneshot;

/// What a replayable request's retries need: another endpoint of the same
/// version (never the other version), within the retry budget and what is
/// left of `timeouts.request`.
pub(super) struct Retry<'a> {
    pub upstream: &'a Upstream,
    pub limits: &'a AttemptLimits,
    pub added: &'a [(&'static HeaderName, HeaderValue)],
    pub choice: &'a Choice<'a>,
}

type Attempt = Result<Response<PooledBody>, UpstreamError>;

/// What a retry sends again: the body (none, or the copy kept while the
/// first attempt streamed the client's), and whether the method may be
/// sent twice whatever happened (else only a request the upstream never
/// processed is).
pub(super) struct Replay {
    body: Copy,
    idempotent: bool,
}

enum Copy {
    Empty,
    Streaming(oneshot::Receiver<Bytes>),
    Whole(Bytes),
}

impl Replay {
    /// `body` with what a retry needs kept, or None when the request is
    /// never sent twice. An idempotent request is kept with no body or one
    /// declared within `REPLAY_MAX_BODY`; over HTTP/2 (`h2`), where an
    /// upstream can refuse a stream unprocessed, any request is kept with a
    /// body within the cap, declared or not.
    pub(super) fn keep(
        body: ReqBody,
        method: &http::Method,
        declared: Option<u64>,
        h2: bool,
    ) -> (ReqBody, Option<Self>) {
        use crate::upstream::{REPLAY_MAX_BODY, Tee, idempotent};
        let idempotent = idempotent(method);
        if !idempotent && !h2 {
            return (body, None);
        }
        if http_body::Body::is_end_stream(&body) {
            return (body, Some(Replay { body: Copy::Empty, idempotent }));
        }
        if !declared.map_or(h2, |n| n <= REPLAY_MAX_BODY) {
            return (body, None);
        }
        let (tee, copy) = Tee::exact(REPLAY_MAX_BODY);
        (body.with_tee(tee), Some(Replay { body: Copy::Streaming(copy), idempotent }))
    }

    /// May this failure be sent again: the copy is whole (the client's body
    /// ended within the cap), and the method allows it or the upstream
    /// never processed the request.
    fn allows(&mut self, failure: Option<&UpstreamError>) -> bool {
        if !self.idempotent && !failure.is_some_and(UpstreamError::is_unprocessed) {
            return false;
        }
        if let Copy::Streaming(copy) = &mut self.body {
            match copy.try_recv() {
                Ok(b) => self.body = Copy::Whole(b),
                Err(e) => {
                    tracing::debug!(error = %e, "not retried: the body's copy is not whole");
                    return false;
                }
            }
        }
        true
    }

    /// The body for one more attempt (after `allows`).
    fn body(&self) -> ReqBody {
        match &self.body {
            Copy::Whole(b) => ReqBody::full(b.clone()),
            Copy::Empty | Copy::Streaming(_) => ReqBody::empty(),
        }
    }
}

impl Retry<'_> {
    /// Try again while the last attempt failed in a way `retry.on` names
    /// and the upstream allows another; every failed attempt is charged to
    /// the version that saw it.
    pub(super) async fn until_settled(
        &self,
        mut attempt: Attempt,
        mut replay: Replay,
        parts: &mut Parts,
        tried: &mut Tried,
        completion: &mut Completion,
    ) -> Attempt {
        loop {
            let (what, kind) = match &attempt {
                Err(e) => match e.retry_on() {
                    Some(what) => (what, Some(e.kind())),
                    None => return attempt,
                },
                Ok(r) if r.status().is_server_error() => (RetryOn::Status(r.status().as_u16()), None),
                Ok(_) => return attempt,
            };
            if !replay.allows(attempt.as_ref().err()) || !self.upstream.retry_after(tried, what, kind) {
                return attempt;
            }
            drop(attempt); // a 5xx answer unread: its connection closes
            phases::charge_failed_attempts(self.choice, tried, completion);
            if self.limits.apply(parts).is_err() {
                // `timeouts.request` has run out: no time for another try.
                return Err(UpstreamError::Timeout);
            }
            attempt = match self.upstream.connect(tried).await {
                Ok(conn) => self.upstream.send(conn, parts, replay.body(), self.added).await,
                Err(e) => Err(e),
            };
            phases::charge_failed_attempts(self.choice, tried, completion);
        }
    }
}
