//! Unit tests of the HTTP/1.1 exchange (a `#[cfg(test)]` module of `wire`):
//! request heads, response heads and framing, chunked decoding at every cut,
//! every limit on bytes received.

use super::*;
use crate::upstream::ReqBody;
use http::header::CONNECTION;
use proptest::prelude::*;

/// Feed `wire` to the decoder in pieces cut at `cuts`; returns the body
/// and whether the end was seen, or the first error.
fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), BodyError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let (mut buf, mut state, mut out, mut from) = (BytesMut::new(), Chunk::Size, Vec::new(), 0);
    for to in points {
        buf.extend_from_slice(&wire[from..to]);
        from = to;
        loop {
            match decode_chunked(&mut buf, &mut state, &mut None)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok((out, true)),
                Decoded::NeedMore => break,
            }
        }
    }
    Ok((out, false))
}

proptest! {
    /// Any body, chunked any way and delivered in any pieces, decodes
    /// to itself and ends exactly once.
    #[test]
    fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2000),
                          sizes in proptest::collection::vec(1usize..300, 1..20),
                          cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let mut wire = Vec::new();
        let (mut rest, mut i) = (&body[..], 0);
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
            i += 1;
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let decoded = decode_in_pieces(&wire, &cuts);
        prop_assert!(matches!(decoded, Ok((ref out, true)) if *out == body));
    }

    /// Hostile bytes never panic and never yield more data than given.
    #[test]
    fn chunked_garbage_is_safe(wire in proptest::collection::vec(any::<u8>(), 0..512),
                               cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        if let Ok((out, _)) = decode_in_pieces(&wire, &cuts) {
            prop_assert!(out.len() <= wire.len());
        }
    }

    /// Response heads made of arbitrary bytes parse or fail cleanly.
    #[test]
    fn response_heads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut buf = BytesMut::from(&raw[..]);
        let _ = parse_head(&mut buf, &Method::GET);
    }
}

fn chunked(input: &[u8]) -> Result<(Vec<u8>, bool), BodyError> {
    let mut buf = BytesMut::from(input);
    let mut state = Chunk::Size;
    let mut out = Vec::new();
    loop {
        match decode_chunked(&mut buf, &mut state, &mut None)? {
            Decoded::Data(b) => out.extend_from_slice(&b),
            Decoded::End => return Ok((out, true)),
            Decoded::NeedMore => return Ok((out, false)),
        }
    }
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers() {
    let (body, done) = chunked(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n").unwrap_or_default();
    assert_eq!(body, b"hello world");
    assert!(done);
    let (body, done) = chunked(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap_or_default();
    assert_eq!(body, b"0123456789");
    assert!(done);
}

#[test]
fn chunked_bodies_wait_for_more_at_every_boundary() {
    let full = b"5\r\nhello\r\n0\r\n\r\n";
    for cut in 0..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        let mut done = false;
        for piece in [&full[cut..], &b""[..]] {
            loop {
                match decode_chunked(&mut buf, &mut state, &mut None) {
                    Ok(Decoded::Data(b)) => out.extend_from_slice(&b),
                    Ok(Decoded::End) => {
                        done = true;
                        break;
                    }
                    Ok(Decoded::NeedMore) => break,
                    Err(e) => unreachable!("cut {cut}: {e}"),
                }
            }
            buf.extend_from_slice(piece);
        }
        assert!(done, "cut {cut}");
        assert_eq!(out, b"hello", "cut {cut}");
    }
}

#[test]
fn bad_chunked_bodies_are_errors() {
    for bad in [&b"x\r\n"[..], b"5\r\nhelloXX", b"12345678901234567\r\n", b"\r\n", b"-1\r\n"] {
        assert!(chunked(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let long = vec![b'1'; MAX_CHUNK_LINE + 1];
    assert!(chunked(&long).is_err());
}

#[test]
fn bare_lf_or_cr_in_chunked_framing_is_refused() {
    // A trailer line ended by LF alone would take the next response (here a
    // smuggled 200) into the trailer section.
    let smuggle = b"5\r\nhello\r\n0\r\nx-t: 1\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(chunked(smuggle), Err(BodyError::Chunked("bare LF in chunked framing"))));
    for bad in [&b"5\nhello\r\n0\r\n\r\n"[..], b"5;a=b\nc\r\nhello\r\n", b"0\r\n\n", b"0\r\nx: 1\rx\r\n\r\n", b"5\rx"] {
        assert!(chunked(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    // A CR waiting for its LF at the end of what arrived is not yet an error.
    assert!(matches!(chunked(b"5\r"), Ok((_, false))));
    assert!(matches!(chunked(b"5\r\nhello\r\n0\r\nx: 1\r"), Ok((_, false))));
}

#[test]
fn every_limit_holds_on_bytes_received_even_in_one_read() {
    // A chunk line longer than the limit that arrives whole, CRLF included.
    let mut line = b"5;".to_vec();
    line.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE));
    line.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert!(matches!(chunked(&line), Err(BodyError::Chunked("chunk-size line too long"))));
    // A trailer section over the limit made of short lines, in one read.
    let mut t = b"0\r\n".to_vec();
    // (Lines long enough that the size limit comes before the count limit.)
    for i in 0..(MAX_TRAILERS / 240 + 10) {
        t.extend_from_slice(format!("x-t{i:05}: {}\r\n", "v".repeat(228)).as_bytes());
    }
    t.extend_from_slice(b"\r\n");
    assert!(matches!(chunked(&t), Err(BodyError::Chunked("trailer section too long"))));
    // A response head over the limit with few headers, whole in the buffer.
    let mut h = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    h.extend(std::iter::repeat_n(b'a', 100 * 1024));
    h.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    assert!(matches!(head(&h, &Method::GET), Err(ExchangeError::Protocol(Malformed::HeadTooLarge))));
    // Just under the limits still passes.
    let (body, done) = chunked(b"5;e=1\r\nhello\r\n0\r\nx: 1\r\n\r\n").unwrap_or_default();
    assert_eq!((body.as_slice(), done), (&b"hello"[..], true));
}

#[test]
fn with_both_framings_the_length_is_not_forwarded() {
    let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", &Method::GET))
        .unwrap();
    assert!(h.headers.get(CONTENT_LENGTH).is_none());
    assert_eq!(h.framing, RespFraming::Chunked(Chunk::Size));
    assert!(!h.keep_alive, "a response framed two ways is not trusted again");
}

fn head(raw: &[u8], method: &Method) -> Result<Parsed, ExchangeError> {
    let mut buf = BytesMut::from(raw);
    parse_head(&mut buf, method)
}

fn done(p: Result<Parsed, ExchangeError>) -> Option<Head> {
    match p {
        Ok(Parsed::Done(h)) => Some(h),
        _ => None,
    }
}

#[test]
fn response_framing_follows_rfc_9112() {
    let get = Method::GET;
    let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", &get));
    assert_eq!(h.as_ref().map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Length(5), true)));
    let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &get));
    assert_eq!(h.map(|h| h.framing), Some(RespFraming::Chunked(Chunk::Size)));
    let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", &get));
    assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Chunked(Chunk::Size), false)));
    let h = done(head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &get));
    assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Close, false)));
    let h = done(head(b"HTTP/1.1 200 OK\r\n\r\n", &get));
    assert_eq!(h.map(|h| (h.framing, h.keep_alive)), Some((RespFraming::Close, false)));
    let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &Method::HEAD));
    assert_eq!(h.map(|h| h.framing), Some(RespFraming::Done));
    let h = done(head(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", &get));
    assert_eq!(h.map(|h| h.framing), Some(RespFraming::Done));
    let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", &get));
    assert_eq!(h.map(|h| h.keep_alive), Some(false));
    let h = done(head(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", &get));
    assert_eq!(h.map(|h| h.keep_alive), Some(false));
    let h = done(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", &get));
    assert_eq!(h.map(|h| h.framing), Some(RespFraming::Length(5)));
}

#[test]
fn broken_heads_are_protocol_errors() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
        b"HTTP/1.1 999x OK\r\n\r\n",
        b"garbage\r\n\r\n",
    ] {
        assert!(
            matches!(head(bad, &Method::GET), Err(ExchangeError::Protocol(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn interim_responses_are_skipped_and_values_kept_intact() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: one two\r\nContent-Length: 0\r\n\r\n";
    let mut buf = BytesMut::from(&raw[..]);
    assert!(matches!(parse_head(&mut buf, &Method::POST), Ok(Parsed::Interim)));
    let h = done(parse_head(&mut buf, &Method::POST));
    assert_eq!(h.as_ref().map(|h| h.status), Some(StatusCode::CREATED));
    assert_eq!(h.as_ref().and_then(|h| h.headers.get("x-a")), Some(&HeaderValue::from_static("one two")));
    assert!(buf.is_empty());
}

#[test]
fn request_heads_carry_framing() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("a"));
    let empty = ReqBody::empty();
    assert_eq!(request_framing(&Method::GET, &mut h, &empty), ReqFraming::None);
    assert_eq!(request_framing(&Method::POST, &mut h, &empty), ReqFraming::Length(0));
    assert_eq!(h.get(CONTENT_LENGTH), Some(&HeaderValue::from_static("0")));
    let full = ReqBody::full(Bytes::from_static(b"abc"));
    let mut h2 = HeaderMap::new();
    assert_eq!(request_framing(&Method::PUT, &mut h2, &full), ReqFraming::Length(3));
    let wire = encode_head(&Method::GET, "/x?y", &h, &[], ReqFraming::Chunked);
    assert_eq!(
        String::from_utf8_lossy(&wire),
        "GET /x?y HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // Headers weir adds come after the request's own, before the framing.
    let added = [(&crate::headers::X_WEIR_ROUTE, HeaderValue::from_static("app"))];
    let wire = encode_head(&Method::GET, "/", &h, &added, ReqFraming::Chunked);
    assert_eq!(
        String::from_utf8_lossy(&wire),
        "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nx-weir-route: app\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn connection_headers_that_name_nothing_never_enter_the_map() {
    let get = Method::GET;
    let h = done(head(
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
        &get,
    ))
    .unwrap();
    assert!(h.headers.get(CONNECTION).is_none() && h.headers.get("keep-alive").is_none());
    assert_eq!((h.headers.len(), h.keep_alive), (2, true), "x-a and content-length stay");
    // `close` is dropped from the map but still ends the connection.
    let h = done(head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", &get)).unwrap();
    assert!(h.headers.get(CONNECTION).is_none() && !h.keep_alive);
    // A Connection header naming another header, or an upgrade, is kept so
    // the strip can remove what it names and the 101 check can see it.
    let h = done(head(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n",
        &get,
    ))
    .unwrap();
    assert_eq!(h.headers.get(CONNECTION).map(HeaderValue::as_bytes), Some(&b"keep-alive, X-Secret"[..]));
    let h = done(head(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &get))
        .unwrap();
    assert_eq!(h.headers.get(CONNECTION).map(HeaderValue::as_bytes), Some(&b"Upgrade"[..]));
}

#[test]
fn chunked_trailer_fields_are_kept_except_those_a_trailer_may_not_carry() {
    let wire = b"5\r\nhello\r\n0\r\nx-checksum: abc\r\nGrpc-Status:0\r\ncontent-length: 9\r\nx-weir-route: x\r\nx-checksum:  def \r\n\r\n";
    let (mut buf, mut state, mut trailers) = (BytesMut::from(&wire[..]), Chunk::Size, None);
    let mut out = Vec::new();
    loop {
        match decode_chunked(&mut buf, &mut state, &mut trailers).unwrap() {
            Decoded::Data(b) => out.extend_from_slice(&b),
            Decoded::End => break,
            Decoded::NeedMore => unreachable!("all bytes are there"),
        }
    }
    assert_eq!(out, b"hello");
    let t = trailers.unwrap();
    let sums: Vec<_> = t.get_all("x-checksum").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(sums, ["abc", "def"]);
    assert_eq!(t.get("grpc-status").unwrap(), "0");
    assert_eq!(t.len(), 3, "content-length and x-weir-route dropped: {t:?}");
    // No trailer section: no map at all.
    let (mut buf, mut state, mut none) = (BytesMut::from(&b"0\r\n\r\n"[..]), Chunk::Size, None);
    assert!(matches!(decode_chunked(&mut buf, &mut state, &mut none), Ok(Decoded::End)));
    assert!(none.is_none());
}

#[test]
fn malformed_or_too_many_trailer_fields_are_framing_errors() {
    for bad in [
        &b"0\r\nno colon here\r\n\r\n"[..],
        b"0\r\nbad name: 1\r\n\r\n",
        b"0\r\n folded: 1\r\n\r\n",
        b"0\r\n: empty\r\n\r\n",
    ] {
        let (mut buf, mut state, mut t) = (BytesMut::from(bad), Chunk::Size, None);
        assert!(decode_chunked(&mut buf, &mut state, &mut t).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    let mut many = b"0\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-t{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let (mut buf, mut state, mut t) = (BytesMut::from(&many[..]), Chunk::Size, None);
    assert!(matches!(decode_chunked(&mut buf, &mut state, &mut t), Err(BodyError::Chunked("too many trailer fields"))));
}
