//! The two ends of a relayed socket, and how the relay reads them.
//!
//! An idle WebSocket should cost little more than its two sockets. When both
//! upgrades hand back the bare `TcpStream` (plain-TCP client, weir's own
//! upstream connection), the relay waits for readability with no buffer at
//! all and takes one only when bytes are there; it lets a small buffer go
//! again once a read has been forwarded. Other transports (TLS, an HTTP/2
//! stream) are read through `AsyncRead`, which needs the buffer while it
//! waits.

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The size of a relay buffer while traffic is light.
pub const BUF: usize = 4 * 1024;

/// Where one direction of the relay reads from.
pub trait Source: Send {
    /// The buffer may be let go between reads: readiness is awaited
    /// without one.
    const PARKS: bool;

    /// Read into `buf[at..]`, making `buf` `BUF` long first if it was let
    /// go. `Ok(0)` is the end of the stream.
    fn fill<'a>(&'a mut self, buf: &'a mut Vec<u8>, at: usize) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

fn ready(buf: &mut Vec<u8>, at: usize) {
    if buf.len() <= at {
        buf.resize(BUF.max(at + 1), 0);
    }
}

impl<T: AsyncRead + Send> Source for ReadHalf<T> {
    const PARKS: bool = false;

    async fn fill(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        ready(buf, at);
        self.read(&mut buf[at..]).await
    }
}

/// A bare TCP read side, with what hyper had already read past the
/// handshake (replayed first).
pub struct Parked {
    half: OwnedReadHalf,
    prefix: Bytes,
}

impl Source for Parked {
    const PARKS: bool = true;

    async fn fill(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        if !self.prefix.is_empty() {
            ready(buf, at);
            let n = self.prefix.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Ok(n);
        }
        loop {
            self.half.readable().await?;
            ready(buf, at);
            match self.half.try_read(&mut buf[at..]) {
                Ok(n) => return Ok(n),
                // Readiness can be stale; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One end of a relayed socket, split into its read and write halves.
pub trait Endpoint {
    type Read: Source;
    type Write: AsyncWrite + Unpin + Send;
    fn halves(self) -> (Self::Read, Self::Write);
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Endpoint for T {
    type Read = ReadHalf<T>;
    type Write = WriteHalf<T>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

/// A bare TCP socket taken back from hyper after the upgrade.
pub struct Bare {
    stream: TcpStream,
    prefix: Bytes,
}

impl Bare {
    /// The socket under an upgrade, when it is plain TCP.
    pub fn from_upgraded(up: Upgraded) -> Result<Self, Upgraded> {
        let parts = up.downcast::<TokioIo<TcpStream>>()?;
        Ok(Self { stream: parts.io.into_inner(), prefix: parts.read_buf })
    }
}

impl Endpoint for Bare {
    type Read = Parked;
    type Write = OwnedWriteHalf;
    fn halves(self) -> (Parked, OwnedWriteHalf) {
        let (half, w) = self.stream.into_split();
        (Parked { half, prefix: self.prefix }, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_parked_reader_replays_the_prefix_then_reads_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let bare = Bare { stream: server, prefix: Bytes::from(vec![7u8; BUF + 10]) };
        let (mut r, _w) = bare.halves();
        let mut buf = Vec::new();
        assert_eq!(r.fill(&mut buf, 0).await.unwrap(), BUF);
        assert_eq!(r.fill(&mut buf, 3).await.unwrap(), 10);
        assert_eq!(&buf[3..13], &[7u8; 10]);
        client.write_all(b"hello").await.unwrap();
        let mut released = Vec::new();
        assert_eq!(r.fill(&mut released, 0).await.unwrap(), 5);
        assert_eq!(&released[..5], b"hello");
        assert_eq!(released.len(), BUF);
        drop(client);
        assert_eq!(r.fill(&mut released, 0).await.unwrap(), 0);
    }
}
