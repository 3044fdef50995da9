//! The two ends of a relayed socket, and how the relay reads them.
//!
//! `Source` lets a read side decide when the relay's buffer exists. Today
//! every side is read through `AsyncRead` (hyper's `Upgraded`), which needs
//! the buffer while it waits. A bare-TCP source that waited for readability
//! without a buffer was built and measured (issue 22): idle sockets came out
//! at 15.4 KiB each against 13.1 KiB through `Upgraded`, for reasons not yet
//! found, so it is not used (docs/performance.md, "Idle WebSockets").

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};

/// The size of a relay buffer while traffic is light: 2 × 4 KiB were 60 %
/// of weir's heap per idle WebSocket (valgrind massif, 1,000 sockets).
pub const BUF: usize = 512;

/// Where one direction of the relay reads from.
pub trait Source: Send {
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
    async fn fill(&mut self, buf: &mut Vec<u8>, at: usize) -> io::Result<usize> {
        ready(buf, at);
        self.read(&mut buf[at..]).await
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
