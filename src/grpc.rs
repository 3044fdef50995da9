//! gRPC's message framing, counted: each message is a 5-byte prefix (a
//! compressed flag and a big-endian length) and that many bytes. A call
//! that carries more than one message in either direction is a streaming
//! call, judged like a WebSocket session: its end is one unit of evidence
//! (bad when the server ended it with an error code or broke it), and its
//! duration enters no latency test. And `grpc-timeout`, the call's
//! deadline, read from its header.

use std::time::Duration;

/// Counts the messages in a stream of gRPC frames fed in pieces of any
/// size. Never fails: bytes that are not well framed just count as what
/// they look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Messages {
    count: u32,
    /// Prefix bytes of the current message seen so far (0–5).
    prefix_seen: u8,
    /// The length bytes read so far (big-endian), while in the prefix.
    length: u32,
    /// Bytes of the current message's payload still to come.
    left: u64,
}

impl Messages {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(data.len());
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            if self.prefix_seen == 0 {
                self.count = self.count.saturating_add(1);
                self.length = 0;
            }
            // Byte 0 is the compressed flag; bytes 1–4 the length.
            if self.prefix_seen >= 1 {
                self.length = (self.length << 8) | u32::from(data[0]);
            }
            self.prefix_seen += 1;
            data = &data[1..];
            if self.prefix_seen == 5 {
                self.prefix_seen = 0;
                self.left = u64::from(self.length);
            }
        }
    }

    /// Messages begun so far.
    pub fn count(&self) -> u32 {
        self.count
    }
}

/// `grpc-timeout` (gRPC over HTTP/2): 1–8 digits and a unit (H, M, S, m,
/// u, n). None if malformed.
pub fn parse_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8];
        f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn messages_are_counted_however_the_bytes_are_cut() {
        let mut stream = Vec::new();
        for p in [&b"hello"[..], b"", b"a longer message of some bytes", &[7u8; 70_000]] {
            stream.extend(frame(p));
        }
        for cut in [1, 2, 3, 5, 7, 4096, stream.len()] {
            let mut m = Messages::default();
            for piece in stream.chunks(cut) {
                m.feed(piece);
            }
            assert_eq!(m.count(), 4, "pieces of {cut}");
        }
        let mut one = Messages::default();
        one.feed(&frame(b"unary"));
        assert_eq!(one.count(), 1);
        assert_eq!(Messages::default().count(), 0);
    }

    proptest::proptest! {
        /// Any bytes in any pieces: never panics, and counts the same as
        /// the bytes fed at once.
        #[test]
        fn any_bytes_in_any_pieces(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
                                   cut in 1usize..40) {
            let mut whole = Messages::default();
            whole.feed(&bytes);
            let mut pieces = Messages::default();
            for p in bytes.chunks(cut) {
                pieces.feed(p);
            }
            proptest::prop_assert_eq!(whole, pieces);
        }
    }

    #[test]
    fn grpc_timeouts_parse_by_unit_and_refuse_the_malformed() {
        assert_eq!(parse_grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5u"), Some(Duration::from_micros(5)));
        for bad in [&b""[..], b"m", b"100", b"123456789S", b"1x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
