//! Live reload: every valid edit applies within about a second, whatever
//! way the file is replaced; bad edits never change what serves; no request
//! fails while the table changes under keep-alive and HTTP/2 traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Upstream, Weir, client, config, eventually, get};

fn route(weight: u32) -> String {
    format!("  - name: app\n    stable: {{upstream: v1}}\n    canary: {{upstream: v2}}\n    weight: {weight}\n")
}

/// Background load: keep-alive HTTP/1.1 and HTTP/2 clients sending without
/// pause until stopped; returns (ok, failed) counts.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for h2 in [false, true, false, true] {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(h2).build_http();
                let url = format!("http://{addr}/load");
                // Bounded: at most 10 minutes even if never stopped.
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let req = http::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    match tokio::time::timeout(Duration::from_secs(5), c.request(req)).await {
                        Ok(Ok(resp)) if resp.status() == 200 => {
                            let body = resp.into_body().collect().await;
                            if body.is_ok() { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Self { stop, ok, failed, tasks }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// Wait until a fresh request lands on `want`; return how long it took.
async fn observe(weir: &Weir, http: &support::HttpClient, want: &str) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if get(http, &weir.url("/probe"), &[]).await.2 == want {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("weight change to {want} not observed within 5 s");
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Kubernetes ConfigMap layout: file -> ..data/file, ..data -> ..<stamp>/.
struct ConfigMap {
    dir: std::path::PathBuf,
    n: u32,
}

impl ConfigMap {
    fn create(dir: &Path, text: &str) -> Self {
        let mut cm = Self { dir: dir.to_path_buf(), n: 0 };
        let stamp = cm.next_dir(text);
        std::os::unix::fs::symlink(&stamp, dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/weir.yaml", dir.join("weir.yaml")).unwrap();
        cm
    }

    fn next_dir(&mut self, text: &str) -> String {
        self.n += 1;
        let stamp = format!("..2026_11_23_{:04}", self.n);
        std::fs::create_dir(self.dir.join(&stamp)).unwrap();
        std::fs::write(self.dir.join(&stamp).join("weir.yaml"), text).unwrap();
        stamp
    }

    /// What the kubelet does: new dir, `..data_tmp` symlink, rename over `..data`.
    fn swap(&mut self, text: &str) {
        let old = std::fs::read_link(self.dir.join("..data")).unwrap();
        let stamp = self.next_dir(text);
        std::os::unix::fs::symlink(&stamp, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_weight_changes_apply_live_with_zero_failed_requests() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &route(0))).await;
    let path = weir.config_path();
    let http = client();
    let load = Load::start(weir.addr);
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for i in 0..50u32 {
        let weight = if i % 2 == 0 { 100 } else { 0 };
        let text = config(s.addr, c.addr, &route(weight));
        match i % 3 {
            0 => std::fs::write(&path, &text).unwrap(), // in place
            1 => write_atomically(&path, &text),        // editor: temp + rename
            _ => {
                // vim-style: rename the old away, write a new file
                std::fs::rename(&path, path.with_extension("bak")).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
        }
        let took = observe(&weir, &http, if weight == 100 { "canary" } else { "stable" }).await;
        worst = worst.max(took);
        total += took;
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} requests failed during reloads ({ok} ok)");
    assert!(ok > 100, "load ran: {ok}");
    assert!(worst < Duration::from_millis(2500), "slowest change took {worst:?}");
    eprintln!("50 changes: mean {:?}, worst {worst:?}, {ok} requests under load", total / 50);
    assert_eq!(weir.handle.reloader.failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swaps_apply() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    let mut cm = ConfigMap::create(dir.path(), &config(s.addr, c.addr, &route(0)));
    let path = dir.path().join("weir.yaml");
    let snapshot = weir::config::load(&path).unwrap();
    let handle = weir::app::start(path, snapshot).await.unwrap();
    let weir = Weir { addr: handle.listen[0], admin: handle.admin, handle, dir: tempfile::tempdir().unwrap() };
    let http = client();
    let load = Load::start(weir.addr);
    for i in 0..10u32 {
        let weight = if i % 2 == 0 { 100 } else { 0 };
        cm.swap(&config(s.addr, c.addr, &route(weight)));
        let took = observe(&weir, &http, if weight == 100 { "canary" } else { "stable" }).await;
        assert!(took < Duration::from_millis(2500), "swap {i} took {took:?}");
    }
    let (_, failed) = load.finish().await;
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_half_written_files_never_change_what_serves() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let good = config(s.addr, c.addr, &route(100));
    let weir = Weir::start(&good).await;
    let path = weir.config_path();
    let http = client();
    let load = Load::start(weir.addr);
    let generation = weir.handle.live.load().generation;
    let bad = [
        "listen: [{address: 127.0.0.1:0}\nroutes: [".to_string(), // invalid YAML
        good.replace("upstream: v2", "upstream: nope"),           // unknown upstream
        good.replace("weight: 100", "weight: 101"),               // weight out of range
        format!("{good}{}", route(5)),                            // duplicate route
        good[..good.len() / 2].to_string(),                       // half a file
    ];
    for (i, text) in bad.iter().enumerate() {
        let before = weir.handle.reloader.failures();
        std::fs::write(&path, text).unwrap();
        let reloader = weir.handle.reloader.clone();
        assert!(
            eventually(Duration::from_secs(3), || reloader.failures() > before).await,
            "bad edit {i} was not noticed"
        );
        assert_eq!(weir.handle.live.load().generation, generation, "bad edit {i} changed the table");
        assert_eq!(get(&http, &weir.url("/"), &[]).await.2, "canary", "old table serves after bad edit {i}");
    }
    // A slow writer: truncate, then the new content in chunks.
    let next = config(s.addr, c.addr, &route(0));
    let f = std::fs::File::create(&path).unwrap();
    for chunk in next.as_bytes().chunks(40) {
        use std::io::Write;
        (&f).write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5)); // simulates a slow writer, not synchronisation
    }
    drop(f);
    observe(&weir, &http, "stable").await;
    let (_, failed) = load.finish().await;
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_file_keeps_serving_and_recreated_file_applies() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &route(100))).await;
    let path = weir.config_path();
    let http = client();
    std::fs::remove_file(&path).unwrap();
    let reloader = weir.handle.reloader.clone();
    assert!(eventually(Duration::from_secs(3), || reloader.failures() >= 1).await, "deletion noticed and logged");
    for _ in 0..20 {
        assert_eq!(get(&http, &weir.url("/"), &[]).await.2, "canary");
    }
    std::fs::write(&path, config(s.addr, c.addr, &route(0))).unwrap();
    observe(&weir, &http, "stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100_edits_ends_on_the_final_content() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &route(0))).await;
    let path = weir.config_path();
    let start = Instant::now();
    for i in 0..100u32 {
        let text = config(s.addr, c.addr, &route(i % 100));
        if i % 2 == 0 {
            std::fs::write(&path, text).unwrap()
        } else {
            write_atomically(&path, &text)
        }
        std::thread::sleep(Duration::from_millis(8)); // pacing 100 edits over ~1 s
    }
    let last = config(s.addr, c.addr, &route(42));
    std::fs::write(&path, &last).unwrap();
    let want = weir::config::sha256_hex(last.as_bytes());
    let live = weir.handle.live.clone();
    assert!(
        eventually(Duration::from_secs(5), || live.load().snapshot.sha256 == want).await,
        "did not settle on the final content"
    );
    assert_eq!(weir.handle.live.load().snapshot.table.routes[0].overlay.weight_bp, 4200);
    eprintln!("burst of 101 edits settled {:?} after it began", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_changes_are_refused_with_restart_required() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let good = config(s.addr, c.addr, &route(100));
    let weir = Weir::start(&good).await;
    std::fs::write(
        weir.config_path(),
        good.replace("listen: [{address: \"127.0.0.1:0\"}]", "listen: [{address: \"127.0.0.1:1\"}]"),
    )
    .unwrap();
    let err = weir.handle.reloader.reload("test", false).unwrap_err();
    assert!(err.to_string().contains("restart required") && err.to_string().contains("listen"), "{err}");
    std::fs::write(
        weir.config_path(),
        good.replace("admin: {address: \"127.0.0.1:0\"}", "admin: {address: \"127.0.0.1:9\"}"),
    )
    .unwrap();
    let err = weir.handle.reloader.reload("test", false).unwrap_err();
    assert!(err.to_string().contains("restart required") && err.to_string().contains("admin.address"), "{err}");
    assert_eq!(get(&client(), &weir.url("/"), &[]).await.2, "canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_open_connections_and_upstream_pools() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let weir = Weir::start(&config(s.addr, c.addr, &route(0))).await;
    let http = client();
    for _ in 0..50 {
        get(&http, &weir.url("/"), &[]).await;
    }
    let conns_before = s.connections.load(Ordering::Relaxed);
    // One raw keep-alive connection held open across reloads.
    let mut sock = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for i in 0..20u32 {
        // Only the route changes; the upstream specs stay the same.
        let mut text = config(s.addr, c.addr, &route(0));
        text.push_str(&format!(
            "  - name: extra{i}\n    match: {{hosts: [x{i}.test]}}\n    stable: {{upstream: v1}}\n"
        ));
        weir.install(&text);
        sock.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await.unwrap().unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]);
        assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("stable"), "reload {i}: {resp}");
        get(&http, &weir.url("/"), &[]).await;
    }
    let new_conns = s.connections.load(Ordering::Relaxed) - conns_before;
    assert!(new_conns <= 2, "reloads caused {new_conns} new upstream connections");
    assert_eq!(weir.handle.live.load().generation, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_reports_generation_or_problems_and_honours_the_token() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let base = config(s.addr, c.addr, &route(0)).replace(
        "admin: {address: \"127.0.0.1:0\"}",
        &format!("admin: {{address: \"127.0.0.1:0\", token_file: \"{}\"}}", dir.path().join("token").display()),
    );
    let weir = Weir::start(&base).await;
    let http = client();
    let post = |auth: Option<&'static str>| {
        let mut b = http::Request::post(format!("http://{}/reload", weir.admin));
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        http.request(b.body(Full::new(Bytes::new())).unwrap())
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("Bearer wrong")).await.unwrap().status(), 401);
    assert_eq!(post(Some("Basic t0ken")).await.unwrap().status(), 401);
    // The scheme is case-insensitive (RFC 9110 §11.1).
    assert_eq!(post(Some("bearer t0ken")).await.unwrap().status(), 200);
    let resp = post(Some("Bearer t0ken")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["result"], "unchanged");
    std::fs::write(weir.config_path(), base.replace("weight: 0", "weight: 100")).unwrap();
    let resp = post(Some("Bearer t0ken")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // The watcher may have applied it first; either way it is serving now.
    assert!(v["result"] == "applied" || v["result"] == "unchanged", "{v}");
    assert_eq!(get(&http, &weir.url("/"), &[]).await.2, "canary");
    std::fs::write(weir.config_path(), base.replace("weight: 0", "weight: 100.5")).unwrap();
    let resp = post(Some("Bearer t0ken")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(v["problems"][0].as_str().unwrap().contains("routes[0].weight"), "{v}");
}
