//! The bodies of `weir status` (one look, `--watch`, `--wait`, `--json`)
//! and `weir healthcheck`: the command-line side of the admin API.

use super::{WaitEnd, fetch, redraw, render, wait};
use std::io::{IsTerminal, Read, Write};
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

/// What `weir status` was asked for.
pub struct Mode {
    pub watch: bool,
    pub wait: bool,
    pub json: bool,
}

/// `weir status`: exit 0 shown (or promoted with `--wait`), 1 failed
/// (rolled back), 2 unusable (or timed out with `--wait`).
pub fn status(admin: &str, route: Option<&str>, mode: Mode, timeout: Duration, every: Duration) -> ExitCode {
    let every = every.max(Duration::from_millis(100));
    if mode.wait {
        let Some(route) = route else { return ExitCode::from(2) };
        return wait_for(admin, route, timeout, every);
    }
    if mode.json {
        return json(admin, route);
    }
    if !mode.watch {
        return match fetch(admin, route) {
            Ok(routes) => {
                print!("{}", render(&routes));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir status: {e}");
                ExitCode::FAILURE
            }
        };
    }
    watch(admin, route, every)
}

/// `--wait`: follow one route until its rollout ends.
fn wait_for(admin: &str, route: &str, timeout: Duration, every: Duration) -> ExitCode {
    match wait(admin, route, timeout, every, |line| println!("{line}")) {
        Ok(end) => {
            let what = match end {
                WaitEnd::Promoted => "promoted",
                WaitEnd::Failed => "rolled back or killed",
                WaitEnd::TimedOut => "still running at the timeout",
            };
            println!("{route}: {what}");
            ExitCode::from(end.exit_code())
        }
        Err(e) => {
            eprintln!("weir status: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--json`: the admin API's answer, one route or all.
fn json(admin: &str, route: Option<&str>) -> ExitCode {
    match fetch(admin, route) {
        Ok(routes) => {
            let v = match route {
                Some(_) => routes.into_iter().next().unwrap_or_default(),
                None => serde_json::Value::Array(routes),
            };
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir status: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--watch`: redrawn in place on a terminal; into a pipe, a new table
/// only when something changed. Ends when the reader goes away.
fn watch(admin: &str, route: Option<&str>, every: Duration) -> ExitCode {
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let text = match fetch(admin, route) {
            Ok(routes) => render(&routes),
            Err(e) => format!("weir status: {e}\n"),
        };
        let mut out = std::io::stdout().lock();
        let written = if tty {
            let stamp = crate::clock::rfc3339_now();
            write!(out, "{}", redraw(&format!("weir status — {admin} — {stamp}\n\n{text}")))
        } else if text != last {
            write!(out, "--- {}\n{text}", crate::clock::rfc3339_now())
        } else {
            Ok(())
        };
        if written.and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS; // the reader went away (a closed pipe)
        }
        last = text;
        std::thread::sleep(every);
    }
}

/// `weir healthcheck URL`: one HTTP/1.1 GET with std only (for container
/// health probes in images without curl); Ok when the status is 200.
pub fn healthcheck(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolving the address: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let timeout = Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting: {e}"))?;
    let io = |e: std::io::Error| e.to_string();
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").map_err(io)?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(io)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("none");
    if status != "200" {
        return Err(format!("{url} answered {status}"));
    }
    Ok(())
}
