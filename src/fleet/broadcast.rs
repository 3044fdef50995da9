//! `weir fleet ACTION ROUTE --replicas NAME:PORT`: send one admin steering
//! call to every replica at once, for operators who do not want to wait for
//! the fleet to follow through Prometheus. `NAME` is typically a headless
//! Service, whose DNS answer lists every ready pod.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

pub const ACTIONS: [&str; 6] = ["rollback", "resume", "pause", "promote", "kill", "unkill"];

/// What one replica answered.
#[derive(Debug)]
pub struct Answer {
    pub replica: SocketAddr,
    pub result: Result<(u16, String), String>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        matches!(self.result, Ok((200..=299, _)))
    }
}

/// Every address `targets` resolve to (each `host:port`; a name may have
/// many addresses), deduplicated, in a stable order.
pub async fn resolve(targets: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for t in targets {
        let found = tokio::net::lookup_host(t.as_str()).await.map_err(|e| format!("{t}: {e}"))?;
        out.extend(found);
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err("no replica address found".into());
    }
    Ok(out)
}

async fn post(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> Result<(u16, String), String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::post(path).header(http::header::HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), 1 << 20).collect().await.map_err(|e| e.to_string())?.to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Send `action` for `route` to every replica, all at once.
pub async fn broadcast(replicas: &[SocketAddr], route: &str, action: &str, token: Option<&str>) -> Vec<Answer> {
    let path = format!("/routes/{route}/{action}");
    let calls = replicas.iter().map(|r| {
        let path = path.clone();
        let token = token.map(str::to_owned);
        let r = *r;
        tokio::spawn(async move {
            Answer { replica: r, result: post(r, &path, token.as_deref(), Duration::from_secs(5)).await }
        })
    });
    let mut out = Vec::with_capacity(replicas.len());
    for (c, r) in calls.zip(replicas) {
        out.push(c.await.unwrap_or_else(|e| Answer { replica: *r, result: Err(e.to_string()) }));
    }
    out
}

/// `weir fleet ACTION ROUTE`: the call to every replica, one line per
/// answer; exit 0 when every replica accepted it.
pub fn command(action: &str, route: &str, replicas: &[String], token_file: Option<&std::path::Path>) -> ExitCode {
    use crate::files::{MAX_SECRET, read_capped};
    let token = match token_file.map(|f| read_capped(f, MAX_SECRET)).transpose() {
        Ok(t) => t.map(|t| String::from_utf8_lossy(&t).trim().to_owned()).filter(|t| !t.is_empty()),
        Err(e) => {
            eprintln!("weir fleet: token file: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answers =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(async {
                let addrs = resolve(replicas).await?;
                Ok::<_, String>(broadcast(&addrs, route, action, token.as_deref()).await)
            })
        });
    let answers = match answers {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weir fleet: {e}");
            return ExitCode::FAILURE;
        }
    };
    for a in &answers {
        match &a.result {
            Ok((status, body)) => println!("{}\t{status}\t{body}", a.replica),
            Err(e) => println!("{}\terror\t{e}", a.replica),
        }
    }
    let ok = answers.iter().filter(|a| a.ok()).count();
    eprintln!("{action} {route}: {ok} of {} replicas accepted", answers.len());
    if ok == answers.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
