//! Outbound webhooks (`notify:`): the people around weir are told about
//! rollbacks, holds, promotions, steps, kills and refused config edits.
//!
//! Delivery never blocks or slows the proxy or the judge: an event is put
//! on each webhook's bounded queue with `try_send` (a full queue drops it,
//! counted and logged), and one task per webhook posts, with retries and
//! backoff. The same event is sent once per (route, revision, state): a
//! journal line that repeats a state already told (a hold that goes on, a
//! restart replaying a latch) is not sent again.
//!
//! Bodies: `json` is the journal line plus `text`, a sentence ready to post;
//! `slack` is `{"text": …}`; `teams` is a MessageCard. The webhook's URL
//! path (a Slack webhook's secret) and its token never appear in logs.

use crate::config::{NotifyEvent, NotifyFormat, NotifySink};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages waiting per webhook; more are dropped (and counted).
const QUEUE: usize = 64;
/// Attempts per message, and the backoff between them (doubling, capped).
const ATTEMPTS: u32 = 5;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Keys remembered for once-only delivery before the oldest are forgotten.
const REMEMBER: usize = 10_000;

/// What happened to messages for one webhook.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retried: AtomicU64,
}

struct Sink {
    spec: NotifySink,
    tx: mpsc::Sender<Bytes>,
    stats: Arc<SinkStats>,
}

pub struct Notifier {
    runtime: Option<tokio::runtime::Handle>,
    sinks: Mutex<Vec<Sink>>,
    told: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
}

impl Notifier {
    /// Webhook tasks run on the runtime current here (none: nothing is sent).
    pub fn new() -> Self {
        Self {
            runtime: tokio::runtime::Handle::try_current().ok(),
            sinks: Mutex::new(Vec::new()),
            told: Mutex::new(Default::default()),
        }
    }

    /// Fit the webhooks to a config: unchanged ones keep their queue and
    /// task, others start or stop (a stopped one finishes its queue).
    pub fn configure(&self, specs: &[NotifySink]) {
        let Some(rt) = &self.runtime else { return };
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        let mut old: Vec<Sink> = std::mem::take(&mut *sinks);
        for spec in specs {
            if let Some(i) = old.iter().position(|s| s.spec == *spec) {
                sinks.push(old.swap_remove(i));
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let stats = Arc::new(SinkStats::default());
            rt.spawn(deliver(spec.clone(), rx, Arc::clone(&stats)));
            sinks.push(Sink { spec: spec.clone(), tx, stats });
        }
    }

    /// Per webhook: name and counters (for /metrics).
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        sinks.iter().map(|s| (s.spec.name.clone(), Arc::clone(&s.stats))).collect()
    }

    /// A journal line was written: tell the webhooks that want it, once.
    pub fn on_journal(&self, line: &Value) {
        let Some((event, key)) = classify(line) else { return };
        self.send(event, key, line);
    }

    /// A config edit was refused.
    pub fn config_refused(&self, file: &str, problems: &[String]) {
        let key = format!("config_refused/{}", crate::journal::hash_line(problems.join("\n").as_bytes()));
        let line = json!({
            "at": crate::clock::rfc3339_now(),
            "event": "config_refused",
            "file": file,
            "problems": problems,
        });
        self.send(NotifyEvent::ConfigRefused, key, &line);
    }

    fn send(&self, event: NotifyEvent, key: String, line: &Value) {
        let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        if !sinks.iter().any(|s| s.spec.events.contains(&event)) || !self.first_time(key) {
            return;
        }
        let text = sentence(event, line);
        for s in sinks.iter().filter(|s| s.spec.events.contains(&event)) {
            let body = body(s.spec.format, event, line, &text);
            if s.tx.try_send(body).is_err() {
                s.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %s.spec.name, event = event.as_str(), "notification dropped: the webhook's queue is full");
            }
        }
    }

    /// True the first time `key` is seen (bounded memory: the oldest keys
    /// are forgotten first).
    fn first_time(&self, key: String) -> bool {
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *told;
        if !set.insert(key.clone()) {
            return false;
        }
        order.push_back(key);
        if order.len() > REMEMBER
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

/// Which notification a journal line is, and its once-only key.
pub fn classify(line: &Value) -> Option<(NotifyEvent, String)> {
    let s = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("");
    let route = s("route");
    let revision = line.pointer("/revision/canary").and_then(Value::as_str).unwrap_or("");
    let step = line.get("step").map(Value::to_string).unwrap_or_default();
    let event = match (s("event"), s("state")) {
        ("rollback", _) => NotifyEvent::Rollback,
        ("kill", _) => NotifyEvent::Kill,
        ("promoted", _) => NotifyEvent::Promoted,
        ("step", _) => NotifyEvent::Step,
        ("verdict", _) if s("verdict") == "hold" => NotifyEvent::Hold,
        // Fleet mode: the state the fleet's fold reached. (`fleet_sync`, a
        // replica catching up after a restart, is not news.)
        ("fleet_state" | "fleet_steer", "rolled_back") => NotifyEvent::Rollback,
        ("fleet_state" | "fleet_steer", "promoted") => NotifyEvent::Promoted,
        ("fleet_state" | "fleet_steer", "killed") => NotifyEvent::Kill,
        _ => return None,
    };
    let detail = match event {
        NotifyEvent::Step | NotifyEvent::Hold => step,
        _ => String::new(),
    };
    Some((event, format!("{route}/{revision}/{}/{detail}", event.as_str())))
}

/// The one sentence an on-call engineer reads first.
pub fn sentence(event: NotifyEvent, l: &Value) -> String {
    let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let route = s("route");
    let rev = l.pointer("/revision/canary").and_then(Value::as_str).unwrap_or("?");
    let weight = |k: &str| l.pointer(&format!("/weight/{k}")).and_then(Value::as_f64).unwrap_or(0.0);
    let why =
        l.get("why").or_else(|| l.get("reason")).and_then(Value::as_str).map(|w| format!(": {w}")).unwrap_or_default();
    match event {
        NotifyEvent::Rollback => format!(
            "weir rolled back canary {rev} of route {route} ({}, by {}){why}. Canary traffic {}% → 0%; it stays off until a new revision or a resume.",
            l.get("reason").and_then(Value::as_str).unwrap_or(if s("actor") == "admin" { "admin" } else { "rollback" }),
            s("actor"),
            weight("from")
        ),
        NotifyEvent::Hold => format!(
            "weir holds the rollout of canary {rev} on route {route}: stable breaks the SLO too (a shared outage, not the canary){why}."
        ),
        NotifyEvent::Promoted => {
            format!("weir promoted canary {rev} of route {route}: every step passed (now {}%).", weight("to"))
        }
        NotifyEvent::Step => {
            format!(
                "weir moved canary {rev} of route {route} from {}% to {}% after a pass.",
                weight("from"),
                weight("to")
            )
        }
        NotifyEvent::Kill => {
            format!("canary {rev} of route {route} was killed (by {}): its traffic is 0%.", s("actor"))
        }
        NotifyEvent::ConfigRefused => {
            let n = l.get("problems").and_then(Value::as_array).map_or(0, Vec::len);
            let first = l.pointer("/problems/0").and_then(Value::as_str).unwrap_or("");
            format!("weir refused an edit of {} ({n} problem(s); the previous config still serves): {first}", s("file"))
        }
    }
}

/// The request body for a webhook of `format`.
pub fn body(format: NotifyFormat, event: NotifyEvent, line: &Value, text: &str) -> Bytes {
    let v = match format {
        NotifyFormat::Json => {
            let mut v = line.clone();
            if let Value::Object(m) = &mut v {
                m.insert("notify_event".into(), json!(event.as_str()));
                m.insert("text".into(), json!(text));
            }
            v
        }
        NotifyFormat::Slack => json!({"text": text}),
        NotifyFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": text,
            "themeColor": match event {
                NotifyEvent::Rollback | NotifyEvent::Kill | NotifyEvent::ConfigRefused => "D70000",
                NotifyEvent::Hold => "FFA500",
                NotifyEvent::Promoted | NotifyEvent::Step => "2EB886",
            },
            "title": format!("weir: {}", event.as_str()),
            "text": text,
        }),
    };
    Bytes::from(v.to_string())
}

/// One webhook's task: post each message, retrying failures with backoff.
async fn deliver(spec: NotifySink, mut rx: mpsc::Receiver<Bytes>, stats: Arc<SinkStats>) {
    while let Some(body) = rx.recv().await {
        let mut wait = BACKOFF_FIRST;
        for attempt in 1..=ATTEMPTS {
            match post(&spec, body.clone()).await {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(Failure { why, retry }) if retry && attempt < ATTEMPTS => {
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(sink = %spec.name, attempt, error = %why, "notification failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(BACKOFF_MAX);
                }
                Err(Failure { why, .. }) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sink = %spec.name, host = %spec.host, attempts = attempt, error = %why, "notification not delivered");
                    break;
                }
            }
        }
    }
}

struct Failure {
    why: String,
    retry: bool,
}

fn failure(why: impl std::fmt::Display, retry: bool) -> Failure {
    Failure { why: why.to_string(), retry }
}

/// POST `body` to the webhook, within its timeout.
async fn post(spec: &NotifySink, body: Bytes) -> Result<(), Failure> {
    match tokio::time::timeout(spec.timeout, exchange(spec, body)).await {
        Ok(r) => r,
        Err(_) => Err(failure(format!("no answer within {:?}", spec.timeout), true)),
    }
}

async fn exchange(spec: &NotifySink, body: Bytes) -> Result<(), Failure> {
    let token = match &spec.token_file {
        None => None,
        Some(f) => {
            let t = crate::files::read_capped(f, crate::files::MAX_SECRET)
                .map_err(|e| failure(format!("token file {}: {e}", f.display()), false))?;
            Some(String::from_utf8_lossy(&t).trim().to_owned())
        }
    };
    let tcp = tokio::net::TcpStream::connect(&spec.authority).await.map_err(|e| failure(e, true))?;
    let _ = tcp.set_nodelay(true);
    let mut req = http::Request::post(&spec.path)
        .header(http::header::HOST, &spec.host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("weir/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| failure(e, false))?;
    let status = if spec.tls {
        let name = rustls_pki_types::ServerName::try_from(spec.host.clone()).map_err(|e| failure(e, false))?;
        let connector = tls_connector().ok_or_else(|| failure("no TLS client configuration", false))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| failure(e, true))?;
        send(tls, req).await?
    } else {
        send(tcp, req).await?
    };
    match status {
        s if s.is_success() => Ok(()),
        s if s.is_server_error() || s == http::StatusCode::TOO_MANY_REQUESTS => {
            Err(failure(format!("answered {s}"), true))
        }
        s => Err(failure(format!("answered {s}"), false)),
    }
}

async fn send<S>(io: S, req: http::Request<Full<Bytes>>) -> Result<http::StatusCode, Failure>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await.map_err(|e| failure(e, true))?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| failure(e, true));
    let status = match resp {
        Ok(r) => {
            let status = r.status();
            // Read (and forget) a bounded answer so the exchange ends cleanly.
            let _ = http_body_util::Limited::new(r.into_body(), 64 * 1024).collect().await;
            Ok(status)
        }
        Err(e) => Err(e),
    };
    driver.abort();
    status
}

/// A TLS client with the Mozilla roots (webpki-roots), built once.
fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .ok()
    });
    config.as_ref().map(|c| tokio_rustls::TlsConnector::from(Arc::clone(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: &str, extra: Value) -> Value {
        let mut v = json!({"route": "bet", "event": event, "actor": "auto", "revision": {"stable": "1", "canary": "2"},
                           "weight": {"from": 10.0, "to": 0.0}, "state": "rolled_back", "step": 1});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        v
    }

    #[test]
    fn journal_lines_map_to_events_with_once_only_keys() {
        let (e, k) = classify(&line("rollback", json!({"reason": "error_rate"}))).unwrap();
        assert_eq!((e, k.as_str()), (NotifyEvent::Rollback, "bet/2/rollback/"));
        let (e, k) = classify(&line("step", json!({"step": 2}))).unwrap();
        assert_eq!((e, k.as_str()), (NotifyEvent::Step, "bet/2/step/2"));
        assert_eq!(classify(&line("verdict", json!({"verdict": "hold"}))).map(|c| c.0), Some(NotifyEvent::Hold));
        assert_eq!(classify(&line("verdict", json!({"verdict": "pass"}))), None);
        assert_eq!(classify(&line("fleet_state", json!({}))).map(|c| c.0), Some(NotifyEvent::Rollback));
        assert_eq!(classify(&line("kill", json!({}))).map(|c| c.0), Some(NotifyEvent::Kill));
        assert_eq!(classify(&line("fleet_sync", json!({}))), None, "catching up is not news");
    }

    #[test]
    fn a_state_is_told_once() {
        let n = Notifier::new();
        assert!(n.first_time("bet/2/rollback/".into()));
        assert!(!n.first_time("bet/2/rollback/".into()));
        assert!(n.first_time("bet/3/rollback/".into()), "a new revision is news");
    }

    #[test]
    fn bodies_carry_the_line_and_a_sentence() {
        let l = line("rollback", json!({"reason": "error_rate", "why": "E fired"}));
        let text = sentence(NotifyEvent::Rollback, &l);
        assert_eq!(
            text,
            "weir rolled back canary 2 of route bet (error_rate, by auto): E fired. Canary traffic 10% → 0%; it stays off until a new revision or a resume."
        );
        let j: Value = serde_json::from_slice(&body(NotifyFormat::Json, NotifyEvent::Rollback, &l, &text)).unwrap();
        assert_eq!(
            (j["route"].as_str(), j["text"].as_str(), j["notify_event"].as_str()),
            (Some("bet"), Some(text.as_str()), Some("rollback"))
        );
        let s: Value = serde_json::from_slice(&body(NotifyFormat::Slack, NotifyEvent::Rollback, &l, &text)).unwrap();
        assert_eq!(s, json!({"text": text}));
        let t: Value = serde_json::from_slice(&body(NotifyFormat::Teams, NotifyEvent::Rollback, &l, &text)).unwrap();
        assert_eq!((t["@type"].as_str(), t["text"].as_str()), (Some("MessageCard"), Some(text.as_str())));
    }
}
