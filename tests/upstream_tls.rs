//! HTTP/1.1 over TLS to upstreams (`protocol: http1` with `tls`), against a
//! real TLS server (tests/tls_upstream.py: Python's ssl, i.e. OpenSSL):
//! verified by CA and name, SNI sent, bodies both ways, pooled connections
//! reused, a connection the server closes while idle not reused, a wrong CA
//! or a missing client certificate a connect failure (502, counted),
//! mutual TLS with a client certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Weir, client};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_upstream.py");

struct TlsUpstream {
    addr: std::net::SocketAddr,
    child: Child,
    /// What the server prints after its port ("closed N").
    lines: std::sync::mpsc::Receiver<String>,
}

impl TlsUpstream {
    fn start(dir: &Path, client_ca: Option<&str>) -> Self {
        let mut args =
            vec![SERVER.to_owned(), format!("{}/leaf.crt", dir.display()), format!("{}/leaf.key", dir.display())];
        args.extend(client_ca.map(|c| format!("{}/{c}", dir.display())));
        let mut child =
            Command::new("python3").args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("no port from the TLS upstream: {line:?}"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Self { addr: ([127, 0, 0, 1], port).into(), child, lines }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ca.crt/key, a server leaf for localhost (leaf.crt/key), another CA
/// (other.crt), and a client certificate signed by ca (client.crt/key).
fn make_certs(dir: &Path) {
    let sh = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    sh(&format!("openssl req -x509 {ec} -keyout ca.key -out ca.crt -days 1 -subj /CN=upstream-ca 2>/dev/null"));
    sh(&format!("openssl req -x509 {ec} -keyout other.key -out other.crt -days 1 -subj /CN=other-ca 2>/dev/null"));
    for (stem, cn, ext) in [
        ("leaf", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ("client", "weir-gateway", "extendedKeyUsage=clientAuth"),
    ] {
        sh(&format!(
            "openssl req {ec} -keyout {stem}.key -out {stem}.csr -subj /CN={cn} 2>/dev/null && \
             printf '{ext}' > {stem}.ext && openssl x509 -req -in {stem}.csr -CA ca.crt -CAkey ca.key \
             -CAcreateserial -days 1 -extfile {stem}.ext -out {stem}.crt 2>/dev/null"
        ));
    }
}

fn config(up: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"listen: [{{address: "127.0.0.1:0"}}]
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  secure: {{endpoints: ["{up}"], connect_timeout: 2s, request_timeout: 5s, tls: {{{tls}}}}}
routes:
  - name: app
    stable: {{upstream: secure}}
"#
    )
}

async fn send(w: &Weir, method: Method, path: &str, body: Bytes) -> (u16, Value) {
    let req = Request::builder().method(method).uri(w.url(path)).body(Full::new(body)).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), client().request(req)).await.unwrap().unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_is_verified_pooled_and_carries_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path());
    let d = tmp.path().display().to_string();
    let up = TlsUpstream::start(tmp.path(), None);
    let w = Weir::start(&config(up.addr, &format!("ca_file: \"{d}/ca.crt\", server_name: localhost"))).await;

    let (s, a) = send(&w, Method::GET, "/hello", Bytes::new()).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!((a["method"].as_str(), a["path"].as_str()), (Some("GET"), Some("/hello")));
    assert_eq!(a["sni"], "localhost", "server_name is sent as SNI: {a}");
    assert!(a["version"].as_str().unwrap().starts_with("TLSv1."), "{a}");
    // A request body crosses whole (the streaming upload path).
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (s, b) = send(&w, Method::POST, "/upload", Bytes::from(big.clone())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["length"], 200_000);
    assert_eq!(b["sha256"].as_str().unwrap(), hex_sha256(&big));
    // Both on one pooled connection, and a third too.
    let (_, c) = send(&w, Method::GET, "/again", Bytes::new()).await;
    assert_eq!((a["conn"].clone(), b["conn"].clone(), c["conn"].clone()), (1.into(), 1.into(), 1.into()));

    // The server closes the idle connection (close_notify, FIN) after
    // answering. Once it has, a POST (never replayed by weir once sent)
    // must go on a new connection: the pooled one is seen closed.
    let (s, bye) = send(&w, Method::GET, "/bye", Bytes::new()).await;
    assert_eq!(s, 200);
    let closed_on = bye["conn"].as_u64().unwrap();
    let said = up.lines.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(said, format!("closed {closed_on}"));
    let (s, next) = send(&w, Method::POST, "/after", Bytes::from_static(b"after the close")).await;
    assert_eq!(s, 200, "a request after the server's close must not fail: {next}");
    assert_eq!(next["conn"].as_u64(), Some(closed_on + 1), "a new connection after the close: {next}");
    // A session ticket from the first connection is offered again.
    assert_eq!(next["resumed"], true, "TLS session resumption on a new connection: {next}");
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_is_a_connect_failure_and_mtls_works() {
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path());
    let d = tmp.path().display().to_string();
    // The server's certificate is not signed by the CA weir trusts.
    let up = TlsUpstream::start(tmp.path(), None);
    let w = Weir::start(&config(up.addr, &format!("ca_file: \"{d}/other.crt\", server_name: localhost"))).await;
    let (s, _) = send(&w, Method::GET, "/", Bytes::new()).await;
    assert_eq!(s, 502, "an unverified upstream is a connect failure");
    let text = support::metrics(w.admin).await;
    assert!(
        support::metric(&text, "weir_upstream_errors_total{route=\"app\",version=\"stable\",kind=\"connect\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        text.lines().filter(|l| l.contains("upstream_errors")).collect::<Vec<_>>().join("\n")
    );
    // A name the certificate does not carry is refused too.
    let w = Weir::start(&config(up.addr, &format!("ca_file: \"{d}/ca.crt\", server_name: game.internal"))).await;
    assert_eq!(send(&w, Method::GET, "/", Bytes::new()).await.0, 502);

    // Mutual TLS: the server requires a client certificate signed by ca.
    let mtls = TlsUpstream::start(tmp.path(), Some("ca.crt"));
    let without = Weir::start(&config(mtls.addr, &format!("ca_file: \"{d}/ca.crt\", server_name: localhost"))).await;
    assert_eq!(send(&without, Method::GET, "/", Bytes::new()).await.0, 502, "no client certificate, no answer");
    let with = Weir::start(&config(
        mtls.addr,
        &format!(
            "ca_file: \"{d}/ca.crt\", server_name: localhost, client_cert_file: \"{d}/client.crt\", client_key_file: \"{d}/client.key\""
        ),
    ))
    .await;
    let (s, v) = send(&with, Method::POST, "/", Bytes::from_static(b"with a certificate")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["client_cn"], "weir-gateway");
    assert_eq!(v["length"], 18);
}

/// `protocol: auto`: ALPN decides per connection. Against the HTTP/1.1-only
/// TLS server weir speaks HTTP/1.1; against a gRPC server over TLS (which
/// agrees to h2) it speaks HTTP/2, and gRPC calls go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_auto_lets_alpn_choose_http1_or_h2() {
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path());
    let d = tmp.path().display().to_string();
    let tls = format!("ca_file: \"{d}/ca.crt\", server_name: localhost");
    let h1 = TlsUpstream::start(tmp.path(), None);
    let w = Weir::start(&config(h1.addr, &tls).replace("tls: {", "protocol: auto, tls: {")).await;
    let (s, v) = send(&w, Method::POST, "/auto", Bytes::from_static(b"over http/1.1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["method"].as_str(), v["length"].as_u64()), (Some("POST"), Some(13)));
    let (_, again) = send(&w, Method::GET, "/auto", Bytes::new()).await;
    assert_eq!(again["conn"], v["conn"], "the HTTP/1.1 connection is pooled and reused");

    let grpc = support::grpc::Server::tls(&format!("{d}/leaf.crt"), &format!("{d}/leaf.key"), None);
    let w = Weir::start(&config(grpc.addr, &tls).replace("tls: {", "protocol: auto, tls: {")).await;
    for body in ["one", "two"] {
        let r = support::grpc::call(w.addr, "Bet", body, 10.0).await;
        assert_eq!((r["code"].as_str(), &r["replies"]), (Some("OK"), &serde_json::json!([body])), "{r}");
    }
    let c = support::grpc::call(w.addr, "Chat", "a,b", 10.0).await;
    assert_eq!(c["replies"], serde_json::json!(["echo:a", "echo:b"]), "{c}");
}

/// Active health over TLS: the check (`GET /healthz`) goes through the
/// upstream's own TLS (verified, SNI), in HTTP/1.1 with `protocol: http1`
/// and with `auto` (the server offers no ALPN, so HTTP/1.1). A pod whose
/// check answers 503 is taken out (every request answered by the other)
/// and put back once it answers 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_go_over_tls() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path());
    let d = tmp.path().display().to_string();
    for protocol in ["http1", "auto"] {
        let (well, mut sick) = (TlsUpstream::start(tmp.path(), None), TlsUpstream::start(tmp.path(), None));
        let w = Weir::start(&format!(
            "listen: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\naccess_log: false\n\
             upstreams:\n  secure: {{endpoints: [\"{}\", \"{}\"], protocol: {protocol}, retry: {{attempts: 0}},\n\
             \x20   tls: {{ca_file: \"{d}/ca.crt\", server_name: localhost}},\n\
             \x20   health: {{passive: {{consecutive_failures: 0}},\n\
             \x20     active: {{path: /healthz, interval: 300ms, timeout: 300ms, healthy: 2, unhealthy: 2}}}}}}\n\
             routes:\n  - name: app\n    stable: {{upstream: secure}}\n",
            well.addr, sick.addr
        ))
        .await;
        let limit = Duration::from_secs(15);
        let (a, b) = (well.addr.to_string(), sick.addr.to_string());
        for e in [&a, &b] {
            let r = support::wait_endpoint(w.admin, e, ("healthy", "passing"), limit).await;
            assert!(r.is_ok(), "{protocol}: the check never passed over TLS on {e}: {r:?}");
        }
        writeln!(sick.child.stdin.as_mut().unwrap(), "sick").unwrap();
        let r = support::wait_endpoint(w.admin, &b, ("ejected", "failing"), limit).await;
        assert!(r.is_ok(), "{protocol}: a 503 check never took the pod out: {r:?}");
        for i in 0..10 {
            let (s, v) = send(&w, Method::GET, &format!("/r{i}"), Bytes::new()).await;
            assert_eq!((s, v["port"].as_u64()), (200, Some(u64::from(well.addr.port()))), "{protocol}: {v}");
        }
        writeln!(sick.child.stdin.as_mut().unwrap(), "well").unwrap();
        let r = support::wait_endpoint(w.admin, &b, ("healthy", "passing"), limit).await;
        assert!(r.is_ok(), "{protocol}: a passing check never brought it back: {r:?}");
    }
}
