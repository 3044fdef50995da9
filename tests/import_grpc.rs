//! Importing gRPC and TLS backends, proven with real gRPC calls: a
//! GRPCRoute shaped like the Gateway API conformance suite's
//! `GRPCRouteExactMethodMatching`, an ingress-nginx Ingress with
//! `backend-protocol: GRPC`, and a BackendTLSPolicy whose CA weir must use
//! to reach a TLS gRPC server (Python grpcio, tests/grpc_peer.py). The
//! imported config runs in weir with the Service names swapped for the
//! servers' loopback addresses; what cannot be carried is listed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use support::Weir;
use support::grpc::{Server, call};

fn objects(docs: &[Value]) -> Vec<Value> {
    docs.to_vec()
}

/// The imported YAML with each `service.ns.svc.cluster.local:port` endpoint
/// replaced by a running server, and listen/admin on loopback.
fn runnable(yaml: &str, endpoints: &[(&str, std::net::SocketAddr)]) -> String {
    let mut out = yaml.replace("0.0.0.0:8080", "127.0.0.1:0").replace("127.0.0.1:9901", "127.0.0.1:0").replacen(
        "upstreams:",
        "access_log: false\nupstreams:",
        1,
    );
    for (name, addr) in endpoints {
        out = out.replace(name, &addr.to_string());
    }
    out
}

fn service(ns: &str, name: &str, port: u16, app_protocol: Option<&str>) -> Value {
    let mut p = json!({"name": "grpc", "port": port});
    if let Some(a) = app_protocol {
        p["appProtocol"] = json!(a);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"ports": [p]}})
}

/// Conformance's exact method matching, on weir's test service: one
/// method to each backend, any other method of the service unmatched
/// (UNIMPLEMENTED, as a Gateway answers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_method_matches_route_real_calls_as_the_conformance_suite_expects() {
    let v1 = Server::start();
    // Every Bet call on v2 fails with a code of its own: who answered shows.
    let v2 = Server::failing("1:FAILED_PRECONDITION");
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
        "metadata": {"name": "exact-matching", "namespace": "gateway-conformance-infra"},
        "spec": {
            "parentRefs": [{"name": "same-namespace"}],
            "rules": [
                {"matches": [{"method": {"service": "weir.test.Game", "method": "Stream"}}],
                 "backendRefs": [{"name": "grpc-infra-backend-v1", "port": 8080}]},
                {"matches": [{"method": {"type": "Exact", "service": "weir.test.Game", "method": "Bet"}}],
                 "backendRefs": [{"name": "grpc-infra-backend-v2", "port": 8080}]}
            ]
        }
    });
    let input = objects(&[
        route,
        service("gateway-conformance-infra", "grpc-infra-backend-v1", 8080, None),
        service("gateway-conformance-infra", "grpc-infra-backend-v2", 8080, Some("kubernetes.io/h2c")),
    ]);
    let imported = weir::import::gateway_api::import(&input);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    assert_eq!(imported.routes, 2);
    assert!(imported.yaml.contains("path: \"/weir.test.Game/Bet\", path_type: exact"), "{}", imported.yaml);
    assert!(imported.yaml.contains("protocol: h2c"), "{}", imported.yaml);
    weir::import::check(&imported, Path::new(".")).unwrap();
    let yaml = runnable(
        &imported.yaml,
        &[
            ("grpc-infra-backend-v1.gateway-conformance-infra.svc.cluster.local:8080", v1.addr),
            ("grpc-infra-backend-v2.gateway-conformance-infra.svc.cluster.local:8080", v2.addr),
        ],
    );
    let w = Weir::start(&yaml).await;
    let stream = call(w.addr, "Stream", "3", 10.0).await;
    assert_eq!(stream["code"], "OK", "{stream}");
    assert_eq!(stream["replies"], json!(["m0", "m1", "m2"]), "Stream goes to v1");
    let bet = call(w.addr, "Bet", "x", 10.0).await;
    assert_eq!(bet["code"], "FAILED_PRECONDITION", "Bet goes to v2: {bet}");
    let chat = call(w.addr, "Chat", "a", 10.0).await;
    assert_eq!(chat["code"], "UNIMPLEMENTED", "a method no rule matches: {chat}");
    assert!(chat["details"].as_str().unwrap_or("").starts_with("weir:"), "{chat}");
}

/// Method-only and regular-expression method matches and an appProtocol
/// weir cannot speak are listed, each with the rule it keeps out; an
/// HTTP/1.1 backend with a BackendTLSPolicy is HTTP/1.1 over TLS.
#[test]
fn grpc_route_and_backend_shapes_weir_cannot_carry_are_listed() {
    let route = json!({
        "kind": "GRPCRoute", "metadata": {"name": "r", "namespace": "ns"},
        "spec": {"rules": [
            {"matches": [{"method": {"method": "Bet"}}], "backendRefs": [{"name": "a", "port": 80}]},
            {"matches": [{"method": {"type": "RegularExpression", "service": "weir\\..*"}}], "backendRefs": [{"name": "a", "port": 80}]},
            {"backendRefs": [{"name": "wss", "port": 80}]}
        ]}
    });
    let http = json!({
        "kind": "HTTPRoute", "metadata": {"name": "h", "namespace": "ns"},
        "spec": {"rules": [{"backendRefs": [{"name": "plain", "port": 80}]}]}
    });
    let policy = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "BackendTLSPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "plain"}],
                 "validation": {"hostname": "plain.example", "wellKnownCACertificates": "System"}}
    });
    let input = vec![route, http, policy, service("ns", "wss", 80, Some("kubernetes.io/wss"))];
    let imported = weir::import::gateway_api::import(&input);
    let listed: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    let has = |what: &str| listed.iter().any(|s| s.contains(what));
    assert!(has("GRPCRoute ns/r: spec.rules[0].matches[0].method: a method without its service"), "{listed:#?}");
    assert!(has("GRPCRoute ns/r: spec.rules[1].matches[0].method: method match type"), "{listed:#?}");
    assert!(
        has("GRPCRoute ns/r: spec.rules[2]: Service ns/wss port 80 has appProtocol \"kubernetes.io/wss\""),
        "{listed:#?}"
    );
    // An HTTP/1.1 backend with a BackendTLSPolicy: HTTP/1.1 over TLS.
    assert!(
        imported.yaml.contains("\"plain-ns-80-http1-tls\": {endpoints: [\"plain.ns.svc.cluster.local:80\"], tls: {server_name: \"plain.example\"}}"),
        "{}",
        imported.yaml
    );
    assert!(has("BackendTLSPolicy ns/p: spec.validation.wellKnownCACertificates: System"), "{listed:#?}");
    assert_eq!(imported.routes, 1, "{}", imported.yaml);
    weir::import::check(&imported, Path::new(".")).unwrap();
}

/// A CA and a TLS gRPC server for `localhost` signed by it (openssl CLI).
fn make_certs(dir: &Path) {
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
        -days 1 -subj /CN=import-ca 2>/dev/null");
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key -out other.crt \
        -days 1 -subj /CN=other-ca 2>/dev/null");
    sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
        -subj /CN=localhost 2>/dev/null && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > leaf.ext && \
        openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
        -extfile leaf.ext -out leaf.crt 2>/dev/null");
}

/// A BackendTLSPolicy with a ConfigMap CA: the import names the file the
/// operator provides and the name to verify; with the CA there, weir
/// reaches the TLS gRPC server; `weir import` accepts the missing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_tls_policy_makes_weir_verify_the_grpc_server_with_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    make_certs(tmp.path());
    let d = tmp.path().display().to_string();
    let server = Server::tls(&format!("{d}/leaf.crt"), &format!("{d}/leaf.key"), None);
    let input = vec![
        json!({
            "kind": "GRPCRoute", "metadata": {"name": "bets", "namespace": "games"},
            "spec": {"rules": [{"backendRefs": [{"name": "bets", "port": 443}]}]}
        }),
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha3", "kind": "BackendTLSPolicy",
            "metadata": {"name": "bets-tls", "namespace": "games"},
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "bets", "sectionName": "grpc"}],
                     "validation": {"hostname": "localhost", "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "bets-ca"}]}}
        }),
        service("games", "bets", 443, Some("kubernetes.io/h2c")),
    ];
    let imported = weir::import::gateway_api::import(&input);
    assert_eq!(imported.files, ["ca/games/bets-ca/ca.crt"]);
    assert!(
        imported.yaml.contains("protocol: h2, tls: {ca_file: \"ca/games/bets-ca/ca.crt\", server_name: \"localhost\"}"),
        "{}",
        imported.yaml
    );
    let listed: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    assert!(listed.iter().any(|s| s.contains("write ConfigMap games/bets-ca's ca.crt")), "{listed:?}");
    // The file may be missing when `weir import` checks its output...
    weir::import::check(&imported, tmp.path()).unwrap();
    // ...but nothing else may be wrong.
    let broken = weir::import::Imported { files: Vec::new(), ..imported.clone() };
    assert!(weir::import::check(&broken, tmp.path()).is_err());

    let yaml = runnable(&imported.yaml, &[("bets.games.svc.cluster.local:443", server.addr)]);
    // With the ConfigMap's CA in place, the call goes through verified.
    let w = Weir::start(&yaml.replace("ca/games/bets-ca/ca.crt", &format!("{d}/ca.crt"))).await;
    let ok = call(w.addr, "Bet", "x", 10.0).await;
    assert_eq!(ok["code"], "OK", "{ok}");
    assert_eq!(ok["replies"], json!(["x"]));
    // With another CA there, weir refuses the server: UNAVAILABLE.
    let w = Weir::start(&yaml.replace("ca/games/bets-ca/ca.crt", &format!("{d}/other.crt"))).await;
    let refused = call(w.addr, "Bet", "x", 10.0).await;
    assert_eq!(refused["code"], "UNAVAILABLE", "{refused}");
}

fn ingress(name: &str, ann: &[(&str, &str)], service: &str, port: u16) -> Value {
    let annotations: serde_json::Map<String, Value> =
        ann.iter().map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v))).collect();
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "games", "annotations": annotations},
        "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": port}}}}
        ]}}]}
    })
}

/// ingress-nginx's `backend-protocol: GRPC` (any case, as its
/// annotation parser accepts it) becomes an h2c upstream, and its canary
/// Ingress's Service is spoken to the same way (ingress-nginx keeps the
/// primary's location); real calls go through, split by the canary weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_with_backend_protocol_grpc_carries_real_calls() {
    let stable = Server::start();
    let canary = Server::failing("1:FAILED_PRECONDITION");
    let input = vec![
        ingress("bets", &[("backend-protocol", "grpc")], "bets-v1", 50051),
        ingress("bets-canary", &[("canary", "true"), ("canary-by-header", "x-canary")], "bets-v2", 50051),
    ];
    let imported = weir::import::ingress_nginx::import(&input, "nginx");
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    assert!(
        imported.yaml.contains(
            "\"bets-v1-games-50051-h2c\": {endpoints: [\"bets-v1.games.svc.cluster.local:50051\"], protocol: h2c}"
        ),
        "{}",
        imported.yaml
    );
    assert!(
        imported.yaml.contains(
            "\"bets-v2-games-50051-h2c\": {endpoints: [\"bets-v2.games.svc.cluster.local:50051\"], protocol: h2c}"
        ),
        "{}",
        imported.yaml
    );
    weir::import::check(&imported, Path::new(".")).unwrap();
    let yaml = runnable(
        &imported.yaml,
        &[
            ("bets-v1.games.svc.cluster.local:50051", stable.addr),
            ("bets-v2.games.svc.cluster.local:50051", canary.addr),
        ],
    );
    let w = Weir::start(&yaml).await;
    let ok = call(w.addr, "Bet", "x", 10.0).await;
    assert_eq!((ok["code"].as_str(), &ok["replies"]), (Some("OK"), &json!(["x"])), "stable answers: {ok}");
}

/// What ingress-nginx does with the other protocols and with proxy-ssl-*,
/// from its own source and e2e tests (annotations/backendprotocol.go,
/// proxyssl.go): GRPCS is `grpc_pass grpcs://` without verification;
/// HTTPS is `proxy_pass https://`, verified only with proxy-ssl-secret and
/// proxy-ssl-verify on (against proxy-ssl-name); AUTO_HTTP and FCGI are
/// protocols weir does not speak to upstreams (the Ingress is left out,
/// listed); an unknown value is HTTP; proxy-ssl-* is never applied to gRPC.
#[test]
fn ingress_backend_protocols_and_proxy_ssl_translate_as_ingress_nginx_applies_them() {
    let input = vec![
        ingress("secure-grpc", &[("backend-protocol", "GRPCS"), ("proxy-ssl-verify", "on")], "g", 443),
        ingress("https", &[("backend-protocol", "HTTPS"), ("proxy-ssl-secret", "games/ca")], "h", 443),
        ingress(
            "verified",
            &[
                ("backend-protocol", "https"),
                ("proxy-ssl-secret", "games/upstream-ca"),
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-name", "api.internal"),
                ("proxy-ssl-protocols", "TLSv1.3"),
            ],
            "v",
            8443,
        ),
        ingress(
            "elsewhere",
            &[("backend-protocol", "HTTPS"), ("proxy-ssl-secret", "other/ca"), ("proxy-ssl-verify", "on")],
            "e",
            443,
        ),
        ingress("fcgi", &[("backend-protocol", "FCGI")], "f", 9000),
        ingress("odd", &[("backend-protocol", "SPDY")], "o", 80),
    ];
    let imported = weir::import::ingress_nginx::import(&input, "nginx");
    let listed: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    let has = |what: &str| listed.iter().any(|s| s.contains(what));
    let yaml = &imported.yaml;
    assert!(yaml.contains("\"g-games-443-h2-tls\": {endpoints: [\"g.games.svc.cluster.local:443\"], protocol: h2, tls: {insecure_skip_verify: true}}"), "{yaml}");
    assert!(
        has(
            "Ingress games/secure-grpc: nginx.ingress.kubernetes.io/backend-protocol: GRPCS: imported as protocol h2 with insecure_skip_verify"
        ),
        "{listed:#?}"
    );
    assert!(
        has(
            "Ingress games/secure-grpc: nginx.ingress.kubernetes.io/proxy-ssl-verify: ingress-nginx does not apply proxy-ssl-* to gRPC"
        ),
        "{listed:#?}"
    );
    // HTTPS without verification on: not verified, as in nginx.
    assert!(yaml.contains("\"h-games-443-http1-tls\": {endpoints: [\"h.games.svc.cluster.local:443\"], tls: {insecure_skip_verify: true}}"), "{yaml}");
    assert!(
        has(
            "Ingress games/https: nginx.ingress.kubernetes.io/backend-protocol: HTTPS without proxy-ssl-secret and proxy-ssl-verify on"
        ),
        "{listed:#?}"
    );
    // Verified: the Secret's CA (a file to provide) and proxy-ssl-name.
    assert!(yaml.contains("\"v-games-8443-http1-tls\": {endpoints: [\"v.games.svc.cluster.local:8443\"], tls: {ca_file: \"ca/games/upstream-ca/ca.crt\", server_name: \"api.internal\"}}"), "{yaml}");
    assert_eq!(imported.files, ["ca/games/upstream-ca/ca.crt"]);
    assert!(
        has(
            "Ingress games/verified: nginx.ingress.kubernetes.io/proxy-ssl-secret: write Secret games/upstream-ca's ca.crt"
        ),
        "{listed:#?}"
    );
    assert!(
        has("Ingress games/verified: nginx.ingress.kubernetes.io/proxy-ssl-protocols: not translated"),
        "{listed:#?}"
    );
    assert!(!has("Ingress games/verified: nginx.ingress.kubernetes.io/proxy-ssl-name"), "{listed:#?}");
    assert!(
        has(
            "Ingress games/elsewhere: nginx.ingress.kubernetes.io/proxy-ssl-secret: \"other/ca\": not a Secret of this namespace"
        ),
        "{listed:#?}"
    );
    assert!(
        has("Ingress games/fcgi: nginx.ingress.kubernetes.io/backend-protocol: FCGI: not a protocol weir speaks"),
        "{listed:#?}"
    );
    assert!(
        has(
            "Ingress games/odd: nginx.ingress.kubernetes.io/backend-protocol: \"SPDY\" is not a backend protocol; imported as HTTP"
        ),
        "{listed:#?}"
    );
    assert!(!yaml.contains("f.games.svc") && !yaml.contains("e.games.svc"), "{yaml}");
    assert!(yaml.contains("\"o-games-80\": {endpoints: [\"o.games.svc.cluster.local:80\"]}"), "{yaml}");
    assert_eq!(imported.routes, 4);
    weir::import::check(&imported, Path::new(".")).unwrap();
}
