//! (A `#[cfg(test)]` module.) The relay's unit tests: in-memory duplex pipes
//! stand in for the client and the upstream.

use super::*;
use tokio::io::{AsyncRead, AsyncReadExt, duplex};

/// An unmasked binary frame (upstream → client direction).
fn binary(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82, 126];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings() -> Settings {
    Settings { idle_timeout: Duration::from_secs(60), ping_interval: Duration::ZERO, rtt_interval: Duration::ZERO }
}

async fn read_exactly(r: &mut (impl AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut buf)).await.unwrap().unwrap();
    buf
}

/// A relay between two in-memory pipes of `cap` bytes: the test's client and
/// upstream ends, the close signal, and the relay's task.
struct Piped {
    client: tokio::io::DuplexStream,
    upstream: tokio::io::DuplexStream,
    signal: std::sync::Arc<watch::Sender<Signal>>,
    relay: tokio::task::JoinHandle<CloseWhy>,
}

fn piped(cap: usize, s: Settings) -> Piped {
    let (client_side, client) = duplex(cap);
    let (upstream_side, upstream) = duplex(cap);
    let signal = std::sync::Arc::new(watch::channel(Signal::Open).0);
    let s2 = std::sync::Arc::clone(&signal);
    let relay = tokio::spawn(async move { relay(client_side, upstream_side, &s2, &s, None).await });
    Piped { client, upstream, signal, relay }
}

#[tokio::test]
async fn a_close_signal_waits_for_the_frame_in_flight_to_end() {
    // client_side/upstream_side are the relay's ends; the tests hold the peers.
    let Piped { mut client, mut upstream, signal, relay } = piped(64 * 1024, settings());

    let frame = binary(&[7u8; 1000]);
    // Half a frame, then the signal.
    upstream.write_all(&frame[..500]).await.unwrap();
    assert_eq!(read_exactly(&mut client, 500).await, frame[..500]);
    signal.send_replace(Signal::Close { code: 1012, why: CloseWhy::Rollback });
    // Nothing may be injected mid-frame: the rest of the frame comes first.
    upstream.write_all(&frame[500..]).await.unwrap();
    assert_eq!(read_exactly(&mut client, frame.len() - 500).await, frame[500..]);
    // Then the close frame with code 1012.
    let head = read_exactly(&mut client, 2).await;
    assert_eq!(head[0], 0x88);
    let body = read_exactly(&mut client, usize::from(head[1] & 0x7f)).await;
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1012);
    // The upstream got a masked close with the same code.
    let head = read_exactly(&mut upstream, 2).await;
    assert_eq!((head[0], head[1] & 0x80), (0x88, 0x80));
    let rest = read_exactly(&mut upstream, 4 + usize::from(head[1] & 0x7f)).await;
    let code = u16::from_be_bytes([rest[4] ^ rest[0], rest[5] ^ rest[1]]);
    assert_eq!(code, 1012);
    // Both peers answer with their close; the relay ends as a rollback.
    client.write_all(&close_frame(1012, "", Some([1, 2, 3, 4]))).await.unwrap();
    upstream.write_all(&close_frame(1012, "", None)).await.unwrap();
    let why = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
    assert_eq!(why, CloseWhy::Rollback);
}

#[tokio::test]
async fn bytes_pass_unchanged_while_the_buffer_grows_for_bulk_and_shrinks_for_chatter() {
    let Piped { mut client, mut upstream, signal, relay } = piped(256 * 1024, settings());
    let bulk: Vec<u8> = (0..40).flat_map(|i| binary(&vec![i as u8; 60_000])).collect();
    let chatter: Vec<Vec<u8>> = (0..20).map(|i| binary(&[i as u8; 30])).collect();
    for round in 0..2 {
        // Bulk: full reads grow the buffer 512 → 4 KiB → 32 KiB → 64 KiB.
        let (wrote, got) = tokio::join!(upstream.write_all(&bulk), read_exactly(&mut client, bulk.len()));
        wrote.unwrap();
        assert!(got == bulk, "bulk, round {round}");
        // Chatter, one frame per read: after eight it shrinks back.
        for f in &chatter {
            upstream.write_all(f).await.unwrap();
            assert_eq!(&read_exactly(&mut client, f.len()).await, f, "chatter, round {round}");
        }
    }
    // A frame split around a partial header still arrives whole.
    let f = binary(&[9u8; 700]);
    upstream.write_all(&f[..3]).await.unwrap();
    tokio::task::yield_now().await;
    upstream.write_all(&f[3..]).await.unwrap();
    assert_eq!(read_exactly(&mut client, f.len()).await, f);
    signal.send_replace(Signal::Close { code: 1001, why: CloseWhy::Shutdown });
    let head = read_exactly(&mut client, 2).await;
    assert_eq!(head[0], 0x88);
    drop((client, upstream));
    let _ = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap();
}

#[tokio::test]
async fn an_upstream_that_vanishes_gives_the_client_1011() {
    let Piped { mut client, upstream, relay, .. } = piped(64 * 1024, settings());
    drop(upstream);
    let head = read_exactly(&mut client, 2).await;
    assert_eq!(head[0], 0x88);
    let body = read_exactly(&mut client, usize::from(head[1] & 0x7f)).await;
    assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1011);
    let why = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
    assert_eq!(why, CloseWhy::Error);
}

#[tokio::test(start_paused = true)]
async fn a_client_silent_past_the_idle_timeout_is_closed() {
    let s =
        Settings { idle_timeout: Duration::from_secs(4), ping_interval: Duration::ZERO, rtt_interval: Duration::ZERO };
    let Piped { mut client, mut upstream, relay, .. } = piped(64 * 1024, s);
    // Paused clock: time jumps straight to the idle check.
    let head = read_exactly(&mut upstream, 2).await;
    assert_eq!(head[0], 0x88);
    let head = read_exactly(&mut client, 2).await;
    assert_eq!(head[0], 0x88);
    let why = tokio::time::timeout(Duration::from_secs(30), relay).await.unwrap().unwrap();
    assert_eq!(why, CloseWhy::Client);
}

/// A masked text frame (client → upstream direction).
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Read one close frame; its code (unmasking if needed).
async fn close_code(r: &mut (impl AsyncRead + Unpin)) -> u16 {
    let head = read_exactly(r, 2).await;
    assert_eq!(head[0], 0x88, "a close frame");
    let masked = head[1] & 0x80 != 0;
    let len = usize::from(head[1] & 0x7f);
    let rest = read_exactly(r, len + if masked { 4 } else { 0 }).await;
    if masked {
        u16::from_be_bytes([rest[4] ^ rest[0], rest[5] ^ rest[1]])
    } else {
        u16::from_be_bytes([rest[0], rest[1]])
    }
}

#[tokio::test]
async fn a_client_frame_that_breaks_the_protocol_gets_1002_however_it_is_split() {
    let good = masked_text(b"hello");
    // Reserved opcode 0x3, masked, 4 bytes of payload.
    let bad = [&[0x83u8, 0x84, 1, 2, 3, 4][..], b"abcd"].concat();
    let stream = [&good[..], &bad[..]].concat();
    for split in [1, 2, good.len(), good.len() + 1, good.len() + 3, stream.len()] {
        let Piped { mut client, mut upstream, relay, .. } = piped(64 * 1024, settings());
        client.write_all(&stream[..split]).await.unwrap();
        client.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&stream[split..]).await.unwrap();
        // The upstream gets the good frame whole, then a close frame:
        // never a piece of the broken one.
        assert_eq!(read_exactly(&mut upstream, good.len()).await, good, "split {split}");
        assert_eq!(close_code(&mut upstream).await, 1001, "split {split}");
        // Its echo, sent before it answers the close, still reaches the
        // client; its close answer is replaced by 1002 (protocol error).
        let echo = binary(b"hello");
        upstream.write_all(&[&echo[..], &close_frame(1001, "", None)[..]].concat()).await.unwrap();
        assert_eq!(read_exactly(&mut client, echo.len()).await, echo, "split {split}");
        assert_eq!(close_code(&mut client).await, 1002, "split {split}");
        let why = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert_eq!(why, CloseWhy::Client, "the client's fault, not the version's");
    }
}

#[tokio::test]
async fn an_upstream_frame_that_breaks_the_protocol_counts_against_it() {
    let Piped { mut client, mut upstream, relay, .. } = piped(64 * 1024, settings());
    // A fragmented ping from the upstream.
    upstream.write_all(&[0x09, 0x00]).await.unwrap();
    assert_eq!(close_code(&mut client).await, 1011);
    assert_eq!(close_code(&mut upstream).await, 1002);
    let why = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
    assert_eq!(why, CloseWhy::Error);
}
