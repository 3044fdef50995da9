//! The importers against the upstream projects' own tests and docs (issue
//! 36): each case is a manifest and requests with the answers the upstream
//! test or document states, not a model written from the importer's reading.
//!
//! - ingress-nginx `internal/k8s/main.go` `SetDefaultNGINXPathType`:
//!   ImplementationSpecific and a missing pathType are Prefix; with
//!   e2e `ingress/pathtype_prefix.go` (`/aaa` takes `/aaa/`, not `/aaaccc`);
//! - ingress-nginx docs `user-guide/ingress-path-matching.md` "Path Priority"
//!   and `controller/location.go` (Prefix `/p` is `location /p/` and
//!   `location = /p`): `/foo/bar` → service1, `/foo/bar/` → service2;
//! - ingress-nginx e2e `annotations/canary.go` "should routes to mainline
//!   upstream when the given Regex causes error", and the valid-pattern case;
//! - networking.k8s.io/v1beta1 `serviceName`/`servicePort` backends;
//! - the same object twice in one input: the last, as `kubectl apply`;
//! - Gateway API guide "traffic splitting", `traffic-split-1.yaml`: a plain
//!   rule to foo-v1 and a header rule (`traffic: test`) to foo-v2;
//! - Gateway API `rules[].timeouts` and RequestRedirect translated, a
//!   backendRef filter weir cannot carry listed with its reason, never
//!   dropped silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use std::path::Path;

fn route(
    snapshot: &weir::config::Snapshot,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    cookies: &[(&str, &str)],
    draw: u16,
) -> Option<String> {
    let q = weir::explain::Query {
        host: host.into(),
        path: path.into(),
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        cookies: cookies.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        query: None,
        https: false,
    };
    let e = weir::explain::explain(snapshot, &q, draw).unwrap();
    // The Service name: upstreams are named <service>-<namespace>-<port>.
    e.upstream.map(|u| u.split('-').take_while(|p| *p != "default").collect::<Vec<_>>().join("-"))
}

fn ingress(name: &str, ann: &[(&str, &str)], host: &str, paths: Value) -> Value {
    let annotations: serde_json::Map<String, Value> =
        ann.iter().map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v))).collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": "default", "annotations": annotations},
           "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": paths}}]}})
}

fn path(p: &str, kind: Option<&str>, svc: &str) -> Value {
    let mut v = json!({"path": p, "backend": {"service": {"name": svc, "port": {"number": 80}}}});
    if let Some(k) = kind {
        v["pathType"] = json!(k);
    }
    v
}

fn ingress_snapshot(objects: &[Value]) -> (weir::import::Imported, weir::config::Snapshot) {
    let imported = weir::import::ingress_nginx::import(objects, "nginx");
    let snapshot = weir::config::validate(imported.yaml.as_bytes(), Path::new("."))
        .unwrap_or_else(|p| panic!("invalid import {p:?}\n{}", imported.yaml));
    (imported, snapshot)
}

#[test]
fn implementation_specific_and_missing_path_types_are_prefix() {
    let objects = vec![ingress(
        "foo",
        &[],
        "foo1.com",
        json!([path("/bar", Some("ImplementationSpecific"), "svc-a"), path("/aaa", None, "svc-b")]),
    )];
    let (imported, s) = ingress_snapshot(&objects);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    for (p, want) in
        [("/bar", Some("svc-a")), ("/bar/", Some("svc-a")), ("/bar/x", Some("svc-a")), ("/aaa/", Some("svc-b"))]
    {
        assert_eq!(route(&s, "foo1.com", p, &[], &[], 0).as_deref(), want, "{p}\n{}", imported.yaml);
    }
    for p in ["/barx", "/aaaccc"] {
        assert_eq!(route(&s, "foo1.com", p, &[], &[], 0), None, "{p} is a 404 in ingress-nginx\n{}", imported.yaml);
    }
    // A canary written ImplementationSpecific joins its Prefix primary.
    let objects = vec![
        ingress("main", &[], "bet.example", json!([path("/api", Some("Prefix"), "v1")])),
        ingress(
            "canary",
            &[("canary", "true"), ("canary-weight", "100")],
            "bet.example",
            json!([path("/api", Some("ImplementationSpecific"), "v2")]),
        ),
    ];
    let (imported, s) = ingress_snapshot(&objects);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    assert_eq!(route(&s, "bet.example", "/api", &[], &[], 0).as_deref(), Some("v2"), "{}", imported.yaml);
}

#[test]
fn path_priority_as_ingress_nginx_documents_it() {
    let objects = vec![ingress(
        "test-ingress-1",
        &[],
        "test.com",
        json!([path("/foo/bar", Some("Prefix"), "service1"), path("/foo/bar/", Some("Prefix"), "service2")]),
    )];
    let (imported, s) = ingress_snapshot(&objects);
    for (p, want) in [("/foo/bar", "service1"), ("/foo/bar/", "service2"), ("/foo/bar/x", "service2")] {
        assert_eq!(route(&s, "test.com", p, &[], &[], 0).as_deref(), Some(want), "{p}\n{}", imported.yaml);
    }
}

#[test]
fn a_header_pattern_that_does_not_compile_sends_requests_with_the_header_to_the_mainline() {
    let main = ingress("main", &[], "foo.com", json!([path("/info", Some("Prefix"), "httpbun")]));
    let canary = |pattern: &str| {
        ingress(
            "canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "CanaryByHeader"),
                ("canary-by-header-pattern", pattern),
                ("canary-by-cookie", "CanaryByCookie"),
            ],
            "foo.com",
            json!([path("/info", Some("Prefix"), "canarysvc")]),
        )
    };
    // canary.go: "[][**da?$&*" with header DoCanary and cookie always → mainline.
    let (imported, s) = ingress_snapshot(&[main.clone(), canary("[][**da?$&*")]);
    let r = |h: &[(&str, &str)], c: &[(&str, &str)]| route(&s, "foo.com", "/info", h, c, 0);
    assert_eq!(
        r(&[("CanaryByHeader", "DoCanary")], &[("CanaryByCookie", "always")]).as_deref(),
        Some("httpbun"),
        "{}",
        imported.yaml
    );
    // Without the header the cookie still decides.
    assert_eq!(r(&[], &[("CanaryByCookie", "always")]).as_deref(), Some("canarysvc"));
    assert!(
        imported.skipped.iter().any(|s| s
            .to_string()
            .contains("does not compile: ingress-nginx sends every request with the header to the mainline")),
        "{:?}",
        imported.skipped
    );
    // canary.go's valid pattern: DoCanary → canary, Docanary → mainline.
    let (_, s) = ingress_snapshot(&[main, canary("^Do[A-Z][a-z]+y$")]);
    let r = |v: &str| route(&s, "foo.com", "/info", &[("CanaryByHeader", v)], &[], 0);
    assert_eq!(r("DoCanary").as_deref(), Some("canarysvc"));
    assert_eq!(r("Docanary").as_deref(), Some("httpbun"));
}

#[test]
fn v1beta1_backends_and_the_last_of_duplicate_objects() {
    let service = json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                         "spec": {"ports": [{"name": "http", "port": 8080}]}});
    let old = json!({"apiVersion": "networking.k8s.io/v1beta1", "kind": "Ingress",
        "metadata": {"name": "legacy", "namespace": "default", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
        "spec": {"rules": [{"host": "old.example", "http": {"paths": [
            {"path": "/", "backend": {"serviceName": "web", "servicePort": "http"}},
            {"path": "/api", "backend": {"serviceName": "api", "servicePort": 80}}]}}]}});
    let (imported, s) = ingress_snapshot(&[service, old]);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    assert!(imported.yaml.contains("web.default.svc.cluster.local:8080"), "{}", imported.yaml);
    assert_eq!(route(&s, "old.example", "/api/x", &[], &[], 0).as_deref(), Some("api"));
    // The same Ingress twice: the second is what the cluster holds.
    let first = ingress("shop", &[], "shop.example", json!([path("/", Some("Prefix"), "svc-a")]));
    let second = ingress("shop", &[], "shop.example", json!([path("/", Some("Prefix"), "svc-b")]));
    let (_, s) = ingress_snapshot(&[first, second]);
    assert_eq!(route(&s, "shop.example", "/", &[], &[], 0).as_deref(), Some("svc-b"));
}

fn gateway_snapshot(objects: &[Value]) -> (weir::import::Imported, weir::config::Snapshot) {
    let imported = weir::import::gateway_api::import(objects);
    let snapshot = weir::config::validate(imported.yaml.as_bytes(), Path::new("."))
        .unwrap_or_else(|p| panic!("invalid import {p:?}\n{}", imported.yaml));
    (imported, snapshot)
}

#[test]
fn the_gateway_guides_first_canary_step_imports_whole() {
    let split1 = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "foo-route", "namespace": "default"},
        "spec": {"hostnames": ["foo.example.com"], "rules": [
            {"backendRefs": [{"name": "foo-v1", "port": 8080}]},
            {"matches": [{"headers": [{"name": "traffic", "value": "test"}]}], "backendRefs": [{"name": "foo-v2", "port": 8080}]}]}});
    let (imported, s) = gateway_snapshot(&[split1]);
    assert!(imported.skipped.is_empty(), "{:?}\n{}", imported.skipped, imported.yaml);
    for draw in [0, 9_999] {
        assert_eq!(route(&s, "foo.example.com", "/", &[("traffic", "test")], &[], draw).as_deref(), Some("foo-v2"));
        assert_eq!(route(&s, "foo.example.com", "/", &[], &[], draw).as_deref(), Some("foo-v1"), "{}", imported.yaml);
    }
}

#[test]
fn gateway_timeouts_redirects_and_backend_filters_are_translated_or_listed() {
    let r = json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "default"},
        "spec": {"rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}], "timeouts": {"request": "500ms"},
             "backendRefs": [{"name": "infra-backend-v1", "port": 8080}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/full"}}],
             "backendRefs": [{"name": "infra-backend-v1", "port": 8080,
                              "filters": [{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/redirected-full"}}}]}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/moved"}}],
             "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]}});
    let (imported, s) = gateway_snapshot(&[r]);
    let listed: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    // A backendRef may carry header modifiers only (the Gateway API's
    // backendRef filters); a redirect there is listed, its rule not served.
    assert_eq!(
        listed,
        ["HTTPRoute default/r: spec.rules[1].backendRefs: backendRefs[0]: backendRef filter RequestRedirect is not \
          translated; rule not imported"],
        "{}",
        imported.yaml
    );
    assert!(imported.yaml.contains("timeouts: {request: 500ms}"), "{}", imported.yaml);
    assert_eq!(route(&s, "x", "/slow", &[], &[], 0).as_deref(), Some("infra-backend-v1"));
    assert_eq!(route(&s, "x", "/full", &[], &[], 0), None);
    // The redirect to https takes plain requests only: over TLS nothing matches.
    let q = |https| weir::explain::Query { host: "x".into(), path: "/moved/a".into(), https, ..Default::default() };
    let e = weir::explain::explain(&s, &q(false), 0).unwrap();
    assert_eq!(e.note.as_deref(), Some("answers 301 with Location: https://x/moved/a"), "{}", imported.yaml);
    assert_eq!(weir::explain::explain(&s, &q(true), 0).unwrap().route, None);
}

#[test]
fn gateway_matches_keep_the_gateway_api_precedence_when_some_cannot_be_segments() {
    // rule 1 has more header matches than rule 2, so it wins for a request
    // with both headers, though rule 2 (its own filter) must be its own route.
    let r = json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "default"},
        "spec": {"rules": [
            {"backendRefs": [{"name": "v1", "port": 80, "weight": 90}, {"name": "v2", "port": 80, "weight": 10}]},
            {"matches": [{"headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "value": "1"}]}],
             "backendRefs": [{"name": "v2", "port": 80}]},
            {"matches": [{"headers": [{"name": "x-a", "value": "1"}]}],
             "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-seen", "value": "1"}]}}],
             "backendRefs": [{"name": "v1", "port": 80}]}]}});
    let (imported, s) = gateway_snapshot(&[r]);
    assert!(imported.skipped.is_empty(), "{:?}\n{}", imported.skipped, imported.yaml);
    for draw in [0, 9_999] {
        let both = route(&s, "x", "/", &[("x-a", "1"), ("x-b", "1")], &[], draw);
        assert_eq!(both.as_deref(), Some("v2"), "{}", imported.yaml);
        assert_eq!(route(&s, "x", "/", &[("x-a", "1")], &[], draw).as_deref(), Some("v1"));
    }
    assert_eq!(route(&s, "x", "/", &[], &[], 9_999).as_deref(), Some("v1"));
    assert_eq!(route(&s, "x", "/", &[], &[], 0).as_deref(), Some("v2"), "the plain rule's 10 % canary");
}

#[test]
fn a_route_on_an_http_listener_takes_plain_requests_and_one_on_https_tls_ones() {
    // The Gateway API's HTTP→HTTPS pattern: a redirect route attached to the
    // HTTP listener (sectionName), the real route to the HTTPS one.
    let gw = json!({"kind": "Gateway", "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"listeners": [{"name": "http", "protocol": "HTTP", "port": 80},
                               {"name": "https", "protocol": "HTTPS", "port": 443}]}});
    let redirect = json!({"kind": "HTTPRoute", "metadata": {"name": "to-https", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw", "sectionName": "http"}], "hostnames": ["shop.example"],
                 "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]}});
    let app = json!({"kind": "HTTPRoute", "metadata": {"name": "app", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw", "sectionName": "https"}], "hostnames": ["shop.example"],
                 "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}});
    let (imported, s) = gateway_snapshot(&[gw, redirect, app]);
    assert!(imported.skipped.is_empty(), "{:?}\n{}", imported.skipped, imported.yaml);
    let q =
        |https| weir::explain::Query { host: "shop.example".into(), path: "/cart".into(), https, ..Default::default() };
    let plain = weir::explain::explain(&s, &q(false), 0).unwrap();
    assert_eq!(
        plain.note.as_deref(),
        Some("answers 301 with Location: https://shop.example/cart"),
        "{}",
        imported.yaml
    );
    let tls = weir::explain::explain(&s, &q(true), 0).unwrap();
    assert_eq!(tls.upstream.as_deref().map(|u| u.starts_with("shop-")), Some(true), "{}", imported.yaml);
}
