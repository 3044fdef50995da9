//! Slow clients (hardening.md B): a stalled request body is cut at
//! `limits.body_timeout` with the upstream request aborted, a client that
//! never reads a large response does not grow weir, and normal clients keep
//! getting answers meanwhile. (Slowloris on the head: tests/headers.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, get, spawn_weir_admin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_at_the_body_timeout_and_never_completes_upstream() {
    let up = Upstream::start("stable").await;
    let yaml = config(up.addr, up.addr, "  - name: app\n    stable: {upstream: v1}\n")
        .replace("access_log: false", "access_log: false\nlimits: {body_timeout: 1s}");
    let w = Weir::start(&yaml).await;
    let mut s = TcpStream::connect(w.addr).await.unwrap();
    s.write_all(b"POST /deposit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
    // Meanwhile a normal client is served.
    let (status, _, _) = get(&client(), &w.url("/ok"), &[]).await;
    assert_eq!(status, 200);
    // The stalled one gets 408 and is closed (bounded wait, well past 1 s).
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "stalled body never cut");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("x-weir-error: body_timeout"), "{text}");
    // The upstream never received a complete body.
    assert!(up.requests().iter().all(|r| r.body.len() < 100), "a complete body reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_a_large_response_does_not_grow_weir() {
    // An upstream that answers every request with 256 MiB, as fast as the
    // socket takes it; counts what it managed to write.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = l.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w2 = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let written = w2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let total: u64 = 256 << 20;
                if s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes()).await.is_err()
                {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < total {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len() as u64;
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(&cfg, config(upstream, upstream, "  - name: app\n    stable: {upstream: v1}\n")).unwrap();
    let (mut child, addr, _admin, _out, _err) = spawn_weir_admin(&cfg);
    let before = rss_kib(child.id());

    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        readers.push(s); // never read
    }
    // Wait (bounded) until the upstream's writes stall: every buffer full.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Instant::now());
    loop {
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "upstream never stalled ({now} bytes)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rss_kib(child.id());
    let sent = written.load(Ordering::Relaxed);
    println!("upstream stalled after {} MiB for 4 readers; weir RSS {before} -> {after} KiB", sent >> 20);
    // Bounded by kernel socket buffers, not by the 1 GiB on offer.
    assert!(sent < 128 << 20, "upstream pushed {sent} bytes");
    assert!(after < before + 8 * 1024, "weir grew from {before} KiB to {after} KiB");
    let _ = child.kill();
    let _ = child.wait();
    drop(readers);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()).unwrap()
}
