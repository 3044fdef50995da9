//! A real gRPC server and client (Python `grpcio`, tests/grpc_peer.py),
//! shared by the gRPC tests and the dashboard test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_peer.py");

/// The gRPC server: its address; it stops when the value is dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Server {
    pub fn start() -> Self {
        Self::failing("")
    }

    /// `every:CODE` (e.g. "20:UNAVAILABLE"): every so many calls fail so.
    pub fn failing(every: &str) -> Self {
        let mut args = vec![PEER, "server"];
        if !every.is_empty() {
            args.push(every);
        }
        Self::spawn(&args)
    }

    /// TLS (ALPN h2) with this certificate and key; with `client_ca`, a
    /// client certificate signed by it is required.
    pub fn tls(cert: &str, key: &str, client_ca: Option<&str>) -> Self {
        let mut args = vec![PEER, "server-tls", cert, key];
        args.extend(client_ca);
        Self::spawn(&args)
    }

    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with grpcio is needed: pip install grpcio");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("no port from the gRPC server: {line:?}"));
        Self { addr: ([127, 0, 0, 1], port).into(), child, out }
    }

    /// Say `word` to the server ("SERVING", "NOT_SERVING", "calls"); its
    /// one-line answer.
    pub fn tell(&mut self, word: &str) -> String {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Bet calls the server has answered.
    pub fn calls(&mut self) -> u64 {
        let n = self.tell("calls");
        n.parse().unwrap_or_else(|_| panic!("not a count from the gRPC server: {n:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call through `addr` by the real client; its JSON outcome.
pub async fn call(addr: std::net::SocketAddr, method: &str, body: &str, timeout_s: f64) -> serde_json::Value {
    call_with(addr, method, body, timeout_s, &[]).await
}

/// `call` with metadata (`x-player-id`, segment headers).
pub async fn call_with(
    addr: std::net::SocketAddr,
    method: &str,
    body: &str,
    timeout_s: f64,
    metadata: &[(&str, &str)],
) -> serde_json::Value {
    let md = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("python3")
            .args([PEER, "call", &addr.to_string(), method, body, &timeout_s.to_string()])
            .env("METADATA", md)
            .output(),
    )
    .await
    .expect("the gRPC client hung")
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|_| panic!("client output: {text} {}", String::from_utf8_lossy(&out.stderr)))
}
