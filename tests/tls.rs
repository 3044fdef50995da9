//! TLS termination, black-box: a CA and certificates made with the openssl
//! CLI in each test, real clients (curl, openssl s_client) against weir.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Upstream, Weir, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sh(cmd: &str, dir: &Path) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().expect("sh")
}

fn ok(cmd: &str, dir: &Path) -> String {
    let out = sh(cmd, dir);
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway CA in `dir` (ca.crt, ca.key), made with the openssl CLI.
fn make_ca(dir: &Path) {
    ok(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
         -days 2 -subj /CN=weir-test-ca 2>/dev/null",
        dir,
    );
}

/// A leaf for `names` signed by the CA: `<stem>.crt` and `<stem>.key`.
fn make_leaf(dir: &Path, stem: &str, names: &[&str]) {
    let san = names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
    std::fs::write(dir.join(format!("{stem}.ext")), format!("subjectAltName={san}\n")).unwrap();
    ok(
        &format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {stem}.key -out {stem}.csr \
             -subj /CN={cn} 2>/dev/null && \
             openssl x509 -req -in {stem}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
             -extfile {stem}.ext -out {stem}.crt 2>/dev/null",
            cn = names[0]
        ),
        dir,
    );
}

/// SHA-256 fingerprint of the certificate weir presents for `sni` (None: no SNI).
fn served_fingerprint(port: u16, sni: Option<&str>, dir: &Path) -> String {
    let name = sni.map_or("-noservername".to_owned(), |n| format!("-servername {n}"));
    ok(
        &format!(
            "openssl s_client -connect 127.0.0.1:{port} {name} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ),
        dir,
    )
    .trim()
    .to_owned()
}

fn file_fingerprint(cert: &str, dir: &Path) -> String {
    ok(&format!("openssl x509 -in {cert} -noout -fingerprint -sha256"), dir).trim().to_owned()
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    upstream: Upstream,
    weir: Weir,
    port: u16,
}

/// weir with one TLS listener serving game.example (default) and bet.example.
async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    make_ca(&dir);
    make_leaf(&dir, "game", &["game.example", "*.game.example"]);
    make_leaf(&dir, "bet", &["bet.example"]);
    let upstream = Upstream::start("stable").await;
    let yaml = format!(
        r#"listen:
  - address: "127.0.0.1:0"
    tls:
      certs:
        - {{cert: "{d}/game.crt", key: "{d}/game.key"}}
        - {{cert: "{d}/bet.crt", key: "{d}/bet.key"}}
admin: {{address: "127.0.0.1:0"}}
access_log: false
upstreams:
  v1: {{endpoints: ["{u}"]}}
routes:
  - name: app
    stable: {{upstream: v1}}
"#,
        d = dir.display(),
        u = upstream.addr
    );
    let weir = Weir::start(&yaml).await;
    let port = weir.addr.port();
    Setup { _dir: tmp, dir, upstream, weir, port }
}

fn curl(s: &Setup, host: &str, extra: &str) -> String {
    ok(
        &format!(
            "curl -sS --max-time 10 --cacert ca.crt --resolve {host}:{p}:127.0.0.1 {extra} \
             -o /dev/null -w '%{{http_version}} %{{http_code}}' https://{host}:{p}/hello",
            p = s.port
        ),
        &s.dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_negotiates_h2_or_http11_and_sni_picks_the_certificate() {
    let s = setup().await;
    let dir = s.dir.clone();
    let out = tokio::task::spawn_blocking({
        let (port, dir) = (s.port, dir.clone());
        move || {
            let q = |extra: &str, host: &str| {
                ok(
                    &format!(
                        "curl -sS --max-time 10 --cacert ca.crt --resolve {host}:{port}:127.0.0.1 {extra} \
                         -o /dev/null -w '%{{http_version}} %{{http_code}}' https://{host}:{port}/hello"
                    ),
                    &dir,
                )
            };
            (
                q("--http2", "game.example"),
                q("--http1.1", "game.example"),
                q("", "bet.example"),
                q("", "x.game.example"),
            )
        }
    })
    .await
    .unwrap();
    // curl verifies the chain and the name against the CA: each success also
    // proves SNI chose the right certificate.
    assert_eq!(out.0, "2 200");
    assert_eq!(out.1, "1.1 200");
    assert_eq!(out.2, "2 200");
    assert_eq!(out.3, "2 200");
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|r| r.headers["x-forwarded-proto"] == "https"));
    assert_eq!(seen[0].headers["x-forwarded-host"], format!("game.example:{}", s.port));

    // openssl s_client: by SNI, and the first certificate without one.
    let game = file_fingerprint("game.crt", &dir);
    let bet = file_fingerprint("bet.crt", &dir);
    assert_eq!(served_fingerprint(s.port, Some("bet.example"), &dir), bet);
    assert_eq!(served_fingerprint(s.port, Some("game.example"), &dir), game);
    assert_eq!(served_fingerprint(s.port, Some("unknown.example"), &dir), game);
    assert_eq!(served_fingerprint(s.port, None, &dir), game);
    let alpn =
        ok(&format!("openssl s_client -connect 127.0.0.1:{} -alpn h2,http/1.1 </dev/null 2>/dev/null", s.port), &dir);
    assert!(alpn.contains("ALPN protocol: h2"), "{alpn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocol_versions_and_garbage_are_refused_and_weir_keeps_serving() {
    let s = setup().await;
    for flag in ["-tls1", "-tls1_1"] {
        let out = sh(
            &format!(
                "openssl s_client -connect 127.0.0.1:{} {flag} -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1",
                s.port
            ),
            &s.dir,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{flag} was accepted:\n{text}");
        assert!(!text.contains("BEGIN CERTIFICATE"), "{flag} got a certificate:\n{text}");
    }
    // Plain HTTP, random bytes, and a ClientHello cut short, on the TLS port.
    for junk in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect(),
        vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
    ] {
        let mut c = tokio::net::TcpStream::connect(s.weir.addr).await.unwrap();
        c.write_all(&junk).await.unwrap();
        let _ = c.shutdown().await;
        let mut buf = Vec::new();
        // Closed by weir (at most a TLS alert comes back), never an HTTP answer.
        let _ = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut buf)).await.expect("not closed");
        assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1"), "{buf:?}");
    }
    let s2 = tokio::task::spawn_blocking(move || {
        let r = curl(&s, "game.example", "");
        (s, r)
    })
    .await
    .unwrap();
    assert_eq!(s2.1, "2 200");
    assert_eq!(s2.0.upstream.count(), 1, "junk must never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_certificate_keeps_the_old_one_and_a_valid_replacement_is_picked_up() {
    let s = setup().await;
    let dir = s.dir.clone();
    let old = file_fingerprint("game.crt", &dir);
    assert_eq!(served_fingerprint(s.port, Some("game.example"), &dir), old);

    // A corrupt certificate: the reload is refused, the old one keeps serving.
    std::fs::write(dir.join("game.crt"), "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    let err = s.weir.handle.reloader.reload("test", false).expect_err("corrupt PEM accepted");
    let problems = err.problems().join("\n");
    assert!(problems.contains("listen[0].tls.certs[0].cert"), "{problems}");
    assert_eq!(served_fingerprint(s.port, Some("game.example"), &dir), old);

    // A key that does not match its certificate is refused too.
    make_leaf(&dir, "other", &["game.example"]);
    std::fs::copy(dir.join("other.crt"), dir.join("game.crt")).unwrap();
    let err = s.weir.handle.reloader.reload("test", false).expect_err("mismatched key accepted");
    assert!(err.problems().join("\n").contains("listen[0].tls.certs[0].key"), "{:?}", err.problems());
    assert_eq!(served_fingerprint(s.port, Some("game.example"), &dir), old);

    // A valid renewal (new key and certificate, YAML untouched) is picked
    // up by the directory watch, no signal needed.
    std::fs::copy(dir.join("other.key"), dir.join("game.key")).unwrap();
    let new = file_fingerprint("game.crt", &dir);
    assert_ne!(new, old);
    let (port, d2, n2) = (s.port, dir.clone(), new.clone());
    assert!(
        eventually(Duration::from_secs(15), move || served_fingerprint(port, Some("game.example"), &d2) == n2).await,
        "renewed certificate not served"
    );
    // The YAML did not change, yet this was a reload of its own.
    assert!(s.weir.handle.live.load().generation >= 2);
    let s = tokio::task::spawn_blocking(move || {
        let r = curl(&s, "game.example", "");
        (s, r)
    })
    .await
    .unwrap();
    assert_eq!(s.1, "2 200");
}

#[test]
fn check_reports_unreadable_and_invalid_certificates_with_their_field_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("bad.crt"), "garbage").unwrap();
    std::fs::write(dir.join("bad.key"), "garbage").unwrap();
    let cfg = dir.join("weir.yaml");
    std::fs::write(
        &cfg,
        r#"listen:
  - address: "127.0.0.1:8443"
    tls:
      certs:
        - {cert: missing.crt, key: missing.key}
        - {cert: bad.crt, key: bad.key}
  - address: "127.0.0.1:8444"
    tls: {certs: []}
upstreams:
  v1: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: app
    stable: {upstream: v1}
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in [
        "listen[0].tls.certs[0].cert: cannot read",
        "listen[0].tls.certs[0].key: cannot read",
        "listen[0].tls.certs[1].cert:",
        "listen[1].tls.certs: list at least one",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn check_reports_client_certificate_settings_with_their_field_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_ca(dir);
    make_leaf(dir, "game", &["game.example"]);
    std::fs::write(dir.join("garbage.pem"), "garbage").unwrap();
    let cfg = dir.join("weir.yaml");
    std::fs::write(
        &cfg,
        r#"listen:
  - address: "127.0.0.1:8443"
    tls: {certs: [{cert: game.crt, key: game.key}], client_ca: missing.pem}
  - address: "127.0.0.1:8444"
    tls: {certs: [{cert: game.crt, key: game.key}], client_ca: garbage.pem, client_auth: optional}
  - address: "127.0.0.1:8445"
    tls: {certs: [{cert: game.crt, key: game.key}], client_auth: required}
  - address: "127.0.0.1:8446"
    tls: {certs: [{cert: game.crt, key: game.key}], client_ca: ca.crt, client_auth: sometimes}
upstreams:
  v1: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v1}
    segments:
      - {name: staff, match: {client_cert: {o: Staff}}, weight: 100}
"#,
    )
    .unwrap();
    let check = |cfg: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(["check", "-c"]).arg(cfg).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        "listen[0].tls.client_ca: cannot read",
        "listen[1].tls.client_ca:",
        "listen[2].tls.client_auth: needs `client_ca`",
        "listen[3].tls.client_auth: `sometimes`: use `required` or `optional`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // A field a certificate match does not know, with its line and column.
    let typo = dir.join("typo.yaml");
    std::fs::write(
        &typo,
        r#"listen:
  - address: "127.0.0.1:8443"
upstreams:
  v1: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: app
    stable: {upstream: v1}
    segments:
      - {name: staff, match: {client_cert: {o: Staff, shoe_size: 9}}, weight: 100}
"#,
    )
    .unwrap();
    let (code, text) = check(&typo);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("line 9") && text.contains("unknown field `shoe_size`, expected one of cn, o, ou, san"),
        "{text}"
    );
    // The same file with the mistakes taken out is accepted.
    std::fs::write(
        &cfg,
        r#"listen:
  - address: "127.0.0.1:8443"
    tls: {certs: [{cert: game.crt, key: game.key}], client_ca: ca.crt, client_auth: optional}
upstreams:
  v1: {endpoints: ["127.0.0.1:9"]}
routes:
  - name: app
    stable: {upstream: v1}
    canary: {upstream: v1}
    segments:
      - {name: staff, match: {client_cert: {o: Staff}}, weight: 100}
      - {name: certified, match: {client_cert: {}}, weight: 0}
"#,
    )
    .unwrap();
    let (code, text) = check(&cfg);
    assert_eq!(code, Some(0), "{text}");
}

/// A client certificate `<stem>.crt`/`.key` with `subj` (openssl form,
/// `/C=SE/O=Staff/CN=alice`) and DNS SANs, signed by the CA in `dir`.
fn make_client(dir: &Path, stem: &str, subj: &str, sans: &[&str]) {
    let san = sans.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
    std::fs::write(dir.join(format!("{stem}.ext")), format!("subjectAltName={san}\nextendedKeyUsage=clientAuth\n"))
        .unwrap();
    ok(
        &format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {stem}.key -out {stem}.csr \
             -subj '{subj}' 2>/dev/null && \
             openssl x509 -req -in {stem}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
             -extfile {stem}.ext -out {stem}.crt 2>/dev/null"
        ),
        dir,
    );
}

/// A listener asking for client certificates (`client_auth` = `required`
/// or `optional`), a route whose segments send staff (by organization) and
/// one ops service (by SAN) to canary; real curl clients with a staff
/// certificate, a player's, one from a CA weir does not trust, and none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_required_optional_and_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    make_ca(&dir);
    make_leaf(&dir, "game", &["game.example"]);
    let clients = dir.join("clients");
    let rogue = dir.join("rogue");
    for d in [&clients, &rogue] {
        std::fs::create_dir(d).unwrap();
        make_ca(d);
    }
    make_client(&clients, "alice", "/C=SE/O=Staff/CN=alice", &["alice.staff.internal"]);
    make_client(&clients, "bob", "/C=MT/O=Players/CN=bob", &["bob.players.internal"]);
    make_client(&clients, "carol", "/O=Ops/CN=carol", &["carol.ops.internal"]);
    make_client(&rogue, "mallory", "/C=SE/O=Staff/CN=mallory", &["mallory.staff.internal"]);
    let (stable, canary) = (Upstream::start("stable").await, Upstream::start("canary").await);

    for mode in ["required", "optional"] {
        let cfg = dir.join(format!("weir-{mode}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                r#"listen:
  - address: "127.0.0.1:0"
    tls:
      certs: [{{cert: "{d}/game.crt", key: "{d}/game.key"}}]
      client_ca: "{d}/clients/ca.crt"
      client_auth: {mode}
admin: {{address: "127.0.0.1:0"}}
state_dir: "{d}/state-{mode}"
upstreams:
  v1: {{endpoints: ["{s}"]}}
  v2: {{endpoints: ["{c}"]}}
routes:
  - name: app
    stable: {{upstream: v1}}
    canary: {{upstream: v2}}
    weight: 0
    segments:
      - {{name: staff, match: {{client_cert: {{o: Staff}}}}, weight: 100}}
      - {{name: ops, match: {{client_cert: {{san: [carol.ops.internal, dave.ops.internal]}}}}, weight: 100}}
"#,
                d = dir.display(),
                s = stable.addr,
                c = canary.addr
            ),
        )
        .unwrap();
        let (mut child, addr, log, _err) = support::spawn_weir(&cfg);
        let fetch = |cert: Option<(&str, &str)>| {
            let with = cert.map_or(String::new(), |(d, stem)| format!("--cert {d}/{stem}.crt --key {d}/{stem}.key"));
            sh(
                &format!(
                    "curl -sS --max-time 10 --cacert ca.crt --resolve game.example:{p}:127.0.0.1 {with} \
                     -H 'x-case: {mode}' https://game.example:{p}/who",
                    p = addr.port()
                ),
                &dir,
            )
        };
        stable.clear();
        canary.clear();
        let answered = |out: &std::process::Output| {
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        // Staff by organization and ops by SAN go to canary; a player to stable.
        assert_eq!(answered(&fetch(Some(("clients", "alice")))).as_deref(), Some("canary"), "{mode}: alice");
        assert_eq!(answered(&fetch(Some(("clients", "carol")))).as_deref(), Some("canary"), "{mode}: carol");
        assert_eq!(answered(&fetch(Some(("clients", "bob")))).as_deref(), Some("stable"), "{mode}: bob");
        // A certificate from a CA the listener does not trust is refused in
        // the handshake in both modes, though it names the Staff organization.
        let mallory = fetch(Some(("rogue", "mallory")));
        assert!(!mallory.status.success(), "{mode}: untrusted certificate accepted");
        // No certificate: refused when required, served as anyone when optional.
        let anonymous = fetch(None);
        match mode {
            "required" => assert!(!anonymous.status.success(), "no certificate accepted when required"),
            _ => assert_eq!(answered(&anonymous).as_deref(), Some("stable"), "optional, no certificate"),
        }
        let served = if mode == "required" { 3 } else { 4 };
        assert_eq!(stable.count() + canary.count(), served, "{mode}: refused clients must reach no upstream");
        assert_eq!(canary.count(), 2, "{mode}");

        // The access log names each verified subject, most specific first.
        let mut subjects = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while subjects.len() < served && std::time::Instant::now() < deadline {
            if let Ok(l) = log.recv_timeout(Duration::from_millis(100)) {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                if v["target"] == "access" {
                    subjects.push(v["client_subject"].clone());
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut want = vec![
            serde_json::json!("CN=alice,O=Staff,C=SE"),
            serde_json::json!("CN=carol,O=Ops"),
            serde_json::json!("CN=bob,O=Players,C=MT"),
        ];
        if mode == "optional" {
            want.push(serde_json::Value::Null);
        }
        assert_eq!(subjects, want, "{mode}");
    }
}
