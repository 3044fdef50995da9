//! Endpoints from DNS (design §13, issue 33 items 1, 2 and 7), against a
//! real DNS server on loopback (dnsmasq, see `support::dns`) and "pods" on
//! 127.0.0.2, 127.0.0.3, … sharing one port, as a headless Service's pods
//! do. Each pod answers HTTP/1.1 and WebSocket; asserted on what the pods
//! received, what clients got, and what `GET /upstreams` and /metrics say.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::dns::Dns;
use support::{Weir, client, get};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

const NAME: &str = "game.weir.test";

/// A pod: HTTP/1.1 answers `200 <ip>`, and WebSocket echo.
struct Pod {
    ip: IpAddr,
    http: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Pod {
    async fn start(ip: Ipv4Addr, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, port))).await.unwrap();
        let http = Arc::new(AtomicU64::new(0));
        let h2 = http.clone();
        let me = ip.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (http, me) = (h2.clone(), me.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (http, me) = (http.clone(), me.clone());
                        async move { Ok::<_, Infallible>(answer(req, &http, &me)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { ip: IpAddr::V4(ip), http, task }
    }

    fn count(&self) -> u64 {
        self.http.load(Ordering::Relaxed)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(mut req: Request<Incoming>, http: &AtomicU64, me: &str) -> Response<Full<Bytes>> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key else {
        http.fetch_add(1, Ordering::Relaxed);
        return Response::builder().header("x-pod", me).body(Full::new(Bytes::from(me.to_owned()))).unwrap();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .header("x-pod", me)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `n` pods on 127.0.0.2 … on one free port.
async fn pods(n: u8) -> (Vec<Pod>, u16) {
    'again: for _ in 0..20 {
        let probe = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let mut out = Vec::new();
        for i in 0..n {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i);
            if std::net::TcpListener::bind((ip, port)).is_err() {
                continue 'again;
            }
            out.push(Pod::start(ip, port).await);
        }
        return (out, port);
    }
    panic!("no port free on every pod address");
}

fn records(pods: &[Pod]) -> Vec<(&'static str, IpAddr)> {
    pods.iter().map(|p| (NAME, p.ip)).collect()
}

fn yaml(dns: &Dns, port: u16, extra: &str) -> String {
    format!(
        "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
         resolver: {{nameservers: [\"{}\"], timeout: 1s}}\n\
         upstreams:\n  v1: {{dns: {{name: {NAME}, port: {port}, refresh: 200ms}}{extra}}}\n\
         routes:\n  - name: app\n    stable: {{upstream: v1}}\n",
        dns.addr
    )
}

async fn upstreams(weir: &Weir) -> serde_json::Value {
    let (status, _, body) = get(&client(), &format!("http://{}/upstreams", weir.admin), &[]).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Poll `GET /upstreams` (bounded) until `f` holds; returns the last view.
async fn until(weir: &Weir, limit: Duration, f: impl Fn(&serde_json::Value) -> bool) -> (bool, serde_json::Value) {
    let deadline = Instant::now() + limit;
    loop {
        let v = upstreams(weir).await;
        if f(&v) {
            return (true, v);
        }
        if Instant::now() > deadline {
            return (false, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn in_state(v: &serde_json::Value, state: &str) -> Vec<String> {
    v["upstreams"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == state)
        .map(|e| e["address"].as_str().unwrap().to_owned())
        .collect()
}

/// Keep-alive clients sending GETs until stopped (at most 60 s or 20,000
/// each), counting answers by status and failures to get one.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(url: String, tasks: usize) -> Self {
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..tasks)
            .map(|_| {
                let (stop, ok, url, http) = (stop.clone(), ok.clone(), url.clone(), client());
                tokio::spawn(async move {
                    let (mut bad, deadline) = (0u64, Instant::now() + Duration::from_secs(60));
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 20_000 {
                        sent += 1;
                        match tokio::time::timeout(Duration::from_secs(5), get(&http, &url, &[])).await {
                            Ok((s, _, _)) if s == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                            _ => {
                                bad += 1;
                                0
                            }
                        };
                    }
                    (sent, bad)
                })
            })
            .collect();
        Self { stop, ok, tasks }
    }

    /// Wait (bounded) until `n` more requests have been answered 200.
    async fn more(&self, n: u64) {
        let (from, deadline) = (self.ok.load(Ordering::Relaxed), Instant::now() + Duration::from_secs(20));
        while self.ok.load(Ordering::Relaxed) < from + n {
            assert!(Instant::now() < deadline, "load stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop; (sent, not answered 200).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = (0, 0);
        for t in self.tasks {
            let (s, b) = t.await.unwrap();
            total = (total.0 + s, total.1 + b);
        }
        total
    }
}

/// Scale-out 2 → 4 under steady keep-alive load: the new pods appear
/// within 10 s of the DNS change and, from then on, every pod gets its fair
/// share within ±10 % (p2c among equal pods).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_from_two_to_four_pods_shares_the_load_fairly() {
    let (all, port) = pods(4).await;
    let dns = Dns::start(&records(&all[..2]));
    let weir = Weir::start(&yaml(&dns, port, "")).await;
    let (ok, v) = until(&weir, Duration::from_secs(5), |v| in_state(v, "healthy").len() == 2).await;
    assert!(ok, "two pods from DNS at start: {v}");
    assert_eq!(v["upstreams"][0]["dns"]["name"], NAME);

    let load = Load::start(weir.url("/"), 8);
    load.more(300).await;
    assert!(all[0].count() > 0 && all[1].count() > 0 && all[2].count() == 0);

    dns.set(&records(&all));
    let changed = Instant::now();
    let (ok, v) = until(&weir, Duration::from_secs(10), |v| in_state(v, "healthy").len() == 4).await;
    assert!(ok, "four pods within 10 s of the DNS change: {v}");
    println!("scale-out seen after {:?}", changed.elapsed());
    let before: Vec<u64> = all.iter().map(Pod::count).collect();
    load.more(4000).await;
    let (sent, bad) = load.stop().await;
    assert_eq!(bad, 0, "every request answered 200 ({sent} sent)");
    let got: Vec<u64> = all.iter().zip(&before).map(|(p, b)| p.count() - b).collect();
    let total: u64 = got.iter().sum();
    println!("after scale-out: {got:?} of {total}");
    for (i, n) in got.iter().enumerate() {
        let share = *n as f64 / total as f64;
        assert!((0.225..=0.275).contains(&share), "pod {i} got {share:.3} of the load: {got:?}");
    }
    // The keep-alive pools did not pin the load to the first two pods.
    assert!(got[2] > 0 && got[3] > 0);
}

/// Scale-in 4 → 2 under load with 500 WebSockets open: no request fails,
/// no WebSocket is closed by weir (the pods that left still echo; in
/// Kubernetes they close their sockets themselves when they stop), and
/// no new request reaches the pods that left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_keeps_websockets_open_and_fails_no_request() {
    let (all, port) = pods(4).await;
    let dns = Dns::start(&records(&all));
    let weir = Weir::start(&yaml(&dns, port, "")).await;
    let (ok, v) = until(&weir, Duration::from_secs(5), |v| in_state(v, "healthy").len() == 4).await;
    assert!(ok, "{v}");

    let mut sockets = Vec::new();
    let mut on = std::collections::HashMap::<String, usize>::new();
    for _ in 0..500 {
        let (ws, resp) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(format!("ws://{}/game", weir.addr)),
        )
        .await
        .unwrap()
        .unwrap();
        *on.entry(resp.headers()["x-pod"].to_str().unwrap().to_owned()).or_default() += 1;
        sockets.push(ws);
    }
    println!("websockets per pod: {on:?}");
    assert_eq!(on.len(), 4, "WebSockets spread over the four pods: {on:?}");

    let load = Load::start(weir.url("/"), 8);
    load.more(300).await;
    dns.set(&records(&all[..2]));
    let (ok, v) = until(&weir, Duration::from_secs(10), |v| in_state(v, "healthy").len() == 2).await;
    assert!(ok, "two pods left within 10 s: {v}");
    // A request that picked a leaving pod just before the swap may still land.
    load.more(200).await;
    let gone: Vec<u64> = all[2..].iter().map(Pod::count).collect();
    load.more(1000).await;
    let (sent, bad) = load.stop().await;
    assert_eq!(bad, 0, "no request failed across the scale-in ({sent} sent)");
    let after: Vec<u64> = all[2..].iter().map(Pod::count).collect();
    assert_eq!(gone, after, "the pods that left got no new request");

    // Every WebSocket is still open and still echoes, on whichever pod.
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(back, Message::text(format!("m{i}")), "socket {i}");
    }
    let m = support::metrics(weir.admin).await;
    assert_eq!(support::metric(&m, "weir_upstream_endpoints{upstream=\"v1\",state=\"healthy\"}"), Some(2.0), "{m}");
}

/// The DNS server stops: the last good set is kept, the failures are
/// counted and shown, and traffic goes on to the same pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_outage_keeps_the_last_good_endpoints() {
    let (all, port) = pods(2).await;
    let mut dns = Dns::start(&records(&all));
    let weir = Weir::start(&yaml(&dns, port, "")).await;
    let (ok, v) = until(&weir, Duration::from_secs(5), |v| in_state(v, "healthy").len() == 2).await;
    assert!(ok, "{v}");
    dns.stop();
    let (ok, v) = until(&weir, Duration::from_secs(10), |v| {
        v["upstreams"][0]["dns"]["failures"].as_u64() >= Some(1) && v["upstreams"][0]["dns"]["last_error"].is_string()
    })
    .await;
    assert!(ok, "the failed lookups are shown: {v}");
    assert_eq!(in_state(&v, "healthy").len(), 2, "the last good set is kept: {v}");
    let before: Vec<u64> = all.iter().map(Pod::count).collect();
    let http = client();
    for _ in 0..100 {
        assert_eq!(get(&http, &weir.url("/"), &[]).await.0, 200);
    }
    let got: Vec<u64> = all.iter().zip(&before).map(|(p, b)| p.count() - b).collect();
    assert_eq!(got.iter().sum::<u64>(), 100);
    assert!(got.iter().all(|&n| n > 0), "both pods still in service: {got:?}");
    let m = support::metrics(weir.admin).await;
    assert!(support::metric(&m, "weir_upstream_dns_failures_total{upstream=\"v1\"}").unwrap() >= 1.0, "{m}");
}

/// A reload that changes something else about the upstream (its balance)
/// keeps the endpoints DNS gave it, with their counters: no gap, no
/// reconnect storm, nothing forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_endpoints_dns_gave() {
    let (all, port) = pods(2).await;
    let dns = Dns::start(&records(&all));
    let weir = Weir::start(&yaml(&dns, port, "")).await;
    let (ok, v) = until(&weir, Duration::from_secs(5), |v| in_state(v, "healthy").len() == 2).await;
    assert!(ok, "{v}");
    let http = client();
    for _ in 0..20 {
        assert_eq!(get(&http, &weir.url("/"), &[]).await.0, 200);
    }
    weir.install(&yaml(&dns, port, ", balance: round_robin"));
    // At once, before any new lookup could have answered.
    let v = upstreams(&weir).await;
    assert_eq!(v["upstreams"][0]["balance"], "round_robin");
    let eps = v["upstreams"][0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2, "{v}");
    let requests: u64 = eps.iter().map(|e| e["requests"].as_u64().unwrap()).sum();
    assert_eq!(requests, 20, "the endpoints and their counters carried over: {v}");
}
