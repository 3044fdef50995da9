//! The body weir sends to clients: either the upstream's (streamed, with
//! the pooled connection given back at its end) or a small local one. When
//! the body is dropped, the request is complete: its `Completion` writes the
//! access-log line and releases the in-flight slot.

use super::Completion;
use crate::upstream::PooledBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

enum Inner {
    Upstream(PooledBody),
    Local(Option<Bytes>),
}

pub struct RespBody {
    inner: Inner,
    bytes_out: u64,
    /// Set once the upstream body ended cleanly (or for local bodies).
    complete: bool,
    completion: Option<Box<Completion>>,
}

impl RespBody {
    pub fn upstream(body: PooledBody, completion: Option<Box<Completion>>) -> Self {
        Self { inner: Inner::Upstream(body), bytes_out: 0, complete: false, completion }
    }

    pub fn local(text: Bytes, completion: Option<Box<Completion>>) -> Self {
        Self { inner: Inner::Local(Some(text)), bytes_out: 0, complete: true, completion }
    }

    /// No body at all (a trailers-only gRPC answer: the head ends the stream).
    pub fn local_empty(completion: Option<Box<Completion>>) -> Self {
        Self { inner: Inner::Local(None), bytes_out: 0, complete: true, completion }
    }

    pub fn empty() -> Self {
        Self { inner: Inner::Local(None), bytes_out: 0, complete: true, completion: None }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::upstream::BoxError>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Local(b) => Poll::Ready(b.take().map(|b| {
                this.bytes_out += b.len() as u64;
                Ok(Frame::data(b))
            })),
            Inner::Upstream(body) => {
                let out = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &out {
                    Some(Ok(frame)) => {
                        if let Some(d) = frame.data_ref() {
                            this.bytes_out += d.len() as u64;
                            if let Some(c) = this.completion.as_mut().filter(|c| c.grpc) {
                                c.grpc_received.feed(d);
                            }
                        } else if let (Some(t), Some(c)) = (frame.trailers_ref(), this.completion.as_mut())
                            && c.grpc
                        {
                            c.grpc_status =
                                t.get("grpc-status").and_then(|v| crate::labels::parse_grpc_status(v.as_bytes()));
                        }
                        if body.is_end_stream() {
                            this.complete = true;
                        }
                    }
                    None => this.complete = true,
                    Some(Err(e)) => {
                        // A stalled upstream body: the client's request failed
                        // by the upstream's fault, a timeout of that version.
                        let idle = e
                            .downcast_ref::<crate::upstream::BodyError>()
                            .is_some_and(|b| matches!(b, crate::upstream::BodyError::Idle(_)));
                        if idle && let Some(completion) = this.completion.as_mut() {
                            completion.flags.push("upstream_body_timeout");
                            if let Some((m, v)) = &completion.metrics {
                                m.version(*v).upstream_error(crate::labels::ErrorKind::Timeout);
                            }
                        }
                    }
                }
                Poll::Ready(out)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Local(b) => b.is_none(),
            Inner::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Local(None) => SizeHint::with_exact(0),
            Inner::Upstream(b) => b.size_hint(),
        }
    }
}

impl Drop for RespBody {
    fn drop(&mut self) {
        if let Some(completion) = self.completion.take() {
            let complete = self.complete || self.is_end_stream();
            completion.finish(self.bytes_out, complete);
        }
    }
}
