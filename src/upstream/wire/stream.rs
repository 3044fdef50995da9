//! The socket under an HTTP/1.1 upstream connection (plain TCP or TLS over
//! TCP) and what waits unread on it: the reuse check (`peek_stream`), which
//! under TLS reads waiting records into rustls and processes them.

use super::IdleState;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket under an HTTP/1.1 upstream connection.
pub enum Stream {
    Tcp(TcpStream),
    /// `upstreams.X.tls` with protocol http1 (ALPN `http/1.1`).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket itself (under TLS too).
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// What waits unread on a connection. Under TLS the records waiting on
/// the socket are read into rustls and processed now (a session ticket or
/// key update is not an answer; a close_notify closes): only application
/// data no request asked for is unsolicited.
pub(super) fn peek_stream(io: &mut Stream) -> IdleState {
    match io {
        Stream::Tcp(s) => peek(s),
        Stream::Tls(s) => match peek(s.get_ref().0) {
            IdleState::Quiet => tls_pending(s.get_ref().1),
            IdleState::Closed => IdleState::Closed,
            IdleState::Unsolicited(_) => settle_tls(s),
        },
    }
}

/// What rustls already holds: plaintext nobody read, or a close_notify.
fn tls_pending(conn: &rustls::ClientConnection) -> IdleState {
    if conn.wants_read() { IdleState::Quiet } else { IdleState::Closed }
}

/// Read the TLS records waiting on the socket into rustls without
/// blocking (a `recv` on the socket itself: tokio's `try_read` would not
/// look unless the reactor has reported it readable) and process them.
fn settle_tls(s: &mut tokio_rustls::client::TlsStream<TcpStream>) -> IdleState {
    use std::io::Read as _;
    let (tcp, conn) = s.get_mut();
    let sock = socket2::SockRef::from(&*tcp);
    // Bounded: an idle connection holds a few records at most.
    for _ in 0..16 {
        let mut reader = |buf: &mut [u8]| (&*sock).read(buf);
        match conn.read_tls(&mut FnReader(&mut reader)) {
            Ok(0) => return IdleState::Closed,
            Ok(_) => match conn.process_new_packets() {
                Err(_) => return IdleState::Closed,
                Ok(state) if state.plaintext_bytes_to_read() > 0 => {
                    return IdleState::Unsolicited(state.plaintext_bytes_to_read());
                }
                Ok(state) if state.peer_has_closed() => return IdleState::Closed,
                Ok(_) => {}
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return tls_pending(conn),
            Err(_) => return IdleState::Closed,
        }
    }
    IdleState::Closed
}

/// `std::io::Read` from a closure (for rustls's `read_tls`).
struct FnReader<'a, F: FnMut(&mut [u8]) -> io::Result<usize>>(&'a mut F);

impl<F: FnMut(&mut [u8]) -> io::Result<usize>> std::io::Read for FnReader<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (self.0)(buf)
    }
}

/// What waits unread on a socket, without reading it (`recv` with
/// `MSG_PEEK | MSG_DONTWAIT`: one system call, never blocks).
fn peek(io: &TcpStream) -> IdleState {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    match socket2::SockRef::from(io).recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => IdleState::Quiet,
        Err(_) | Ok(0) => IdleState::Closed,
        Ok(n) => IdleState::Unsolicited(n),
    }
}
