//! `weir import ingress-nginx`, proven request by request: for every
//! manifest in tests/import/, the imported config passes `weir check`, and
//! for a grid of requests (hosts, paths, canary headers and cookies, the
//! lowest and highest weight draw) `weir explain` on it picks the backend
//! that ingress-nginx's own rules pick. Those rules are modelled here
//! independently of the importer, from ingress-nginx's `balancer.lua`
//! (`route_to_alternative_balancer`) and nginx's location choice. Random
//! manifests never make the importer panic or write an invalid config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Exact,
    /// Also `ImplementationSpecific` and no pathType (ingress-nginx's store
    /// sets them to Prefix: `SetDefaultNGINXPathType`).
    Prefix,
}

#[derive(Debug, Clone)]
struct MRule {
    host: String,
    path: String,
    kind: Kind,
    backend: String,
}

#[derive(Debug, Clone, Default)]
struct MCanary {
    header: Option<String>,
    value: Option<String>,
    pattern: Option<String>,
    cookie: Option<String>,
    weight: u64,
    total: u64,
}

/// ingress-nginx, as its source decides.
struct Model {
    primaries: Vec<MRule>,
    canaries: Vec<(MRule, MCanary)>,
}

fn ann<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    o["metadata"]["annotations"][format!("nginx.ingress.kubernetes.io/{k}")].as_str()
}

impl Model {
    fn of(objects: &[Value]) -> Self {
        let port_of = |ns: &str, svc: &str, b: &Value| -> Option<u64> {
            b["port"]["number"].as_u64().or_else(|| {
                let name = b["port"]["name"].as_str()?;
                objects.iter().filter(|o| o["kind"] == "Service").find_map(|s| {
                    (s["metadata"]["name"] == svc && s["metadata"]["namespace"].as_str().unwrap_or("default") == ns)
                        .then(|| s["spec"]["ports"].as_array()?.iter().find(|p| p["name"] == name)?["port"].as_u64())
                        .flatten()
                })
            })
        };
        let (mut primaries, mut canaries) = (Vec::new(), Vec::new());
        for o in objects.iter().filter(|o| o["kind"] == "Ingress") {
            let class = o["spec"]["ingressClassName"]
                .as_str()
                .or_else(|| o["metadata"]["annotations"]["kubernetes.io/ingress.class"].as_str());
            if class.is_some_and(|c| c != "nginx") {
                continue;
            }
            let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
            let backend = |b: &Value| {
                let svc = b["service"]["name"].as_str()?;
                Some(format!("{svc}.{ns}.svc.cluster.local:{}", port_of(ns, svc, &b["service"])?))
            };
            let mut rules = Vec::new();
            for r in o["spec"]["rules"].as_array().into_iter().flatten() {
                for p in r["http"]["paths"].as_array().into_iter().flatten() {
                    let kind = match p["pathType"].as_str() {
                        Some("Exact") => Kind::Exact,
                        Some("Prefix") => Kind::Prefix,
                        _ => Kind::Prefix,
                    };
                    if let Some(b) = backend(&p["backend"]) {
                        rules.push(MRule {
                            host: r["host"].as_str().unwrap_or("").to_owned(),
                            path: p["path"].as_str().unwrap_or("/").to_owned(),
                            kind,
                            backend: b,
                        });
                    }
                }
            }
            if let Some(b) = backend(&o["spec"]["defaultBackend"]) {
                rules.push(MRule { host: String::new(), path: "/".into(), kind: Kind::Prefix, backend: b });
            }
            if ann(o, "canary") == Some("true") {
                let n = |k: &str, d: u64| ann(o, k).and_then(|v| v.parse().ok()).unwrap_or(d);
                let c = MCanary {
                    header: ann(o, "canary-by-header").map(str::to_owned),
                    value: ann(o, "canary-by-header-value").map(str::to_owned),
                    pattern: ann(o, "canary-by-header-pattern").map(str::to_owned),
                    cookie: ann(o, "canary-by-cookie").map(str::to_owned),
                    weight: n("canary-weight", 0),
                    total: n("canary-weight-total", 100),
                };
                canaries.extend(rules.into_iter().map(|r| (r, c.clone())));
            } else {
                primaries.extend(rules);
            }
        }
        Model { primaries, canaries }
    }

    /// The rule nginx picks: None when a named host has no fitting path
    /// (404 there; weir falls through instead, see the import's comments).
    fn location(&self, host: &str, path: &str) -> Result<Option<&MRule>, ()> {
        let named: Vec<&MRule> = self.primaries.iter().filter(|r| r.host == host).collect();
        let wild: Vec<&MRule> = self
            .primaries
            .iter()
            .filter(|r| r.host.strip_prefix('*').is_some_and(|s| host.ends_with(s) && host.len() > s.len()))
            .collect();
        let (server, named_host) = if !named.is_empty() {
            (named, true)
        } else if !wild.is_empty() {
            (wild, true)
        } else {
            (self.primaries.iter().filter(|r| r.host.is_empty()).collect(), false)
        };
        let fits = |r: &&MRule| match r.kind {
            Kind::Exact => r.path == path,
            // ingress-nginx's locations for a Prefix path `/p`: `/p/` and
            // `= /p` (location.go); for `/p/`: `/p/` and `= /p/`.
            Kind::Prefix if r.path.len() > 1 && r.path.ends_with('/') => path.starts_with(&r.path),
            Kind::Prefix => {
                let p = r.path.trim_end_matches('/');
                p.is_empty() || (path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
        };
        let exact = server.iter().find(|r| r.kind == Kind::Exact && fits(r));
        let best =
            exact.or_else(|| server.iter().filter(|r| r.kind != Kind::Exact && fits(r)).max_by_key(|r| r.path.len()));
        match best {
            Some(r) => Ok(Some(r)),
            None if named_host => Err(()),
            None => Ok(None),
        }
    }

    /// The backend for a request; `high`: the weight draw is the highest.
    fn backend(
        &self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        cookies: &[(&str, &str)],
        high: bool,
    ) -> Result<Option<String>, ()> {
        let Some(rule) = self.location(host, path)? else { return Ok(None) };
        let canary =
            self.canaries.iter().find(|(c, _)| c.host == rule.host && c.path == rule.path && c.kind == rule.kind);
        let Some((crule, c)) = canary else { return Ok(Some(rule.backend.clone())) };
        let to_canary = Some(crule.backend.clone());
        let stable = Some(rule.backend.clone());
        if let Some(h) = &c.header
            && let Some((_, v)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(h))
        {
            if let Some(want) = c.value.as_deref().filter(|w| !w.is_empty()) {
                if *v == want {
                    return Ok(to_canary);
                }
            } else if let Some(p) = c.pattern.as_deref().filter(|p| !p.is_empty()) {
                if regex::Regex::new(p).unwrap().is_match(v) {
                    return Ok(to_canary);
                }
            } else if *v == "always" {
                return Ok(to_canary);
            } else if *v == "never" {
                return Ok(stable);
            }
        }
        if let Some(ck) = &c.cookie
            && let Some((_, v)) = cookies.iter().find(|(k, _)| k == ck)
        {
            if *v == "always" {
                return Ok(to_canary);
            } else if *v == "never" {
                return Ok(stable);
            }
        }
        // math.random(total) <= weight: the lowest draw is canary when the
        // weight is above 0, the highest only when it is the whole total.
        let canary_now = if high { c.weight >= c.total } else { c.weight > 0 };
        Ok(if canary_now { to_canary } else { stable })
    }
}

fn import(path: &Path) -> (weir::import::Imported, Vec<Value>, weir::config::Snapshot) {
    let text = std::fs::read_to_string(path).unwrap();
    let objects = weir::import::objects(&text).unwrap();
    let imported = weir::import::ingress_nginx::import(&objects, "nginx");
    let snapshot = weir::config::validate(imported.yaml.as_bytes(), Path::new("."))
        .unwrap_or_else(|p| panic!("{}: the imported config is invalid: {p:?}\n{}", path.display(), imported.yaml));
    (imported, objects, snapshot)
}

fn corpus() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn imported_configs_route_every_request_as_ingress_nginx_does() {
    let mut compared = 0;
    let mut fall_through = 0;
    for path in corpus() {
        let (imported, objects, snapshot) = import(&path);
        let model = Model::of(&objects);
        assert!(imported.routes > 0, "{}", path.display());
        let endpoint = |upstream: &str| {
            snapshot.upstreams.iter().find(|u| &*u.name == upstream).map(|u| u.endpoints[0].clone()).unwrap()
        };
        let mut hosts: Vec<String> = model.primaries.iter().map(|r| r.host.replace('*', "x")).collect();
        hosts.push("unknown.example.net".into());
        let mut paths: Vec<String> = vec!["/".into(), "/zzz".into()];
        for r in &model.primaries {
            paths.extend([r.path.clone(), format!("{}/x", r.path.trim_end_matches('/')), format!("{}x", r.path)]);
        }
        let header_names: Vec<String> = model.canaries.iter().filter_map(|(_, c)| c.header.clone()).collect();
        let cookie_names: Vec<String> = model.canaries.iter().filter_map(|(_, c)| c.cookie.clone()).collect();
        let values = ["always", "never", "SE", "lucky-7", "other"];
        let mut header_sets: Vec<Vec<(&str, &str)>> = vec![vec![]];
        for h in &header_names {
            for v in values {
                header_sets.push(vec![(h.as_str(), v)]);
            }
        }
        let mut cookie_sets: Vec<Vec<(&str, &str)>> = vec![vec![]];
        for c in &cookie_names {
            for v in ["always", "never", "other"] {
                cookie_sets.push(vec![(c.as_str(), v)]);
            }
        }
        for host in &hosts {
            for p in &paths {
                for hs in &header_sets {
                    for cs in &cookie_sets {
                        for high in [false, true] {
                            let want = match model.backend(host, p, hs, cs, high) {
                                Ok(w) => w,
                                Err(()) => {
                                    fall_through += 1;
                                    continue;
                                }
                            };
                            let q = weir::explain::Query {
                                host: host.clone(),
                                path: p.clone(),
                                headers: hs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                                cookies: cs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                                query: None,
                                https: true,
                            };
                            let draw = if high { 9_999 } else { 0 };
                            let got = weir::explain::explain(&snapshot, &q, draw).unwrap();
                            let got = got.upstream.as_deref().map(endpoint);
                            assert_eq!(
                                got,
                                want,
                                "{}: {host}{p} headers {hs:?} cookies {cs:?} draw {draw}\n{}",
                                path.display(),
                                imported.yaml
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{compared} requests compared; {fall_through} skipped (a named host without a fitting path: 404 in ingress-nginx)"
    );
    assert!(compared > 1_000, "{compared}");
}

#[test]
fn what_cannot_be_translated_is_listed_by_object_and_annotation() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import/cluster-list.yaml");
    let (imported, _, _) = import(&path);
    let said: Vec<String> = imported.skipped.iter().map(ToString::to_string).collect();
    let has = |needle: &[&str]| said.iter().any(|s| needle.iter().all(|n| s.contains(n)));
    assert!(has(&["Ingress casino/lobby-canary", "/games/slots", "unpaired canary"]), "{said:#?}");
    assert!(has(&["Ingress casino/lobby-canary", "rewrite-target", "ignored"]), "{said:#?}");
    assert!(!has(&["Ingress casino/lobby", "proxy-body-size"]), "{said:#?}");
    assert!(imported.yaml.contains("max_request_body: "), "{}", imported.yaml);
    assert!(has(&["Ingress casino/lobby", "spec.tls"]), "{said:#?}");
    assert!(has(&["Ingress casino/backoffice", "traefik"]), "{said:#?}");
    // The mirror and the affinity made it into the config.
    assert!(
        imported
            .yaml
            .contains("shadow: {upstream: \"mirror-lobby-shadow.casino.svc.cluster.local-8080\", percent: 100}"),
        "{}",
        imported.yaml
    );
    assert!(imported.yaml.contains("sticky: {keys: [\"cookie:LOBBY\"]}"), "{}", imported.yaml);
}

#[test]
fn the_cli_writes_a_checked_config_and_says_whether_the_import_was_complete() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let run = |file: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["import", "ingress-nginx"])
            .arg(dir.join(file))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, yaml, err) = run("weighted.yaml");
    assert_eq!(code, Some(0), "complete: {err}");
    assert!(yaml.contains("weight: 20") && err.contains("2 route(s)"), "{yaml}\n{err}");
    let (code, _, err) = run("cluster-list.yaml");
    assert_eq!(code, Some(1), "incomplete: {err}");
    assert!(err.contains("unpaired canary"), "{err}");
    // stdin works too.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["import", "ingress-nginx", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&std::fs::read(dir.join("weighted.yaml")).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Not YAML at all: exit 2, with where.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "kind: [unclosed").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["import", "ingress-nginx"])
        .arg(bad.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn ingress_strategy() -> impl Strategy<Value = Value> {
    let word = prop_oneof![
        Just("a"),
        Just("b"),
        Just(""),
        Just("x y"),
        Just("/"),
        Just("é"),
        Just("*.w.example.com"),
        Just("a.example.com")
    ];
    let path = prop_oneof![Just("/"), Just("/api"), Just("/api/"), Just(""), Just("api"), Just("/a b"), Just("/\"q")];
    let kind = prop_oneof![
        Just(json!("Exact")),
        Just(json!("Prefix")),
        Just(json!("ImplementationSpecific")),
        Just(json!("Bogus")),
        Just(Value::Null)
    ];
    let num =
        prop_oneof![Just(json!(80)), Just(json!(0)), Just(json!(70000)), Just(json!("eighty")), Just(Value::Null)];
    let ann_val = prop_oneof![
        Just("true"),
        Just("10"),
        Just("-1"),
        Just("X-H"),
        Just("(["),
        Just("always"),
        Just("http://m:1$request_uri"),
        Just("")
    ];
    let ann_key = prop_oneof![
        Just("canary"),
        Just("canary-weight"),
        Just("canary-weight-total"),
        Just("canary-by-header"),
        Just("canary-by-header-value"),
        Just("canary-by-header-pattern"),
        Just("canary-by-cookie"),
        Just("mirror-target"),
        Just("affinity"),
        Just("use-regex"),
        Just("rewrite-target")
    ];
    (
        word.clone(),
        proptest::collection::vec((word, path, kind, word_name(), num), 0..4),
        proptest::collection::btree_map(ann_key, ann_val, 0..5),
    )
        .prop_map(|(ns, paths, anns)| {
            let annotations: serde_json::Map<String, Value> =
                anns.into_iter().map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), json!(v))).collect();
            json!({
                "kind": "Ingress",
                "metadata": {"name": "i", "namespace": ns, "annotations": annotations},
                "spec": {"rules": paths.iter().map(|(host, p, kind, svc, port)| json!({
                    "host": host, "http": {"paths": [{"path": p, "pathType": kind,
                        "backend": {"service": {"name": svc, "port": {"number": port}}}}]}
                })).collect::<Vec<_>>()}
            })
        })
}

fn word_name() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("svc"), Just("svc-2"), Just("S V C"), Just("")]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// Hostile or broken manifests: the importer never panics, and what it
    /// writes always passes `weir check` (what it cannot take is listed).
    #[test]
    fn random_manifests_never_panic_and_always_give_a_valid_config(objs in proptest::collection::vec(ingress_strategy(), 0..5)) {
        let imported = weir::import::ingress_nginx::import(&objs, "nginx");
        if let Err(p) = weir::config::validate(imported.yaml.as_bytes(), Path::new(".")) {
            prop_assert!(false, "invalid output {p:?}\n{}", imported.yaml);
        }
    }
}
