//! `weir status`: a running weir's routes, read from its admin API, for
//! people (a table, redrawn in place with `--watch`) and for pipelines
//! (`--wait` blocks until the rollout ends and says how in its exit code;
//! `--json` for scripts).
//!
//! A plain blocking HTTP/1.1 client: one `GET` per poll with
//! `Connection: close`, bounded by a timeout, so the CLI needs no runtime.

pub mod cli;

use serde_json::Value;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// Longest one admin call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest admin answer read (a `/routes` with many routes is well under).
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

/// How a `--wait` ended; the exit code a pipeline sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// Promoted: exit 0.
    Promoted,
    /// Rolled back or killed: exit 1.
    Failed,
    /// The timeout passed first: exit 2.
    TimedOut,
}

impl WaitEnd {
    pub fn exit_code(self) -> u8 {
        match self {
            WaitEnd::Promoted => 0,
            WaitEnd::Failed => 1,
            WaitEnd::TimedOut => 2,
        }
    }
}

/// `GET {admin}{path}` and parse the JSON answer. `admin` is
/// `http://host:port` (a trailing `/` is fine).
pub fn get_json(admin: &str, path: &str) -> Result<(u16, Value), String> {
    let rest = admin.strip_prefix("http://").ok_or("the admin URL must start with http://")?;
    let authority = rest.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, CALL_TIMEOUT).map_err(|e| format!("{authority}: {e}"))?;
    s.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{authority}: {e}"))?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(|e| format!("{authority}: {e}"))?;
    let (status, body) = split_response(&raw).ok_or_else(|| format!("{authority}: not an HTTP answer"))?;
    if status == 404 {
        return Err(format!("{path}: no such route"));
    }
    let v = serde_json::from_slice(&body).map_err(|e| format!("{authority}{path} answered {status}: {e}"))?;
    Ok((status, v))
}

/// Status and body of a whole response read until close (length-delimited
/// or chunked; weir's admin API sends lengths).
fn split_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let (mut out, mut rest) = (Vec::new(), body);
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// The routes to show: all, or the one named.
pub fn fetch(admin: &str, route: Option<&str>) -> Result<Vec<Value>, String> {
    match route {
        Some(name) => get_json(admin, &format!("/routes/{name}")).map(|(_, v)| vec![v]),
        None => match get_json(admin, "/routes")? {
            (_, Value::Array(routes)) => Ok(routes),
            (status, _) => Err(format!("/routes answered {status} without a list")),
        },
    }
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |w| format!("{w}%"))
}

/// One route as a few lines of text: state, step, weight, latest verdict
/// and its reason, and the evidence per test.
pub fn render_route(r: &Value, out: &mut String) {
    render_headline(r, out);
    render_endpoints(r, out);
    if let Some(l) = r["rolled_back"].as_object() {
        let _ = writeln!(
            out,
            "  rolled back: {} at {}",
            l.get("reason").and_then(Value::as_str).unwrap_or("?"),
            l.get("at").and_then(Value::as_str).unwrap_or("?")
        );
    }
    render_verdict(r, out);
    render_evidence(&r["evidence"], out);
}

/// Name, state, step, the canary's revision and weight (effective and
/// configured), and whether it is steered from outside.
fn render_headline(r: &Value, out: &mut String) {
    let name = r["name"].as_str().unwrap_or("?");
    let state = r["state"].as_str().unwrap_or("?");
    let steps = r["progression"]["steps"].as_array().map_or(0, Vec::len);
    let step = match (r["step"].as_u64(), steps) {
        (Some(s), n) if n > 0 => format!("step {}/{n}", s + 1),
        _ => "no steps".into(),
    };
    let canary = r["canary"]["revision"].as_str().unwrap_or("-");
    let _ = writeln!(
        out,
        "{name}: {state}, {step}, canary {canary} at {} (config {}){}",
        pct(&r["weight"]["effective"]),
        pct(&r["weight"]["config"]),
        if r["control"] == "external" { ", steered from outside (control: external)" } else { "" },
    );
}

/// Each version's upstream and endpoint counts, when the answer has them.
fn render_endpoints(r: &Value, out: &mut String) {
    let endpoints = |v: &Value| {
        let e = &v["endpoints"];
        let mut text = format!("{} {} healthy", v["upstream"].as_str().unwrap_or("?"), e["healthy"]);
        for state in ["ejected", "draining"] {
            if e[state].as_u64().is_some_and(|n| n > 0) {
                text.push_str(&format!(", {} {state}", e[state]));
            }
        }
        text
    };
    if !r["stable"]["endpoints"].is_null() {
        let canary = if r["canary"]["endpoints"].is_null() {
            String::new()
        } else {
            format!("; canary {}", endpoints(&r["canary"]))
        };
        let _ = writeln!(out, "  endpoints: stable {}{canary}", endpoints(&r["stable"]));
    }
}

/// The latest verdict and its reason, or why there is none.
fn render_verdict(r: &Value, out: &mut String) {
    match r["verdicts"].as_array().and_then(|v| v.last()) {
        Some(v) => {
            let _ = writeln!(
                out,
                "  verdict: {} at {}: {}",
                v["verdict"].as_str().unwrap_or("?"),
                v["at"].as_str().unwrap_or("?"),
                v["reason"].as_str().unwrap_or("")
            );
        }
        None if r["analysis"].is_null() => {
            let _ = writeln!(out, "  no analysis configured");
        }
        None => {
            let _ = writeln!(out, "  verdict: none yet");
        }
    }
}

/// The requests and errors since the revision, and each test's progress
/// towards its threshold; nothing when there are no tests.
fn render_evidence(ev: &Value, out: &mut String) {
    let Some(tests) = ev["tests"].as_array().filter(|t| !t.is_empty()) else { return };
    let _ = write!(
        out,
        "  evidence (canary {} req, {} err; stable {} req, {} err):",
        ev["since_revision"]["canary"]["requests"],
        ev["since_revision"]["canary"]["errors"],
        ev["since_revision"]["stable"]["requests"],
        ev["since_revision"]["stable"]["errors"]
    );
    for t in tests {
        let progress = t["progress"].as_f64().unwrap_or(0.0);
        let _ = write!(
            out,
            " {} {:.0}%{}",
            t["test"].as_str().unwrap_or("?"),
            progress * 100.0,
            if t["breaking"] == true { " (SLO broken)" } else { "" }
        );
    }
    out.push('\n');
}

pub fn render(routes: &[Value]) -> String {
    let mut out = String::new();
    if routes.is_empty() {
        out.push_str("no routes\n");
    }
    for r in routes {
        render_route(r, &mut out);
    }
    out
}

/// Where a route's rollout stands, for `--wait`: None while it runs.
pub fn ended(verdict: &Value) -> Option<WaitEnd> {
    match verdict["outcome"].as_str() {
        Some("promoted") => Some(WaitEnd::Promoted),
        Some("rolled_back" | "killed") => Some(WaitEnd::Failed),
        _ => None,
    }
}

/// Poll `GET /routes/{route}/verdict` every `every` until the rollout ends
/// or `timeout` passes. Each change of state or verdict is reported through
/// `progress` (one line). An admin API that does not answer is retried
/// until the timeout; a route that does not exist ends at once as an error.
pub fn wait(
    admin: &str,
    route: &str,
    timeout: Duration,
    every: Duration,
    mut progress: impl FnMut(&str),
) -> Result<WaitEnd, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut unreachable = false;
    loop {
        match get_json(admin, &format!("/routes/{route}/verdict")) {
            Ok((_, v)) => {
                unreachable = false;
                let line = format!(
                    "{route}: {}, canary at {}, verdict {}{}",
                    v["state"].as_str().unwrap_or("?"),
                    pct(&v["weight"]),
                    v["verdict"].as_str().unwrap_or("none yet"),
                    v["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
                );
                if line != last {
                    progress(&line);
                    last = line;
                }
                if let Some(end) = ended(&v) {
                    return Ok(end);
                }
            }
            Err(e) if e.contains("no such route") => return Err(e),
            Err(e) => {
                if !unreachable {
                    progress(&format!("admin API not answering ({e}); retrying"));
                }
                unreachable = true;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(WaitEnd::TimedOut);
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

/// `--watch` on a terminal: draw `text` over the previous frame without
/// clearing the screen first (no flicker): cursor home, each line followed
/// by clear-to-end-of-line, then clear below. Plain ANSI, fine over ssh.
pub fn redraw(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str("\x1b[H");
    for line in text.lines() {
        out.push_str(line);
        out.push_str("\x1b[K\n");
    }
    out.push_str("\x1b[J");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn responses_are_split_with_lengths_or_chunks() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(split_response(raw), Some((200, b"{}".to_vec())));
        let raw = b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n4\r\na\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(split_response(raw), Some((503, b"{\"a\":1}".to_vec())));
        assert_eq!(split_response(b"garbage"), None);
    }

    #[test]
    fn a_route_renders_state_step_weight_verdict_and_evidence() {
        let r = json!({
            "name": "checkout", "state": "progressing", "step": 1,
            "weight": {"config": 5.0, "effective": 10.0},
            "progression": {"steps": [5.0, 10.0, 50.0]},
            "canary": {"revision": "1.5.0", "upstream": "v2", "endpoints": {"healthy": 2, "ejected": 1, "draining": 0}},
            "stable": {"upstream": "v1", "endpoints": {"healthy": 6, "ejected": 0, "draining": 2}},
            "analysis": {},
            "verdicts": [{"verdict": "pass", "at": "2026-12-01T10:00:00Z", "reason": "no test fired"}],
            "evidence": {"tests": [{"test": "E", "progress": 0.25, "breaking": false}],
                         "since_revision": {"canary": {"requests": 400, "errors": 1},
                                            "stable": {"requests": 4000, "errors": 9}}},
        });
        let text = render(&[r]);
        assert!(text.starts_with("checkout: progressing, step 2/3, canary 1.5.0 at 10% (config 5%)"), "{text}");
        assert!(text.contains("verdict: pass at 2026-12-01T10:00:00Z: no test fired"), "{text}");
        assert!(text.contains("canary 400 req, 1 err") && text.contains(" E 25%"), "{text}");
        assert!(text.contains("endpoints: stable v1 6 healthy, 2 draining; canary v2 2 healthy, 1 ejected"), "{text}");
    }

    #[test]
    fn outcomes_map_to_exit_codes() {
        assert_eq!(ended(&json!({"outcome": "promoted"})), Some(WaitEnd::Promoted));
        assert_eq!(ended(&json!({"outcome": "rolled_back"})), Some(WaitEnd::Failed));
        assert_eq!(ended(&json!({"outcome": "killed"})), Some(WaitEnd::Failed));
        assert_eq!(ended(&json!({"outcome": "running"})), None);
        let codes: Vec<u8> = [WaitEnd::Promoted, WaitEnd::Failed, WaitEnd::TimedOut].map(WaitEnd::exit_code).into();
        assert_eq!(codes, [0, 1, 2]);
    }

    #[test]
    fn a_redraw_overwrites_in_place() {
        assert_eq!(redraw("a\nb\n"), "\x1b[Ha\x1b[K\nb\x1b[K\n\x1b[J");
    }
}
