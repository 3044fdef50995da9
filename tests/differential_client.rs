//! weir's own HTTP/1.1 upstream client against hyper's, on the same
//! response bytes: whatever hyper's client refuses, weir's must refuse, and
//! whatever both accept, they must read as the same status and body. The
//! responses are generated around the framing edge cases request smuggling
//! and truncation live in (Content-Length and Transfer-Encoding together,
//! duplicated, malformed; chunk sizes, extensions, trailers; interim 1xx;
//! close-delimited bodies), plus raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What hyper's client makes of `bytes` as the answer to a GET, the server
/// closing after the last byte.
async fn hyper_reads(bytes: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let mut req = [0u8; 1024];
        let _ = server.read(&mut req).await;
        let _ = server.write_all(&bytes).await;
        let _ = server.shutdown().await;
        // Keep reading so the client's side never sees a reset.
        let _ = server.read(&mut req).await;
    });
    let exchange = async {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(client)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get("/").header("host", "up").body(Empty::<Bytes>::new()).unwrap();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.unwrap_or_else(|_| Err("hyper: timed out".into()))
}

fn framing_header() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..40).prop_map(|n| format!("Content-Length: {n}")),
        (0u64..40).prop_map(|n| format!("Content-Length: {n}, {n}")),
        (0u64..40, 0u64..40).prop_map(|(a, b)| format!("Content-Length: {a}, {b}")),
        Just("Content-Length: +5".to_string()),
        Just("Content-Length: 0x5".to_string()),
        Just("Content-Length:".to_string()),
        Just("Content-Length: 99999999999999999999999".to_string()),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Transfer-Encoding: Chunked".to_string()),
        Just("Transfer-Encoding: gzip, chunked".to_string()),
        Just("Transfer-Encoding: chunked, gzip".to_string()),
        Just("Transfer-Encoding: identity".to_string()),
        Just("Transfer-Encoding: chunked ".to_string()),
        Just("Transfer-Encoding: xchunked".to_string()),
        Just("Transfer-Encoding:".to_string()),
        Just("Connection: close".to_string()),
        Just("Connection: keep-alive".to_string()),
        Just("X-Other: 1".to_string()),
    ]
}

fn chunked_body() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        proptest::collection::vec(b'a'..=b'z', 1..12).prop_map(|d| {
            let mut v = format!("{:x}\r\n", d.len()).into_bytes();
            v.extend_from_slice(&d);
            v.extend_from_slice(b"\r\n");
            v
        }),
        proptest::collection::vec(b'a'..=b'z', 1..12).prop_map(|d| {
            let mut v = format!("{:X};ext=\"q\"\r\n", d.len()).into_bytes();
            v.extend_from_slice(&d);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"0005\r\nhello\r\n".to_vec()),
        Just(b"5\r\nhelloXX".to_vec()),
        Just(b"5 \r\nhello\r\n".to_vec()),
        Just(b"-5\r\nhello\r\n".to_vec()),
        Just(b"fffffffffffffffffff\r\n".to_vec()),
        Just(b"5\nhello\n".to_vec()),
        Just(b"5\r\nhel".to_vec()),
    ];
    let end = prop_oneof![
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"0\r\nx-trailer: 1\r\n\r\n".to_vec()),
        Just(b"0;ext\r\n\r\n".to_vec()),
        Just(b"0\r\n".to_vec()),
        Just(Vec::new()),
    ];
    (proptest::collection::vec(chunk, 0..4), end).prop_map(|(chunks, end)| {
        let mut v: Vec<u8> = chunks.concat();
        v.extend_from_slice(&end);
        v
    })
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![Just(200u16), Just(204), Just(304), Just(404), Just(500), Just(299)];
    let interim = prop_oneof![
        Just(""),
        Just("HTTP/1.1 100 Continue\r\n\r\n"),
        Just("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")];
    let body = prop_oneof![proptest::collection::vec(any::<u8>(), 0..40), chunked_body()];
    (interim, version, status, proptest::collection::vec(framing_header(), 0..4), body).prop_map(
        |(interim, version, status, headers, body)| {
            let mut v = format!("{interim}{version} {status} X\r\n").into_bytes();
            for h in headers {
                v.extend_from_slice(h.as_bytes());
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"\r\n");
            v.extend_from_slice(&body);
            v
        },
    )
}

#[derive(Default, Debug)]
struct Tally {
    both_ok: u32,
    both_refuse: u32,
    only_weir_refuses: u32,
}

fn compare(bytes: &[u8], rt: &tokio::runtime::Runtime, tally: &mut Tally) -> Result<(), TestCaseError> {
    let theirs = rt.block_on(hyper_reads(bytes.to_vec()));
    let ours = weir::fuzzing::upstream_response(bytes);
    let show = || String::from_utf8_lossy(bytes).into_owned();
    match (&theirs, &ours) {
        (Ok(t), Ok(o)) => {
            prop_assert_eq!(t, o, "same bytes, different reading: {:?}", show());
            tally.both_ok += 1;
        }
        (Err(_), Ok(o)) => {
            return Err(TestCaseError::fail(format!(
                "hyper refuses ({theirs:?}) what weir accepts as {o:?}: {:?}",
                show()
            )));
        }
        (Ok(_), Err(e)) => {
            if std::env::var_os("SHOW_STRICTER").is_some() && tally.only_weir_refuses < 15 {
                eprintln!("weir refuses ({e}), hyper reads {theirs:?}: {:?}", show());
            }
            tally.only_weir_refuses += 1;
        }
        (Err(_), Err(_)) => tally.both_refuse += 1,
    }
    Ok(())
}

#[test]
fn weir_reads_responses_as_hyper_does_or_refuses_them() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tally = std::cell::RefCell::new(Tally::default());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&response(), |bytes| compare(&bytes, &rt, &mut tally.borrow_mut()));
    let mut raw_runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let raw = raw_runner
        .run(&proptest::collection::vec(any::<u8>(), 0..200), |bytes| compare(&bytes, &rt, &mut tally.borrow_mut()));
    let tally = tally.into_inner();
    eprintln!("differential: {tally:?}");
    result.unwrap();
    raw.unwrap();
    assert!(tally.both_ok > 300, "the generator must produce valid responses too: {tally:?}");
}

/// The cases the hostile-testing run found, each pinned.
#[test]
fn the_known_framing_cases_read_the_same_as_hyper() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut tally = Tally::default();
    for case in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    ] {
        compare(case, &rt, &mut tally).unwrap();
    }
    eprintln!("{tally:?}");
}
