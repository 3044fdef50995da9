//! `weir demo` (design §11): the whole job in about half a minute, on
//! loopback, with nothing to install or configure.
//!
//! It starts two upstreams of its own (stable and canary), writes a config
//! with analysis and progression into a temporary directory, starts weir on
//! free ports, and drives synthetic players at it (most with a player id,
//! some anonymous, a few staff and a few markets). A live view shows the
//! split, per-version rate, errors and p50/p99, and the rollout step as the
//! canary climbs, with each evidence test's e-value climbing (or not)
//! towards its threshold. Once the canary reaches 25 % the demo breaks it
//! (errors and latency); weir's judge rolls it back, and the demo prints the
//! journal line that says why, a summary, and cleans up after itself.

use crate::config::UpstreamSpec;
use crate::routing::Version;
use crate::upstream::{ReqBody, Upstream};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::RngExt;
use std::convert::Infallible;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// The demo never runs longer than this, whatever happens.
const LIMIT: Duration = Duration::from_secs(120);
/// Players (tasks) and the pause between their requests: ~250 req/s in all.
const PLAYERS: usize = 16;
const THINK: Duration = Duration::from_millis(60);

/// How an upstream of the demo behaves; changed live to break the canary.
#[derive(Default)]
struct Behaviour {
    errors_per_mille: AtomicU32,
    extra_ms: AtomicU64,
}

async fn upstream(name: &'static str, b: Arc<Behaviour>, stop: Arc<AtomicBool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let Ok((stream, _)) = listener.accept().await else { return };
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let b = Arc::clone(&b);
                    async move {
                        // 2–6 ms of "work", plus whatever the demo adds.
                        let (work, fail) = {
                            let mut rng = rand::rng();
                            (rng.random_range(2..=6u64), rng.random_range(0..1000u32))
                        };
                        let extra = b.extra_ms.load(Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(work + extra)).await;
                        let status = if fail < b.errors_per_mille.load(Ordering::Relaxed) {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut resp = Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn config_text(stable: SocketAddr, canary: SocketAddr, state_dir: &Path) -> String {
    format!(
        r#"# Written by `weir demo`.
listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
state_dir: "{state}"
shutdown: {{delay: 0s, grace: 2s}}
upstreams:
  game-v1: {{endpoints: ["{stable}"], connect_timeout: 500ms, request_timeout: 5s}}
  game-v2: {{endpoints: ["{canary}"], connect_timeout: 500ms, request_timeout: 5s}}
routes:
  - name: game
    stable: {{upstream: game-v1, revision: "1.0.0"}}
    canary: {{upstream: game-v2, revision: "1.1.0"}}
    sticky: {{keys: ["header:x-player-id"]}}
    segments:
      - {{name: staff, match: {{header: {{x-employee: "true"}}}}, weight: 100}}
    analysis: {{interval: 1s, window: 5s, warmup: 2s, max_error_rate: 5}}
    progression: {{steps: [5, 10, 25, 50, 100], hold: 5s}}
"#,
        state = state_dir.display()
    )
}

/// One synthetic player loop: 70 % with a player id (sticky), 25 %
/// anonymous, a few staff; some with a market header.
async fn player(client: Arc<Upstream>, id: usize, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let deadline = Instant::now() + LIMIT;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let mut req = Request::new(ReqBody::empty());
        *req.uri_mut() = http::Uri::from_static("/play");
        let (kind, who, market) = {
            let mut rng = rand::rng();
            (rng.random_range(0..100u32), rng.random_range(0..2000u32), rng.random_range(0..4usize))
        };
        let h = req.headers_mut();
        h.insert(http::header::HOST, http::HeaderValue::from_static("game.local"));
        if kind < 70 {
            if let Ok(v) = http::HeaderValue::from_str(&format!("player-{who}")) {
                h.insert("x-player-id", v);
            }
        } else if kind < 72 {
            h.insert("x-employee", http::HeaderValue::from_static("true"));
        }
        h.insert("x-market", http::HeaderValue::from_static(["SE", "NO", "DE", "UK"][market]));
        let (mut parts, body) = req.into_parts();
        if let Ok(conn) = client.connect(&mut crate::upstream::Tried::new()).await
            && let Ok(resp) = client.send(conn, &mut parts, body, &[]).await
        {
            let _ = resp.into_body().collect().await;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        // Spread players out a little so they do not march in step.
        tokio::time::sleep(THINK + Duration::from_millis((id as u64 * 7) % 13)).await;
    }
}

/// What the view shows, read from the serving weir.
struct Frame {
    state: &'static str,
    step: Option<usize>,
    steps: usize,
    weight: f64,
    rate: [f64; 2],
    errors: [f64; 2],
    p50: [f64; 2],
    p99: [f64; 2],
    verdicts: Vec<String>,
    /// Per test: name, e-value and threshold of its scope closest to firing.
    evidence: Vec<(&'static str, f64, f64)>,
    /// The latest verdict's sentence.
    reason: String,
}

fn frame(handle: &crate::app::Handle) -> Option<Frame> {
    let served = handle.live.load();
    let route = served.snapshot.table.routes.first()?;
    let m = served.route_metrics.first()?;
    let now = Instant::now();
    let window = m.canary.window.length().as_secs_f64().max(0.001);
    let s = [m.stable.window.stats(now), m.canary.window.stats(now)];
    let effective = route.effective_weight_bp();
    Some(Frame {
        state: route.overlay.phase.as_str(),
        step: route.overlay.step,
        steps: route.progression.as_ref().map_or(0, |p| p.steps.len()),
        weight: f64::from(effective) / 100.0,
        rate: [s[0].requests as f64 / window, s[1].requests as f64 / window],
        errors: [s[0].error_percent, s[1].error_percent],
        p50: [s[0].p50_ms, s[1].p50_ms],
        p99: [s[0].p99_ms, s[1].p99_ms],
        verdicts: m
            .recent_verdicts()
            .iter()
            .rev()
            .take(5)
            .filter_map(|v| v["verdict"].as_str().map(str::to_owned))
            .collect(),
        evidence: m.standings().iter().map(|s| (s.test.as_str(), s.e_weighted, s.threshold)).collect(),
        reason: m.recent_verdicts().last().and_then(|v| v["reason"].as_str().map(str::to_owned)).unwrap_or_default(),
    })
}

/// An e-value against its threshold on a log scale: 1 is empty, the
/// threshold is full.
fn evidence_bar(e: f64, threshold: f64) -> String {
    const LEN: usize = 24;
    let fill = if e <= 1.0 { 0.0 } else { (e.ln() / threshold.ln()).min(1.0) };
    let n = (fill * LEN as f64).round() as usize;
    format!("[{}{}]", "#".repeat(n), ".".repeat(LEN - n))
}

fn short(e: f64) -> String {
    if e >= 1e5 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}

fn render(f: &Frame, elapsed: Duration, event: &str) -> Vec<String> {
    let step = match f.step {
        Some(i) => format!("step {}/{}", i + 1, f.steps),
        None => "-".to_owned(),
    };
    let bar_len = (f.weight / 100.0 * 40.0).round() as usize;
    let bar = format!("[{}{}]", "#".repeat(bar_len), ".".repeat(40 - bar_len.min(40)));
    let mut lines = vec![
        format!("weir demo: canary analysis and automatic rollback        t = {:>5.1}s", elapsed.as_secs_f64()),
        String::new(),
        format!("route game   state {:<12} {:<10} canary weight {:>5.1} %", f.state, step, f.weight),
        format!("             {bar}"),
        String::new(),
        format!("{:<8}{:>10}{:>10}{:>10}{:>10}   (last 5 s)", "version", "req/s", "errors", "p50", "p99"),
    ];
    for (i, v) in [Version::Stable, Version::Canary].iter().enumerate() {
        lines.push(format!(
            "{:<8}{:>10.1}{:>9.1}%{:>8.1}ms{:>8.1}ms",
            v.as_str(),
            f.rate[i],
            f.errors[i],
            f.p50[i],
            f.p99[i]
        ));
    }
    lines.push(String::new());
    lines.push("evidence against the canary (e-value towards the threshold that rolls it back):".to_owned());
    for (test, e, t) in &f.evidence {
        lines.push(format!("  {test:<9}{} {:>9} / {}", evidence_bar(*e, *t), short(*e), short(*t)));
    }
    lines.push(String::new());
    lines.push(format!("latest verdicts (newest first): {}", f.verdicts.join(" ")));
    let mut why = f.reason.clone();
    if why.len() > 110 {
        let cut = (0..=110).rev().find(|i| why.is_char_boundary(*i)).unwrap_or(0);
        why.truncate(cut);
        why.push('…');
    }
    lines.push(format!("why: {why}"));
    lines.push(format!("now: {event}"));
    lines
}

/// The demo's steps, in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    Climbing,
    Broken,
    RolledBack,
}

fn last_rollback(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("journal.jsonl")).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["reason"].is_string())
}

/// Run the demo; returns whether it showed a rollback.
pub async fn run() -> anyhow::Result<bool> {
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path) -> anyhow::Result<bool> {
    let stop = Arc::new(AtomicBool::new(false));
    let stable_b = Arc::new(Behaviour::default());
    let canary_b = Arc::new(Behaviour::default());
    let stable = upstream("stable", Arc::clone(&stable_b), Arc::clone(&stop)).await?;
    let canary = upstream("canary", Arc::clone(&canary_b), Arc::clone(&stop)).await?;
    let state_dir: PathBuf = dir.join("state");
    let handle = start_weir(dir, stable, canary, &state_dir).await?;
    let listen = *handle.listen.first().ok_or_else(|| anyhow::anyhow!("no listener"))?;
    let client = weir_client(listen);
    let sent = Arc::new(AtomicU64::new(0));
    let players: Vec<_> = (0..PLAYERS)
        .map(|i| tokio::spawn(player(Arc::clone(&client), i, Arc::clone(&stop), Arc::clone(&sent))))
        .collect();

    println!(
        "weir {} demo on loopback: weir at http://{listen}, admin at http://{}",
        crate::version::VERSION,
        handle.admin
    );
    println!("stable upstream {stable}, canary upstream {canary}; {PLAYERS} synthetic players; Ctrl-C ends it.\n");
    let started = Instant::now();
    let mut story = Story::new();
    let interrupted = watch(&handle, &mut story, &canary_b, started).await?;

    stop.store(true, Ordering::Relaxed);
    for p in players {
        let _ = p.await;
    }
    println!();
    let rolled_back = story.act == Act::RolledBack;
    summarize(story.act, interrupted, &state_dir, sent.load(Ordering::Relaxed), started);
    handle.shutdown();
    handle.wait().await;
    Ok(rolled_back || interrupted)
}

/// Write the demo's config into `dir` and start weir on it.
async fn start_weir(
    dir: &Path,
    stable: SocketAddr,
    canary: SocketAddr,
    state_dir: &Path,
) -> anyhow::Result<crate::app::Handle> {
    let config_path = dir.join("weir.yaml");
    std::fs::write(&config_path, config_text(stable, canary, state_dir))?;
    let snapshot = crate::config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    Ok(crate::app::start(config_path, snapshot).await?)
}

/// The players' client: plain HTTP/1 to weir's listener, no retries, no
/// passive health.
fn weir_client(listen: SocketAddr) -> Arc<Upstream> {
    Upstream::start(
        UpstreamSpec {
            name: Arc::from("weir"),
            endpoints: vec![listen.to_string()],
            dns: None,
            retry: crate::config::Retry { attempts: 0, ..Default::default() },
            balance: crate::config::Balance::RoundRobin,
            protocol: crate::config::Protocol::Http1,
            tls: None,
            passive: crate::config::Passive { consecutive_failures: 0, ..Default::default() },
            active: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
        },
        None,
    )
}

/// Every 250 ms: read the serving weir, move the story on, show it. Ends
/// 4 s after the rollback, at `LIMIT`, or on Ctrl-C or SIGTERM (then
/// returns true; the caller still cleans up).
async fn watch(
    handle: &crate::app::Handle,
    story: &mut Story,
    canary_b: &Behaviour,
    started: Instant,
) -> anyhow::Result<bool> {
    let mut view = View::new(started);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let ctrl_c = tokio::signal::ctrl_c();
    let mut ctrl_c = std::pin::pin!(ctrl_c);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut ctrl_c => return Ok(true),
            _ = term.recv() => return Ok(true),
        }
        let Some(f) = frame(handle) else { return Ok(false) };
        story.advance(&f, canary_b);
        view.show(&f, &story.event);
        if story.rolled_back_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(4)) || started.elapsed() >= LIMIT {
            return Ok(false);
        }
    }
}

/// Where the demo is in its story, and the sentence that tells it.
struct Story {
    act: Act,
    event: String,
    /// When the canary first sat at 25 %, then when the demo broke it.
    broke_at: Option<Instant>,
    rolled_back_at: Option<Instant>,
}

impl Story {
    fn new() -> Self {
        Story {
            act: Act::Climbing,
            event: String::from("canary 1.1.0 is healthy; weir walks it up a step after each hold that ends in `pass`"),
            broke_at: None,
            rolled_back_at: None,
        }
    }

    /// Break the canary once it has sat at 25 % for a moment; notice
    /// weir's rollback.
    fn advance(&mut self, f: &Frame, canary_b: &Behaviour) {
        match self.act {
            Act::Climbing if f.step == Some(2) && f.state == "progressing" => {
                let since = *self.broke_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(3) {
                    canary_b.errors_per_mille.store(150, Ordering::Relaxed);
                    canary_b.extra_ms.store(60, Ordering::Relaxed);
                    self.event = "canary degraded on purpose: 15 % errors, +60 ms; watch the evidence climb".into();
                    self.act = Act::Broken;
                    self.broke_at = Some(Instant::now());
                }
            }
            Act::Broken if f.state == "rolled_back" => {
                self.act = Act::RolledBack;
                self.rolled_back_at = Some(Instant::now());
                let took = self.broke_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                self.event =
                    format!("weir rolled the canary back by itself, {took:.1}s after it broke; all players on stable");
            }
            _ => {}
        }
    }
}

/// The live view: redrawn in place on a terminal, a plain line every 2 s
/// otherwise.
struct View {
    tty: bool,
    started: Instant,
    /// Lines of the frame drawn last (terminal).
    drawn: usize,
    last_plain: Instant,
}

impl View {
    fn new(started: Instant) -> Self {
        View {
            tty: std::io::stdout().is_terminal(),
            started,
            drawn: 0,
            last_plain: Instant::now() - Duration::from_secs(10),
        }
    }

    fn show(&mut self, f: &Frame, event: &str) {
        if self.tty {
            let lines = render(f, self.started.elapsed(), event);
            let mut out = std::io::stdout().lock();
            if self.drawn > 0 {
                // Back to the top of the previous frame, redraw in place.
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for l in &lines {
                let _ = writeln!(out, "\x1b[2K{l}");
            }
            let _ = out.flush();
            self.drawn = lines.len();
        } else if self.last_plain.elapsed() >= Duration::from_secs(2) {
            self.last_plain = Instant::now();
            println!("{}", plain_line(f, self.started.elapsed()));
        }
    }
}

/// One line of the view for a log: both versions and the evidence test
/// closest to its threshold.
fn plain_line(f: &Frame, elapsed: Duration) -> String {
    let top = f
        .evidence
        .iter()
        .max_by(|a, b| (a.1.max(1.0).ln() / a.2.ln()).total_cmp(&(b.1.max(1.0).ln() / b.2.ln())))
        .map_or(String::new(), |(t, e, th)| format!(" | evidence {t} {}/{}", short(*e), short(*th)));
    format!(
        "t={:>5.1}s state={} step={} weight={}% stable: {:.0} req/s {:.1}% err p99 {:.1}ms | canary: {:.0} req/s {:.1}% err p99 {:.1}ms{top}",
        elapsed.as_secs_f64(),
        f.state,
        f.step.map_or("-".to_owned(), |s| format!("{}/{}", s + 1, f.steps)),
        f.weight,
        f.rate[0],
        f.errors[0],
        f.p99[0],
        f.rate[1],
        f.errors[1],
        f.p99[1],
    )
}

/// The closing words: the journal line and a summary after a rollback.
fn summarize(act: Act, interrupted: bool, state_dir: &Path, sent: u64, started: Instant) {
    if act == Act::RolledBack {
        if let Some(j) = last_rollback(state_dir) {
            println!("The journal line that explains it ({}):", state_dir.join("journal.jsonl").display());
            println!("{j}\n");
        }
        println!(
            "Summary: {} requests from {PLAYERS} players in {:.0}s. The canary climbed 5 % → 10 % → 25 % on `pass` verdicts \
             while no evidence test came near its threshold; once degraded, a test's e-value crossed its threshold and weir \
             rolled it back to 0 % at once (latched until a new revision or POST /routes/game/resume).",
            sent,
            started.elapsed().as_secs_f64()
        );
    } else if interrupted {
        println!("Interrupted after {:.0}s ({} requests).", started.elapsed().as_secs_f64(), sent);
    } else {
        println!("The demo ran out of time before a rollback ({act:?}); this should not happen.");
    }
}
