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

/// The body a retry sends: none, or the copy kept while the first attempt
/// streamed the client's body.
pub(super) enum Replay {
    Empty,
    Copy(oneshot::Receiver<Bytes>),
    Whole(Bytes),
}

impl Replay {
    /// `body` with what a retry needs kept, or None when the request may
    /// not be sent twice (not idempotent, or a body undeclared or over
    /// `REPLAY_MAX_BODY`).
    pub(super) fn keep(body: ReqBody, method: &http::Method, declared: Option<u64>) -> (ReqBody, Option<Replay>) {
        use crate::upstream::{REPLAY_MAX_BODY, Tee, idempotent};
        if !idempotent(method) {
            return (body, None);
        }
        if http_body::Body::is_end_stream(&body) {
            return (body, Some(Replay::Empty));
        }
        match declared {
            Some(n) if n <= REPLAY_MAX_BODY => {
                let (tee, copy) = Tee::exact(REPLAY_MAX_BODY);
                (body.with_tee(tee), Some(Replay::Copy(copy)))
            }
            _ => (body, None),
        }
    }

    /// The copy is whole: the client's body ended within the cap.
    fn is_whole(&mut self) -> bool {
        if let Replay::Copy(copy) = self {
            match copy.try_recv() {
                Ok(b) => *self = Replay::Whole(b),
                Err(_) => return false,
            }
        }
        true
    }

    /// The body for one more attempt (after `is_whole`).
    fn body(&self) -> ReqBody {
        match self {
            Replay::Whole(b) => ReqBody::full(b.clone()),
            Replay::Empty | Replay::Copy(_) => ReqBody::empty(),
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
            // A body whose copy is not whole (it had not ended, or grew over
            // the cap) cannot be sent again.
            if !replay.is_whole() || !self.upstream.retry_after(tried, what, kind) {
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
