//! Webhook notifications against real local HTTP receivers: one healthy
//! (JSON body, bearer token), one Slack-shaped, one answering 500 before it
//! accepts, one slow past its timeout and one down. Delivery must reach the
//! healthy ones once per (route, revision, state), retry the failing one,
//! give up on the dead one, never hold up the proxy, and never log the
//! token or the URL's secret path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Upstream, admin_post, client, config, get, refused_addr};

#[derive(Clone, Default)]
struct Receiver {
    addr: Option<std::net::SocketAddr>,
    got: Arc<Mutex<Vec<(String, http::HeaderMap, Value)>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicU64>,
    /// Answer after this long.
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut me = Receiver { addr: Some(listener.local_addr().unwrap()), ..Default::default() };
        let r = me.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            r.hits.fetch_add(1, Ordering::Relaxed);
                            let delay = r.delay_ms.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let failing = r.fail_first.load(Ordering::Relaxed) > 0;
                            if failing {
                                r.fail_first.fetch_sub(1, Ordering::Relaxed);
                            } else {
                                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                r.got.lock().unwrap().push((parts.uri.path().to_owned(), parts.headers, v));
                            }
                            let status = if failing { 500 } else { 200 };
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        me.addr = me.addr.take();
        me
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.unwrap())
    }

    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().iter().map(|g| g.2.clone()).collect()
    }
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

async fn metric(admin: std::net::SocketAddr, needle: &str) -> Option<f64> {
    let (_, _, text) = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    text.lines().find(|l| l.starts_with(needle)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_told_once_retried_and_never_hold_up_the_proxy() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let good = Receiver::start().await;
    let slack = Receiver::start().await;
    let flaky = Receiver::start().await;
    flaky.fail_first.store(2, Ordering::Relaxed);
    let slow = Receiver::start().await;
    slow.delay_ms.store(3_000, Ordering::Relaxed);
    let down = refused_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("hook-token");
    std::fs::write(&token, "t0p-s3cret\n").unwrap();
    let secret_path = "/services/T000/B000/s3cretpath";
    let notify = format!(
        "notify:
  - {{name: oncall, url: \"{}\", token_file: {}, events: [rollback, kill, config_refused]}}
  - {{name: chat, url: \"{}\", format: slack}}
  - {{name: flaky, url: \"{}\", format: teams}}
  - {{name: slow, url: \"{}\", timeout: 300ms}}
  - {{name: down, url: \"http://{}/hook\"}}
",
        good.url(secret_path),
        token.display(),
        slack.url("/slack"),
        flaky.url("/teams"),
        slow.url("/slow"),
        down.addr,
    );
    let routes = "  - name: bet
    stable: {upstream: v1, revision: \"1\"}
    canary: {upstream: v2, revision: \"2\"}
    weight: 50
    analysis: {interval: 1s}
";
    let yaml = config(s.addr, c.addr, routes).replace("routes:", &format!("{notify}routes:"));
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let (mut child, addr, admin, _out, err) = support::spawn_weir_admin(&cfg);

    // A rollback by hand: every sink that wants rollbacks is told.
    assert_eq!(admin_post(admin, "/routes/bet/rollback").await.0, 200);
    assert!(until(Duration::from_secs(10), || !good.bodies().is_empty() && !slack.bodies().is_empty()).await);
    let (path, headers, body) = good.got.lock().unwrap()[0].clone();
    assert_eq!(path, secret_path);
    assert_eq!(headers["authorization"], "Bearer t0p-s3cret");
    assert_eq!((body["event"].as_str(), body["notify_event"].as_str()), (Some("rollback"), Some("rollback")));
    assert_eq!((body["route"].as_str(), body["actor"].as_str()), (Some("bet"), Some("admin")));
    assert!(body["seq"].is_u64() && body["prev"].is_string(), "the journal line itself: {body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("weir rolled back canary 2 of route bet (admin, by admin)"), "{text}");
    let chat = &slack.bodies()[0];
    assert_eq!(chat.as_object().map(|o| o.len()), Some(1), "Slack gets {{text}} only: {chat}");
    assert_eq!(chat["text"], text);

    // The flaky one answers 500 twice, then takes it: delivered once.
    assert!(until(Duration::from_secs(15), || flaky.bodies().len() == 1).await, "retried until accepted");
    assert_eq!(flaky.bodies()[0]["@type"], "MessageCard");
    assert!(metric(admin, "weir_notifications_total{sink=\"flaky\",outcome=\"retried\"}").await >= Some(2.0));

    // While the slow and dead webhooks retry, the proxy serves as usual.
    let http = client();
    for _ in 0..50 {
        assert_eq!(get(&http, &format!("http://{addr}/"), &[]).await.0, 200);
    }

    // The same state again (a repeated rollback, a resume and a second
    // rollback of the same revision) is not told twice.
    assert_eq!(admin_post(admin, "/routes/bet/rollback").await.0, 200);
    assert_eq!(admin_post(admin, "/routes/bet/resume").await.0, 200);
    assert_eq!(admin_post(admin, "/routes/bet/rollback").await.0, 200);
    // A kill is news; its message is the marker that the others were not sent.
    assert_eq!(admin_post(admin, "/routes/bet/kill").await.0, 200);
    assert!(until(Duration::from_secs(10), || good.bodies().len() >= 2).await);
    let events: Vec<String> = good.bodies().iter().map(|b| b["notify_event"].as_str().unwrap().to_owned()).collect();
    assert_eq!(events, ["rollback", "kill"]);

    // A refused config edit.
    std::fs::write(&cfg, yaml.replace("weight: 50", "weight: 150")).unwrap();
    assert_eq!(admin_post(admin, "/reload").await.0, 400);
    assert!(until(Duration::from_secs(10), || good.bodies().len() >= 3).await);
    let refused = &good.bodies()[2];
    assert_eq!(refused["notify_event"], "config_refused");
    assert!(refused["text"].as_str().unwrap().contains("routes[0].weight"), "{refused}");
    // The chat sink did not ask for kills or refusals (default: no steps, but
    // kills and refusals yes): it got those too; the one with a list did not get steps.
    assert!(until(Duration::from_secs(10), || slack.bodies().len() == 3).await, "{:?}", slack.bodies());

    // The dead one gives up after its retries (~7.5 s of backoff), counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(admin, "weir_notifications_total{sink=\"down\",outcome=\"failed\"}").await < Some(1.0) {
        assert!(Instant::now() < deadline, "the dead webhook never gave up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(slow.hits.load(Ordering::Relaxed) >= 2, "the slow one was retried after its timeout");
    child.kill().unwrap();
    child.wait().unwrap();
    // No log line carries the token or the URL's secret path.
    let logs: Vec<String> = err.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("notification not delivered")), "the give-up is logged");
    for l in &logs {
        assert!(!l.contains("t0p-s3cret") && !l.contains("s3cretpath"), "secret in a log line: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (s, c) = (Upstream::start("stable").await, Upstream::start("canary").await);
    let slow = Receiver::start().await;
    slow.delay_ms.store(2_000, Ordering::Relaxed);
    let notify =
        format!("notify:\n  - {{name: slow, url: \"{}\", events: [config_refused], timeout: 10s}}\n", slow.url("/x"));
    let routes = "  - {name: bet, stable: {upstream: v1}, canary: {upstream: v2}, weight: 10}\n";
    let yaml = config(s.addr, c.addr, routes).replace("routes:", &format!("{notify}routes:"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let (mut child, addr, admin, _out, _err) = support::spawn_weir_admin(&cfg);
    // 80 different refused edits while the webhook takes 2 s per message:
    // one in flight, 64 queued, the rest dropped at once.
    for i in 0..80 {
        std::fs::write(&cfg, yaml.replace("weight: 10", &format!("weight: {}", 200 + i))).unwrap();
        assert_eq!(admin_post(admin, "/reload").await.0, 400);
    }
    let dropped = metric(admin, "weir_notifications_total{sink=\"slow\",outcome=\"dropped\"}").await.unwrap_or(0.0);
    // Had the reloads waited on the webhook, nothing would have dropped.
    assert!(dropped >= 10.0, "dropped {dropped}");
    assert_eq!(get(&client(), &format!("http://{addr}/"), &[]).await.0, 200);
    child.kill().unwrap();
    child.wait().unwrap();
}
