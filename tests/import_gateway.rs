//! `weir import gateway-api`, proven request by request: the Gateway API's
//! matching and precedence (HTTPRoute spec v1: hostname, exact path, longest
//! prefix, header count, query count, age, rule order) modelled here
//! independently, compared with `weir explain` on the imported config; the
//! shapes weir cannot carry are listed; random HTTPRoutes never make the
//! importer panic or write an invalid config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

/// One HTTPRoute match with everything precedence needs.
#[derive(Debug, Clone)]
struct GMatch {
    age: usize,
    rule: usize,
    hostnames: Vec<String>,
    exact: bool,
    path: String,
    headers: Vec<(String, String, bool)>,
    query: Vec<(String, String)>,
    backends: Vec<(String, u64)>,
}

/// The first item of each key, in order.
fn first_of_each<T>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> String) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    items.filter(|i| seen.insert(key(i))).collect()
}

/// The Gateway API's matching and precedence (HTTPRoute spec, v1).
struct GModel {
    matches: Vec<GMatch>,
}

impl GModel {
    fn of(objects: &[Value]) -> Self {
        let mut routes: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "HTTPRoute").collect();
        routes.sort_by_key(|o| {
            (
                o["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_owned(),
                o["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
                o["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        });
        let mut matches = Vec::new();
        for (age, o) in routes.iter().enumerate() {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
            let hostnames: Vec<String> = o["spec"]["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            for (ri, rule) in o["spec"]["rules"].as_array().into_iter().flatten().enumerate() {
                let backends: Vec<(String, u64)> = rule["backendRefs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        (
                            format!(
                                "{}.{ns}.svc.cluster.local:{}",
                                b["name"].as_str().unwrap(),
                                b["port"].as_u64().unwrap()
                            ),
                            b["weight"].as_u64().unwrap_or(1),
                        )
                    })
                    .filter(|(_, w)| *w > 0)
                    .collect();
                let ms = rule["matches"].as_array().cloned().unwrap_or_default();
                let ms = if ms.is_empty() { vec![json!({})] } else { ms };
                for m in ms {
                    matches.push(GMatch {
                        age,
                        rule: ri,
                        hostnames: hostnames.clone(),
                        exact: m["path"]["type"] == "Exact",
                        path: m["path"]["value"].as_str().unwrap_or("/").to_owned(),
                        // Only the first entry of a name counts (header
                        // names case-insensitively); the rest are ignored.
                        headers: first_of_each(
                            m["headers"].as_array().into_iter().flatten().map(|h| {
                                (
                                    h["name"].as_str().unwrap().to_owned(),
                                    h["value"].as_str().unwrap().to_owned(),
                                    h["type"] == "RegularExpression",
                                )
                            }),
                            |h| h.0.to_ascii_lowercase(),
                        ),
                        query: first_of_each(
                            m["queryParams"].as_array().into_iter().flatten().map(|q| {
                                (q["name"].as_str().unwrap().to_owned(), q["value"].as_str().unwrap().to_owned())
                            }),
                            |q| q.0.clone(),
                        ),
                        backends: backends.clone(),
                    });
                }
            }
        }
        GModel { matches }
    }

    /// The backend a Gateway sends this request to: lowest draw → the
    /// second backend when it has weight, highest → the first when it has.
    fn backend(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        query: &[(&str, &str)],
        high: bool,
    ) -> Option<String> {
        let host_fit = |m: &GMatch| -> Option<(usize, usize)> {
            if m.hostnames.is_empty() {
                return Some((0, 0));
            }
            m.hostnames
                .iter()
                .filter_map(|h| match h.strip_prefix('*') {
                    Some(suffix) => (host.ends_with(suffix) && host.len() > suffix.len()).then_some((0, h.len())),
                    None => (h == host).then_some((h.len(), h.len())),
                })
                .max()
        };
        let path_fit = |m: &GMatch| {
            if m.exact {
                m.path == path
            } else {
                let p = m.path.trim_end_matches('/');
                p.is_empty() || (path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
        };
        let headers_fit = |m: &GMatch| {
            m.headers.iter().all(|(n, v, regex)| {
                headers.iter().any(|(k, got)| {
                    k.eq_ignore_ascii_case(n)
                        && if *regex {
                            regex::Regex::new(&format!("^(?:{v})$")).unwrap().is_match(got)
                        } else {
                            got == v
                        }
                })
            })
        };
        let query_fit = |m: &GMatch| m.query.iter().all(|(n, v)| query.iter().any(|(k, got)| k == n && got == v));
        let best = self
            .matches
            .iter()
            .filter_map(|m| {
                let (plain, any) = host_fit(m)?;
                (path_fit(m) && headers_fit(m) && query_fit(m)).then_some((m, plain, any))
            })
            .max_by_key(|(m, plain, any)| {
                (
                    *plain,
                    *any,
                    m.exact,
                    m.path.trim_end_matches('/').len(),
                    m.headers.len(),
                    m.query.len(),
                    std::cmp::Reverse(m.age),
                    std::cmp::Reverse(m.rule),
                )
            })?
            .0;
        let pick = if high { best.backends.first() } else { best.backends.get(1).or(best.backends.first()) };
        pick.map(|(b, _)| b.clone())
    }
}

fn gateway_import(path: &Path) -> (weir::import::Imported, Vec<Value>, weir::config::Snapshot) {
    let objects = weir::import::objects(&std::fs::read_to_string(path).unwrap()).unwrap();
    let imported = weir::import::gateway_api::import(&objects);
    let snapshot = weir::config::validate(imported.yaml.as_bytes(), Path::new("."))
        .unwrap_or_else(|p| panic!("{}: invalid import {p:?}\n{}", path.display(), imported.yaml));
    (imported, objects, snapshot)
}

#[test]
fn imported_http_routes_route_every_request_as_the_gateway_api_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/gateway/canary.yaml");
    let (imported, objects, snapshot) = gateway_import(&path);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    let model = GModel::of(&objects);
    let endpoint = |upstream: &str| {
        snapshot.upstreams.iter().find(|u| &*u.name == upstream).map(|u| u.endpoints[0].clone()).unwrap()
    };
    let hosts =
        ["bet.example.com", "a.lobby.example.com", "x.y.lobby.example.com", "lobby.example.com", "other.example.net"];
    let paths =
        ["/", "/api", "/api/", "/api/bets", "/apix", "/health", "/health/x", "/games", "/games/", "/games/slots", "/z"];
    let header_sets: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("x-canary", "true")],
        vec![("X-Canary", "false")],
        vec![("x-brand", "lucky-7"), ("x-market", "SE")],
        vec![("x-brand", "lucky-7x"), ("x-market", "SE")],
        vec![("x-brand", "star-1")],
        vec![("x-canary", "true"), ("x-brand", "star-2"), ("x-market", "SE")],
    ];
    let query_sets: Vec<Option<&str>> = vec![None, Some("version=stable"), Some("version=canary")];
    let mut compared = 0;
    for host in hosts {
        for p in paths {
            for hs in &header_sets {
                for qs in &query_sets {
                    for high in [false, true] {
                        let query: Vec<(&str, &str)> = qs.iter().filter_map(|q| q.split_once('=')).collect();
                        let want = model.backend(host, p, hs, &query, high);
                        let q = weir::explain::Query {
                            host: host.into(),
                            path: p.into(),
                            headers: hs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                            cookies: vec![],
                            query: qs.map(str::to_owned),
                            https: false,
                        };
                        let draw = if high { 9_999 } else { 0 };
                        let got =
                            weir::explain::explain(&snapshot, &q, draw).unwrap().upstream.as_deref().map(endpoint);
                        assert_eq!(got, want, "{host}{p} headers {hs:?} query {qs:?} draw {draw}\n{}", imported.yaml);
                        compared += 1;
                    }
                }
            }
        }
    }
    eprintln!("{compared} requests compared");
    assert!(imported.yaml.contains("shadow: {upstream: \"bet-shadow-games-8080\", percent: 25}"), "{}", imported.yaml);
}

#[test]
fn http_route_shapes_weir_cannot_carry_are_listed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/gateway/untranslatable.yaml");
    let (imported, _, _) = gateway_import(&path);
    let said: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    for needle in ["RegularExpression", "3 backends", "ExtensionRef", "ReplacePrefixMatch needs"] {
        assert!(said.iter().any(|s| s.contains(needle)), "{needle}: {said:#?}");
    }
    assert!(said.iter().all(|s| s.starts_with("HTTPRoute games/odd")), "{said:#?}");
}

#[test]
fn a_repeated_header_or_query_name_matches_on_its_first_entry_and_the_rest_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: play, namespace: games}
spec:
  hostnames: [play.example.com]
  rules:
    - backendRefs: [{name: stable, port: 80, weight: 90}, {name: canary, port: 80, weight: 10}]
    - matches:
        - path: {type: PathPrefix, value: /}
          headers: [{name: x-a, value: "1"}, {name: X-A, value: "2"}]
          queryParams: [{name: v, value: "1"}, {name: v, value: "2"}]
      backendRefs: [{name: canary, port: 80}]
"#,
    )
    .unwrap();
    let (imported, objects, snapshot) = gateway_import(&path);
    let said: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    assert!(said.iter().any(|s| s.contains("headers[1]") && s.contains("repeats a header name")), "{said:#?}");
    assert!(
        said.iter().any(|s| s.contains("queryParams[1]") && s.contains("repeats a query parameter name")),
        "{said:#?}"
    );
    let model = GModel::of(&objects);
    let endpoint = |upstream: &str| {
        snapshot.upstreams.iter().find(|u| &*u.name == upstream).map(|u| u.endpoints[0].clone()).unwrap()
    };
    for (h, q, to_canary) in [("1", "v=1", true), ("2", "v=1", false), ("1", "v=2", false), ("2", "v=2", false)] {
        let want = model.backend("play.example.com", "/api/x", &[("x-a", h)], &[("v", &q[2..])], true);
        assert_eq!(want.as_deref().is_some_and(|b| b.starts_with("canary.")), to_canary, "model: x-a {h} {q}");
        let query = weir::explain::Query {
            host: "play.example.com".into(),
            path: "/api/x".into(),
            headers: vec![("x-a".into(), h.into())],
            cookies: vec![],
            query: Some(q.into()),
            https: false,
        };
        let got = weir::explain::explain(&snapshot, &query, 9_999).unwrap().upstream.as_deref().map(endpoint);
        assert_eq!(got, want, "x-a {h} {q}\n{}", imported.yaml);
    }
}

fn http_route_strategy() -> impl Strategy<Value = Value> {
    let host =
        prop_oneof![Just(json!("a.example.com")), Just(json!("*.example.com")), Just(json!("x y")), Just(json!(7))];
    let path = prop_oneof![
        Just(json!({"type": "PathPrefix", "value": "/api"})),
        Just(json!({"type": "Exact", "value": "/"})),
        Just(json!({"type": "RegularExpression", "value": "(["})),
        Just(json!({"type": "PathPrefix", "value": "nope"})),
        Just(Value::Null)
    ];
    let header = prop_oneof![
        Just(json!({"name": "x-a", "value": "1"})),
        Just(json!({"name": "X-A", "value": "2"})),
        Just(json!({"name": "x-b", "type": "RegularExpression", "value": "(["})),
        Just(json!({"name": "bad name", "value": "1"})),
        Just(json!({"name": "x-c", "value": "\u{7f}"}))
    ];
    let backend = prop_oneof![
        Just(json!({"name": "v1", "port": 80})),
        Just(json!({"name": "v2", "port": 80, "weight": 3})),
        Just(json!({"name": "v3", "port": 0})),
        Just(json!({"name": "V 4", "port": 80})),
        Just(json!({"name": "v5", "port": 80, "weight": 0})),
        Just(json!({"name": "v6", "kind": "Bucket", "port": 80}))
    ];
    let filter = prop_oneof![
        Just(
            json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80}, "fraction": {"numerator": 1, "denominator": 3}}})
        ),
        Just(
            json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "m", "port": 80}, "percent": 250}})
        ),
        Just(json!({"type": "RequestRedirect"}))
    ];
    let rule = (
        proptest::collection::vec((path, proptest::collection::vec(header, 0..3)), 0..3),
        proptest::collection::vec(backend, 0..4),
        proptest::collection::vec(filter, 0..2),
    )
        .prop_map(|(matches, backends, filters)| {
            json!({
                "matches": matches.into_iter().map(|(p, h)| json!({"path": p, "headers": h})).collect::<Vec<_>>(),
                "backendRefs": backends,
                "filters": filters,
            })
        });
    (proptest::collection::vec(host, 0..3), proptest::collection::vec(rule, 0..4))
        .prop_map(|(hosts, rules)| json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "ns"}, "spec": {"hostnames": hosts, "rules": rules}}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn random_http_routes_never_panic_and_always_give_a_valid_config(objs in proptest::collection::vec(http_route_strategy(), 0..4)) {
        let imported = weir::import::gateway_api::import(&objs);
        if let Err(p) = weir::config::validate(imported.yaml.as_bytes(), Path::new(".")) {
            prop_assert!(false, "invalid output {p:?}\n{}", imported.yaml);
        }
    }
}

#[test]
fn the_gateway_api_cli_says_whether_the_import_was_complete() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/gateway");
    let run = |file: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["import", "gateway-api"])
            .arg(dir.join(file))
            .output()
            .unwrap()
    };
    let out = run("canary.yaml");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("untranslatable.yaml");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("filter ExtensionRef is not translated; rule not imported"));
}
