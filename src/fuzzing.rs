//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by the
//! corpus replay test (`tests/fuzz_corpus.rs`). Each must accept any bytes
//! without panicking; that is the whole property.

use crate::routing::{self, BucketCookie, Facts};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::path::Path;

/// Config parsing and validation of arbitrary bytes.
pub fn config(data: &[u8]) {
    let _ = crate::config::validate(data, Path::new("/nonexistent"));
}

const TABLE: &str = r#"
listen: [{address: "127.0.0.1:0"}]
upstreams: {v1: {endpoints: ["127.0.0.1:1"]}, v2: {endpoints: ["127.0.0.1:2"]}}
routes:
  - name: api
    match: {hosts: ["*.example.com"], path_prefix: /api}
    stable: {upstream: v1}
    canary: {upstream: v2}
    weight: 33.33
    sticky: {keys: ["header:x-player-id", "cookie:player_id", "query:player"], cookie: {name: wb}}
    override: {header: x-weir-override, cookie: weir_override}
    segments:
      - {name: s, match: {header: {x-market: [SE, "NO"]}, cookie: {brand: b}, query: {q: "1"}}, weight: 50}
  - name: all
    stable: {upstream: v1}
"#;

/// The routing decision for a request built from arbitrary bytes: the first
/// bytes choose host/path/query, the rest become header lines.
pub fn routing(data: &[u8]) {
    let Ok(snapshot) = crate::config::validate(TABLE.as_bytes(), Path::new(".")) else { return };
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let host = lines.next().unwrap_or("");
    let target = lines.next().unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim()))
        {
            headers.append(k, v);
        }
    }
    let draw = data.first().map_or(0, |b| u16::from(*b) * 39);
    if let Some(d) = routing::decide(
        &snapshot.table,
        &Facts { host, path, query, headers: &headers, client_cert: None, method: &http::Method::GET, https: false },
        draw,
    ) {
        let _ = snapshot.table.routes.get(d.route).map(|r| d.reason.describe(r));
    }
}

/// The bucket cookie decoder, signed and unsigned.
pub fn bucket_cookie(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(plain) = BucketCookie::new("wb".into(), 60, None) {
        let _ = plain.decode(&text);
    }
    if let Ok(signed) = BucketCookie::new("wb".into(), 60, Some(b"fuzz-key")) {
        let _ = signed.decode(&text);
    }
}

/// Request pre-validation: arbitrary bytes become header lines (and the
/// first line a request target) and go through the framing, Host and
/// target checks the proxy runs before routing.
pub fn request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or("/");
    let version = match data.first().map(|b| b % 3) {
        Some(0) => http::Version::HTTP_10,
        Some(1) => http::Version::HTTP_2,
        _ => http::Version::HTTP_11,
    };
    let mut builder = http::Request::builder().uri(target).version(version);
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) =
                (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_bytes(v.trim().as_bytes()))
        {
            builder = builder.header(k, v);
        }
    }
    let Ok(req) = builder.body(()) else { return };
    let (parts, ()) = req.into_parts();
    let _ = crate::headers::check_framing(&parts.headers);
    if let Ok(authority) = crate::headers::authority(&parts) {
        let _ = crate::headers::split_port(authority);
    }
}

/// The WebSocket frame tracker over arbitrary bytes, fed in chunks whose
/// sizes come from the input itself: it must never panic, and `used` must
/// always stay within the chunk it was given and be more than zero.
pub fn ws_frames(data: &[u8]) {
    let mut tracker = crate::websocket::frame::FrameTracker::default();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut rest = data;
    while !rest.is_empty() {
        let chunk = &rest[..step.min(rest.len())];
        let mut inner = chunk;
        while !inner.is_empty() {
            match tracker.consume(inner) {
                Ok(s) => {
                    assert!(s.used <= inner.len(), "tracker used more than it was given");
                    // Zero progress on non-empty input would spin the relay.
                    assert!(s.used > 0, "tracker made no progress");
                    inner = &inner[s.used..];
                }
                Err(_) => return,
            }
        }
        rest = &rest[chunk.len()..];
    }
    let _ = tracker.at_boundary();
}

/// What weir's own upstream client makes of a response received whole
/// (status, body), or why it refuses it. For the differential test against
/// hyper's client (`tests/differential_client.rs`): a GET's answer, the
/// upstream closing after the last byte.
pub fn upstream_response(bytes: &[u8]) -> Result<(u16, Vec<u8>), String> {
    crate::upstream::parse_whole_response(bytes)
}
