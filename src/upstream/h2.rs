//! HTTP/2 to an upstream (`protocol: h2c`): hyper's HTTP/2 client, many
//! streams over few connections per endpoint.
//!
//! An endpoint keeps a short list of connections. A request takes the first
//! one that is open and carries fewer than `STREAMS_PER_CONN` of weir's
//! streams; when all are that busy (or none is open) another is dialled. A
//! connection the upstream ends (GOAWAY) lets its streams finish and is
//! then gone from the list: hyper's connection task ends and the handle
//! reports closed. Pings keep an idle connection known alive.

use super::error::{BoxError, Reset, UpstreamError};
use bytes::Bytes;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The request body type HTTP/2 connections carry (the client's body,
/// boxed: one allocation per request on this path).
pub type H2Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Streams weir puts on one connection before it opens another. Servers
/// commonly advertise 100 or more in SETTINGS_MAX_CONCURRENT_STREAMS; past
/// the server's own limit hyper waits for a stream to end.
const STREAMS_PER_CONN: usize = 100;
/// Connections kept per endpoint.
const MAX_CONNS: usize = 16;

/// One HTTP/2 connection's request handle and weir's streams on it.
pub struct H2Conn<B> {
    send: http2::SendRequest<B>,
    streams: Arc<AtomicUsize>,
}

impl<B> Clone for H2Conn<B> {
    fn clone(&self) -> Self {
        Self { send: self.send.clone(), streams: Arc::clone(&self.streams) }
    }
}

/// Counts a stream on its connection until dropped (the response body's end).
pub struct Stream(Arc<AtomicUsize>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> H2Conn<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Send `req` on this connection; the response head, and the stream's
    /// claim (drop it when the body ends).
    pub async fn send(
        &mut self,
        req: http::Request<B>,
    ) -> Result<(http::Response<hyper::body::Incoming>, Stream), SendError<B>> {
        self.streams.fetch_add(1, Ordering::Relaxed);
        let stream = Stream(Arc::clone(&self.streams));
        match self.send.try_send_request(req).await {
            Ok(resp) => Ok((resp, stream)),
            Err(mut e) => match e.take_message() {
                Some(req) => Err(SendError::Unsent(Box::new(req), e.into_error())),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }
}

/// A send that failed: before the request left (the connection went away
/// first, e.g. a GOAWAY that raced the checkout: the request comes back,
/// safe to send on another connection), or after.
pub enum SendError<B> {
    Unsent(Box<http::Request<B>>, hyper::Error),
    Failed(hyper::Error),
}

impl<B> SendError<B> {
    pub fn into_error(self) -> hyper::Error {
        match self {
            SendError::Unsent(_, e) | SendError::Failed(e) => e,
        }
    }
}

/// An endpoint's HTTP/2 connections.
pub struct H2Pool<B> {
    conns: Mutex<Vec<H2Conn<B>>>,
}

impl<B> Default for H2Pool<B> {
    fn default() -> Self {
        Self { conns: Mutex::new(Vec::new()) }
    }
}

impl<B> H2Pool<B> {
    /// An open connection with room for another stream.
    pub fn checkout(&self) -> Option<H2Conn<B>>
    where
        B: 'static,
    {
        let mut conns = self.conns.lock().ok()?;
        conns.retain(|c| !c.send.is_closed());
        conns.iter().find(|c| c.send.is_ready() && c.streams.load(Ordering::Relaxed) < STREAMS_PER_CONN).cloned()
    }

    pub fn add(&self, conn: H2Conn<B>) {
        if let Ok(mut conns) = self.conns.lock()
            && conns.len() < MAX_CONNS
        {
            conns.push(conn);
        }
    }

    /// Forget every connection: each closes once its streams are done.
    pub fn close_all(&self) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock().map_or(0, |c| c.len())
    }
}

/// The HTTP/2 handshake (prior knowledge, no TLS) on a dialled stream; the
/// connection is driven by a task of its own until it closes.
pub async fn handshake<B, T>(io: T, upstream: Arc<str>, endpoint: String) -> Result<H2Conn<B>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        // The same bound as an HTTP/1.1 upstream's head (`wire::MAX_HEAD`):
        // a larger response head is refused, the stream reset.
        .max_header_list_size(64 * 1024)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Reset(Reset::H2Handshake(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %upstream, endpoint = %endpoint, error = %e, "HTTP/2 upstream connection ended");
        }
    });
    Ok(H2Conn { send, streams: Arc::new(AtomicUsize::new(0)) })
}
