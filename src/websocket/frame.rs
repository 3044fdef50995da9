//! WebSocket frame boundaries (RFC 6455 §5.2), tracked without buffering
//! payloads: weir relays bytes as they come and only needs to know where one
//! frame ends, so it can put its own close or ping frame between two frames
//! (control frames may sit between the fragments of a message, §5.4).

use std::fmt;

pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The stream cannot be a WebSocket stream any more; boundaries are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedOpcode(u8),
    /// Control frames must be final and carry at most 125 bytes.
    BadControlFrame,
    /// 64-bit length with the top bit set.
    BadLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::BadControlFrame => f.write_str("fragmented or oversized control frame"),
            FrameError::BadLength => f.write_str("invalid 64-bit payload length"),
        }
    }
}

/// Where a byte stream is relative to its frames.
#[derive(Debug, Default, Clone)]
pub struct FrameTracker {
    /// Header bytes gathered so far (at most 14).
    hdr: [u8; 14],
    hdr_len: usize,
    /// Payload bytes left in the current frame.
    remaining: u64,
    opcode: u8,
    in_payload: bool,
}

/// What `consume` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    /// Bytes of the input taken.
    pub used: usize,
    /// Opcode of a frame that ended exactly at `used`.
    pub frame_end: Option<u8>,
}

impl FrameTracker {
    /// Between two frames: a frame of our own may be written now.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && !self.in_payload
    }

    /// Take bytes from `data` up to the end of the current frame (or all of
    /// them if it does not end there).
    pub fn consume(&mut self, data: &[u8]) -> Result<Consumed, FrameError> {
        let mut used = 0;
        if !self.in_payload {
            // Gather the header. Each byte is checked as soon as it can be,
            // so a broken frame is refused at the same byte however the
            // stream was split.
            while used < data.len() {
                self.hdr[self.hdr_len] = data[used];
                self.hdr_len += 1;
                used += 1;
                check_prefix(&self.hdr[..self.hdr_len])?;
                if let Some(need) = header_len(&self.hdr[..self.hdr_len])
                    && self.hdr_len == need
                {
                    let (opcode, len) = parse(&self.hdr[..need]);
                    self.opcode = opcode;
                    self.remaining = len;
                    self.hdr_len = 0;
                    self.in_payload = true;
                    break;
                }
            }
            if !self.in_payload {
                return Ok(Consumed { used, frame_end: None });
            }
        }
        let left = (data.len() - used) as u64;
        let take = left.min(self.remaining);
        used += take as usize;
        self.remaining -= take;
        if self.remaining == 0 {
            self.in_payload = false;
            return Ok(Consumed { used, frame_end: Some(self.opcode) });
        }
        Ok(Consumed { used, frame_end: None })
    }

    /// Opcode of the frame whose payload is being read, if any.
    pub fn opcode(&self) -> Option<u8> {
        self.in_payload.then_some(self.opcode)
    }

    /// Give back the bytes of a header not yet complete: the caller keeps
    /// them and feeds them again with what follows. A relay that forwards
    /// only whole headers never leaves its peer inside a frame it might
    /// have to refuse, and can always add a frame of its own.
    pub fn take_partial_header(&mut self) -> usize {
        if self.in_payload {
            return 0;
        }
        std::mem::take(&mut self.hdr_len)
    }
}

/// Total header length once the first bytes are known.
fn header_len(h: &[u8]) -> Option<usize> {
    let b1 = *h.get(1)?;
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some(2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 })
}

/// What the header bytes so far already rule out (RFC 6455 §5.2, §5.5).
fn check_prefix(h: &[u8]) -> Result<(), FrameError> {
    let Some(&b0) = h.first() else { return Ok(()) };
    let opcode = b0 & 0x0f;
    if matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
        return Err(FrameError::ReservedOpcode(opcode));
    }
    let Some(&b1) = h.get(1) else { return Ok(()) };
    if opcode >= 0x8 && (b0 & 0x80 == 0 || b1 & 0x7f > 125) {
        return Err(FrameError::BadControlFrame);
    }
    if b1 & 0x7f == 127 && h.get(2).is_some_and(|b| b & 0x80 != 0) {
        return Err(FrameError::BadLength);
    }
    Ok(())
}

/// Opcode and payload length of a whole header `check_prefix` accepted.
fn parse(h: &[u8]) -> (u8, u64) {
    let len = match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    (h[0] & 0x0f, len)
}

/// A close frame with `code` and a short reason; masked with `mask` when it
/// goes to the upstream (client-to-server frames must be masked).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(120)]);
    control_frame(OP_CLOSE, &payload, mask)
}

pub fn ping_frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    control_frame(OP_PING, &payload[..payload.len().min(125)], mask)
}

fn control_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6);
    out.push(0x80 | opcode);
    let len = payload.len().min(125) as u8;
    match mask {
        None => {
            out.push(len);
            out.extend_from_slice(payload);
        }
        Some(key) => {
            out.push(0x80 | len);
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if masked { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= 0xffff {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0x61, len));
        f
    }

    /// Feed `stream` in pieces of `chunk` bytes; return the frame ends seen.
    fn ends(stream: &[u8], chunk: usize) -> Vec<(usize, u8)> {
        let mut t = FrameTracker::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let end = (pos + chunk).min(stream.len());
            let mut piece = &stream[pos..end];
            while !piece.is_empty() {
                let s = t.consume(piece).unwrap();
                pos += s.used;
                piece = &piece[s.used..];
                if let Some(op) = s.frame_end {
                    assert!(t.at_boundary());
                    out.push((pos, op));
                }
            }
        }
        out
    }

    #[test]
    fn boundaries_are_found_whatever_the_chunking() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (fin, op, len, masked) in [
            (true, 1, 5, true),
            (false, 2, 300, false),
            (true, 9, 0, true),
            (true, 0, 70_000, false),
            (true, 8, 2, false),
        ] {
            stream.extend(frame(fin, op, len, masked));
            expected.push((stream.len(), op));
        }
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            assert_eq!(ends(&stream, chunk), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn a_tracker_is_at_a_boundary_only_between_frames() {
        let mut t = FrameTracker::default();
        assert!(t.at_boundary());
        let f = frame(true, 1, 10, false);
        t.consume(&f[..1]).unwrap();
        assert!(!t.at_boundary(), "inside a header");
        t.consume(&f[1..5]).unwrap();
        assert!(!t.at_boundary(), "inside a payload");
        assert_eq!(t.consume(&f[5..]).unwrap(), Consumed { used: 7, frame_end: Some(1) });
        assert!(t.at_boundary());
    }

    #[test]
    fn invalid_frames_are_refused() {
        let mut t = FrameTracker::default();
        assert_eq!(t.consume(&[0x83, 0x00]), Err(FrameError::ReservedOpcode(3)));
        let mut t = FrameTracker::default();
        assert_eq!(t.consume(&[0x09, 0x00]), Err(FrameError::BadControlFrame), "fragmented ping");
        let mut t = FrameTracker::default();
        assert_eq!(t.consume(&[0x89, 126, 0, 200]), Err(FrameError::BadControlFrame), "ping over 125 bytes");
        let mut t = FrameTracker::default();
        assert_eq!(t.consume(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]), Err(FrameError::BadLength));
    }

    /// Where (byte offset) a stream is refused, if it is, fed in `chunk`s
    /// with partial headers given back and fed again as a relay does; and
    /// the bytes a relay would have forwarded before that.
    fn refused_at(stream: &[u8], chunk: usize) -> (Option<FrameError>, usize) {
        let mut t = FrameTracker::default();
        let (mut forwarded, mut held) = (0, 0);
        let mut pos = 0;
        while pos < stream.len() {
            let end = (pos + chunk).min(stream.len());
            let data = &stream[pos - held..end];
            let mut upto = 0;
            while upto < data.len() {
                match t.consume(&data[upto..]) {
                    Ok(s) => upto += s.used,
                    Err(e) => return (Some(e), forwarded + upto),
                }
            }
            held = t.take_partial_header();
            forwarded += upto - held;
            pos = end;
        }
        (None, forwarded)
    }

    #[test]
    fn a_broken_frame_is_refused_the_same_way_however_the_bytes_are_split() {
        let good = [frame(true, 1, 5, true), frame(false, 2, 300, true), frame(true, 0, 3, true)].concat();
        let bad_frames: [(Vec<u8>, FrameError); 5] = [
            (frame(true, 3, 4, true), FrameError::ReservedOpcode(3)),
            (frame(true, 0xb, 0, true), FrameError::ReservedOpcode(0xb)),
            (frame(false, 9, 2, true), FrameError::BadControlFrame),
            (frame(true, 0xA, 126, true), FrameError::BadControlFrame),
            ([&[0x82u8, 0xff, 0x80][..], &[0; 11]].concat(), FrameError::BadLength),
        ];
        for (bad, why) in bad_frames {
            let stream = [&good[..], &bad[..], &frame(true, 1, 2, true)[..]].concat();
            for chunk in [1, 2, 3, 5, 7, 64, good.len() + 1, stream.len()] {
                // Refused, for the same reason, and only the good frames
                // before it were forwarded: never a piece of the bad header.
                assert_eq!(refused_at(&stream, chunk), (Some(why), good.len()), "chunk {chunk}, {why}");
            }
        }
        for chunk in [1, 3, 13] {
            assert_eq!(refused_at(&good, chunk), (None, good.len()));
        }
    }

    #[test]
    fn close_frames_carry_code_and_mask() {
        assert_eq!(close_frame(1012, "x", None), vec![0x88, 3, 0x03, 0xf4, b'x']);
        let masked = close_frame(1001, "", Some([0xff, 0, 0xff, 0]));
        assert_eq!(masked, vec![0x88, 0x82, 0xff, 0, 0xff, 0, 0x03 ^ 0xff, 0xe9]);
        assert_eq!(ends(&masked, 1), vec![(8, OP_CLOSE)]);
        assert_eq!(ping_frame(b"weir", None), vec![0x89, 4, b'w', b'e', b'i', b'r']);
    }
}
