//! Serving one accepted client connection with hyper.
//!
//! Plain TCP: weir tells HTTP/2 with prior knowledge (h2c) from HTTP/1 by
//! peeking at the first bytes (the 24-byte HTTP/2 preface) and then hands the
//! socket itself to hyper's HTTP/1 or HTTP/2 server. Nothing wraps the
//! socket, so an upgraded WebSocket gets the bare `TcpStream` back (the relay
//! then waits for readability without holding a buffer) and no read passes
//! through a rewind layer. TLS: ALPN says which.

use crate::config::Limits;
use crate::limits::Activity;
use crate::proxy::{Peer, Proxy};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The hyper server settings from the limits (design §8, hardening.md).
pub struct Servers {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// An HTTP/2 connection with no stream open this long is closed.
    h2_idle: Duration,
}

impl Servers {
    pub fn new(limits: &Limits) -> Self {
        let mut h1 = http1::Builder::new();
        // Without a timer the header-read timeout silently does nothing.
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_headers)
            .max_buf_size(limits.max_header_bytes)
            // The read buffer limit alone is not a head limit: one large
            // read can bring a whole oversized head in before it is
            // checked. This one is checked against the parsed head.
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(100)
            .max_header_list_size(16 * 1024)
            .max_pending_accept_reset_streams(50)
            .max_local_error_reset_streams(Some(256))
            // WebSocket over HTTP/2 (RFC 8441 extended CONNECT).
            .enable_connect_protocol();
        Self { h1, h2, h2_idle: limits.idle_timeout }
    }
}

/// Does this plain-TCP client open with the HTTP/2 preface? Peeks (reads
/// nothing); `None` when the peer closed, failed or stalled inside the
/// preface past `deadline`.
async fn speaks_h2(stream: &TcpStream, deadline: Duration) -> Option<bool> {
    let sniff = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        // A peer that stops part-way through the preface keeps the socket
        // readable, so peeking again at once would spin: back off instead.
        let mut pause = Duration::from_millis(1);
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 || buf[..n] != H2_PREFACE[..n] {
                // HTTP/1 (or EOF, which hyper's HTTP/1 side handles quietly).
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    };
    tokio::time::timeout(deadline, sniff).await.ok().flatten()
}

/// One accepted client connection.
pub struct ClientConn {
    pub builder: Arc<Servers>,
    pub proxy: Arc<Proxy>,
    pub stop: CancellationToken,
    pub peer: SocketAddr,
    pub permit: crate::limits::ConnPermit,
    /// Set by the TLS handshake when the client presented a certificate
    /// the listener's `client_ca` verified.
    pub client_cert: Option<Arc<crate::tls::ClientCert>>,
}

impl ClientConn {
    /// A plain-TCP connection: HTTP/1.1 (with upgrades) or h2c.
    pub async fn serve_plain(self, stream: TcpStream, deadline: Duration) {
        let Some(h2) = speaks_h2(&stream, deadline).await else { return };
        self.serve(TokioIo::new(stream), h2, false).await;
    }

    /// Serve until the peer is done, or until shutdown asks the connection
    /// to finish its in-flight work and close. TLS connections come here
    /// with `h2` from ALPN (RFC 9113 §3.2: h2 over TLS is negotiated).
    pub async fn serve<I>(self, io: TokioIo<I>, h2: bool, https: bool)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (builder, stop) = (Arc::clone(&self.builder), self.stop.clone());
        // Each protocol's connection is boxed on its own: a connection task
        // is as large as the largest future it could hold, and it holds
        // that for the connection's whole life; this way an idle HTTP/1.1
        // connection holds HTTP/1.1's state and no room for HTTP/2's or
        // TLS's (benches/idle.sh).
        if h2 {
            // HTTP/2 has no head deadline between requests: an idle
            // connection is closed after `idle_timeout` with no stream
            // open (GOAWAY first, so a request in the race still finishes).
            let born = tokio::time::Instant::now();
            let activity = Activity::new(born);
            let svc = self.service_h2(https, Arc::clone(&activity));
            let mut conn = Box::pin(builder.h2.serve_connection(io, svc));
            let idle = tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => false,
                _ = crate::limits::idle(&activity, builder.h2_idle, born) => true,
            };
            conn.as_mut().graceful_shutdown();
            if idle {
                // A peer that never answers the GOAWAY's ping would keep a
                // closing connection forever: it gets one more idle period.
                let now = tokio::time::Instant::now();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = crate::limits::idle(&activity, builder.h2_idle, now) => {}
                }
            } else {
                let _ = conn.await;
            }
        } else {
            let svc = self.service_h1(https);
            let mut conn = Box::pin(builder.h1.serve_connection(io, svc).with_upgrades());
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }
    }

    /// The connection's peer, shared by its requests.
    fn peer(self, https: bool, activity: Option<Arc<Activity>>) -> (Arc<Proxy>, Arc<Peer>) {
        let ClientConn { proxy, peer, permit, client_cert, .. } = self;
        (proxy, Arc::new(Peer::new(peer, https, permit, activity, client_cert)))
    }

    /// HTTP/1.1: the request future (`Proxy::handle`, about 3 KiB) stays
    /// inline. hyper keeps room for it in each connection; boxing it per
    /// request would save an idle HTTP/1.1 connection that much RSS but
    /// cost instructions on every request (docs/performance.md, "Idle
    /// connections"), and idle HTTP/1.1 connections last at most
    /// `header_read_timeout`.
    fn service_h1(
        self,
        https: bool,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<crate::proxy::RespBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<hyper::Response<crate::proxy::RespBody>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        let (proxy, peer) = self.peer(https, None);
        service_fn(move |req| Arc::clone(&proxy).handle(Arc::clone(&peer), req))
    }

    /// HTTP/2: the request future is boxed. hyper spawns a task per stream
    /// holding it, and that task's future is moved several times on the way
    /// in and out of the runtime: a pointer moves for nothing, kilobytes do
    /// not (callgrind, with a 5.4 KiB future: the copies were a fifth of an
    /// h2 request's instructions).
    fn service_h2(
        self,
        https: bool,
        activity: Arc<Activity>,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<crate::proxy::RespBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<hyper::Response<crate::proxy::RespBody>, Infallible>> + Send,
    > + Clone
    + Send
    + 'static {
        let (proxy, peer) = self.peer(https, Some(activity));
        service_fn(move |req| Box::pin(Arc::clone(&proxy).handle(Arc::clone(&peer), req)))
    }
}
