//! Health (design §13). Passive: failed attempts in a row eject an
//! endpoint for a time that grows with each ejection; at most `max_ejected`
//! of the set is out at once, and never all of it. Active (optional): a
//! check of every endpoint each `interval`, in the upstream's own protocol
//! and TLS (a `GET path`, or gRPC's `grpc.health.v1.Health/Check`), takes
//! one out after `unhealthy` failures in a row and back after `healthy`
//! passes. Either
//! only moves traffic between pods of one version: failed attempts are
//! still evidence against the version (the proxy records every one), and
//! when every endpoint is out a first attempt still goes to one of them.

use super::endpoints::Endpoints;
use super::pool::{self, Endpoint};
use crate::config::{Active, Passive, Protocol};
use crate::tls::upstream::UpstreamTls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::{Arc, Weak};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A failed attempt on `ep`, one of `set`.
pub fn failed(policy: &Passive, set: &[Arc<Endpoint>], ep: &Endpoint) {
    let in_a_row = ep.failed();
    if policy.consecutive_failures == 0 || in_a_row < policy.consecutive_failures {
        return;
    }
    let now = pool::clock_ms();
    if ep.is_ejected(now) {
        return;
    }
    let n = set.len();
    let allowed = (n * policy.max_ejected_percent as usize / 100).min(n.saturating_sub(1));
    let ejected = set.iter().filter(|e| e.is_ejected(now)).count();
    if ejected < allowed {
        ep.eject(now, policy.eject);
    }
}

/// An attempt that got an answer: a status in `statuses` is a failure,
/// anything else ends the run of failures.
pub fn answered(policy: &Passive, set: &Endpoints, ep: &Endpoint, status: u16) {
    if status >= 500 && policy.statuses.contains(&status) {
        failed(policy, &set.current(), ep);
    } else {
        ep.succeeded();
    }
}

/// Check every endpoint in service each `policy.interval` until the
/// upstream is dropped. Checks of one round run at once, each bounded by
/// `policy.timeout`.
/// How checks reach an endpoint: the upstream's protocol and TLS.
pub struct Reach {
    pub protocol: Protocol,
    pub tls: Option<Arc<UpstreamTls>>,
}

pub async fn check_forever(endpoints: Weak<Endpoints>, policy: Active, reach: Reach) {
    let (policy, reach) = (Arc::new(policy), Arc::new(reach));
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(set) = endpoints.upgrade() else { return };
        let eps: Vec<Arc<Endpoint>> = set.current().iter().cloned().collect();
        drop(set);
        let mut round = tokio::task::JoinSet::new();
        for ep in eps {
            let (policy, reach) = (Arc::clone(&policy), Arc::clone(&reach));
            round.spawn(async move {
                let passed = probe(&ep, &policy, &reach).await;
                (ep, passed)
            });
        }
        while let Some(Ok((ep, passed))) = round.join_next().await {
            if let Some(failing) = ep.checked(passed, policy.healthy, policy.unhealthy) {
                if failing {
                    tracing::warn!(upstream = %ep.upstream(), endpoint = ep.address(), path = %policy.path,
                        "endpoint out of service: its health check failed {} times in a row", policy.unhealthy);
                } else {
                    tracing::info!(upstream = %ep.upstream(), endpoint = ep.address(),
                        "endpoint back in service: its health check passed {} times in a row", policy.healthy);
                }
            }
        }
    }
}

/// One check on a connection of its own, in the upstream's protocol (TLS
/// and ALPN as its requests get them), within `policy.timeout`.
async fn probe(ep: &Endpoint, policy: &Active, reach: &Reach) -> bool {
    let check = async {
        let Some(tls) = &reach.tls else {
            let s = ep.dial().await.ok()?;
            let _ = s.set_nodelay(true);
            return match reach.protocol {
                Protocol::H2c => h2_check(s, ep, policy, "http").await,
                _ => h1_check(s, ep, policy).await,
            };
        };
        let s = ep.dial_tls(tls).await.ok()?;
        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
        match (reach.protocol, h2) {
            (_, true) => h2_check(s, ep, policy, "https").await,
            (Protocol::H2, false) => None, // the endpoint refused HTTP/2
            (_, false) => h1_check(s, ep, policy).await,
        }
    };
    matches!(tokio::time::timeout(policy.timeout, check).await, Ok(Some(true)))
}

/// `GET path` in HTTP/1.1 and a status line of 200–399 (the rest of the
/// answer is not read). A gRPC check never comes here (refused by `weir
/// check` with http1; with `auto` and no h2 agreed it fails).
async fn h1_check<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, ep: &Endpoint, policy: &Active) -> Option<bool> {
    if policy.grpc_service.is_some() {
        return None;
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weir-health-check\r\nConnection: close\r\n\r\n",
        policy.path,
        ep.address()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..]).await.ok()?;
        if got == 0 {
            return None;
        }
        n += got;
    }
    let line = std::str::from_utf8(buf.get(..n)?).ok()?;
    let status: u16 = line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some((200..400).contains(&status))
}

/// Over HTTP/2: `GET path` answered 200–399, or the gRPC health call
/// answered `grpc-status` 0 with status SERVING.
async fn h2_check<S>(s: S, ep: &Endpoint, policy: &Active, scheme: &str) -> Option<bool>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn =
        super::h2::handshake::<Full<Bytes>, _>(s, Arc::from(ep.upstream()), ep.address().to_owned()).await.ok()?;
    let mut req =
        http::Request::builder().version(http::Version::HTTP_2).header(http::header::USER_AGENT, "weir-health-check");
    let body = match &policy.grpc_service {
        None => {
            req = req.method(http::Method::GET).uri(format!("{scheme}://{}{}", ep.address(), policy.path));
            Bytes::new()
        }
        Some(service) => {
            req = req
                .method(http::Method::POST)
                .uri(format!("{scheme}://{}/grpc.health.v1.Health/Check", ep.address()))
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header(http::header::TE, "trailers");
            grpc_check_request(service)
        }
    };
    let (resp, _stream) = conn.send(req.body(Full::new(body)).ok()?).await.ok()?;
    let ok = (200..400).contains(&resp.status().as_u16());
    if policy.grpc_service.is_none() || !ok {
        return Some(ok);
    }
    let head_status = resp.headers().get("grpc-status").cloned();
    // A health answer is a few bytes; a larger one is not a health answer.
    let got = Limited::new(resp.into_body(), 4096).collect().await.ok()?;
    let trailers_status = got.trailers().and_then(|t| t.get("grpc-status")).cloned();
    let code = trailers_status.or(head_status)?;
    Some(code.as_bytes() == b"0" && grpc_serving(&got.to_bytes()))
}

/// A `grpc.health.v1.HealthCheckRequest { service }` in one gRPC message.
fn grpc_check_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(msg.len() + 5);
    framed.push(0); // not compressed
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    Bytes::from(framed)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Does one uncompressed gRPC message hold a `HealthCheckResponse` with
/// `status` SERVING (1)? Unknown fields are skipped; a missing status is
/// UNKNOWN (0), as proto3 reads it.
fn grpc_serving(framed: &[u8]) -> bool {
    let Some((&[0, a, b, c, d], msg)) = framed.split_first_chunk::<5>() else { return false };
    if msg.len() != u32::from_be_bytes([a, b, c, d]) as usize {
        return false;
    }
    let (mut i, mut status) = (0, 0);
    while i < msg.len() {
        let Some(tag) = varint(msg, &mut i) else { return false };
        let skip = match tag & 7 {
            0 => match varint(msg, &mut i) {
                Some(v) if tag >> 3 == 1 => {
                    status = v;
                    0
                }
                Some(_) => 0,
                None => return false,
            },
            1 => 8,
            2 => match varint(msg, &mut i) {
                Some(n) => n as usize,
                None => return false,
            },
            5 => 4,
            _ => return false,
        };
        i = i.saturating_add(skip);
    }
    i == msg.len() && status == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_health_request_is_the_protobuf_encoding() {
        assert_eq!(&grpc_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&grpc_check_request("a.B")[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']);
        let long = "s".repeat(200);
        let r = grpc_check_request(&long);
        assert_eq!(&r[5..8], &[0x0a, 0xc8, 0x01]);
        assert_eq!(r.len(), 5 + 3 + 200);
    }

    #[test]
    fn only_a_serving_answer_passes() {
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!grpc_serving(&[0, 0, 0, 0, 0]), "no status is UNKNOWN");
        assert!(!grpc_serving(&[1, 0, 0, 0, 2, 0x08, 1]), "compressed: not read");
        assert!(!grpc_serving(&[0, 0, 0, 0, 3, 0x08, 1]), "short message");
        assert!(!grpc_serving(&[0, 0, 0, 0]), "no frame");
        // An unknown string field before the status is skipped.
        assert!(grpc_serving(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]));
        assert!(!grpc_serving(&[0, 0, 0, 0, 4, 0x12, 9, b'x', 0x08]), "a length past the end");
        assert!(!grpc_serving(&[0, 0, 0, 0, 2, 0x08, 0x81]), "a varint cut off");
    }
}
