//! Deployment files stay true: every weir config in config/ (top level,
//! docker/, and the ones embedded in Kubernetes ConfigMaps) passes
//! `weir check`; the manifests parse and keep the properties the guide (docs/guide/src/installing.md)
//! promises; the Dockerfile builds with the command CI reproduces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn weir_check(path: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir")).args(["check", "-c"]).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{} is not a valid weir config:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documents of a multi-document YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("config/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_weir_config_in_config_passes_weir_check() {
    let mut n = 0;
    for dir in ["config", "config/docker"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                weir_check(&p);
                n += 1;
            }
        }
    }
    assert!(n >= 4, "only {n} configs found");
}

#[test]
fn kubernetes_manifests_parse_and_keep_their_promises() {
    let files = manifests();
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let docs = documents(file);
        let name = file.display().to_string();
        let mut configmaps = std::collections::HashMap::new();
        for d in &docs {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].is_string(), "{name}: a document without {key}");
            }
            assert!(d["metadata"]["name"].is_string(), "{name}: a {} without metadata.name", d["kind"]);
            if d["kind"] == "ConfigMap" {
                configmaps.insert(d["metadata"]["name"].as_str().unwrap().to_owned(), d.clone());
            }
        }
        // Every embedded weir config is valid.
        for cm in configmaps.values() {
            let text =
                cm["data"]["weir.yaml"].as_str().unwrap_or_else(|| panic!("{name}: ConfigMap without weir.yaml"));
            let dir = tempfile::tempdir().unwrap();
            // The admin token comes from a Secret mounted in the pod; stand
            // one in for the check.
            let token = dir.path().join("admin-token");
            std::fs::write(&token, "test-token\n").unwrap();
            let text = text.replace("/etc/weir-secrets/admin-token", &token.display().to_string());
            let p = dir.path().join("weir.yaml");
            std::fs::write(&p, text).unwrap();
            weir_check(&p);
        }
        let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
        assert!(!deployments.is_empty(), "{name}: no Deployment");
        for dep in deployments {
            let spec = &dep["spec"];
            let tmpl = &spec["template"];
            for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
                assert_eq!(&tmpl["metadata"]["labels"][k], v, "{name}: selector does not match the pod labels");
            }
            let pod = &tmpl["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}: runAsNonRoot");
            let weir = pod["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "weir")
                .unwrap_or_else(|| panic!("{name}: no weir container"));
            assert_eq!(weir["securityContext"]["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(weir["securityContext"]["allowPrivilegeEscalation"], false, "{name}");
            let uid = weir["securityContext"]["runAsUser"].as_u64().or(pod["securityContext"]["runAsUser"].as_u64());
            assert_eq!(uid, Some(65532), "{name}: weir runs as 65532");
            assert_eq!(weir["readinessProbe"]["httpGet"]["path"], "/ready", "{name}");
            assert_eq!(weir["livenessProbe"]["httpGet"]["path"], "/live", "{name}");
            assert!(weir["resources"]["requests"]["cpu"].is_string(), "{name}: resource requests");
            // The ConfigMap is mounted as a directory, never with subPath
            // (a subPath mount never sees ConfigMap updates).
            let mounts = weir["volumeMounts"].as_array().unwrap();
            assert!(mounts.iter().all(|m| m.get("subPath").is_none()), "{name}: subPath mount");
            let config_mount = mounts.iter().find(|m| m["mountPath"] == "/etc/weir").expect("config at /etc/weir");
            let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == config_mount["name"]).unwrap();
            let cm = volume["configMap"]["name"].as_str().unwrap();
            assert!(configmaps.contains_key(cm), "{name}: mounts ConfigMap {cm} that is not in the file");
            // The probes and ports match the embedded config's listeners.
            let text = configmaps[cm]["data"]["weir.yaml"].as_str().unwrap();
            let ports: Vec<u64> =
                weir["ports"].as_array().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap()).collect();
            for port in &ports {
                assert!(text.contains(&format!(":{port}")), "{name}: containerPort {port} not in the weir config");
            }
            // Drain time fits in the termination grace period.
            let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
            assert!(grace >= 30, "{name}: terminationGracePeriodSeconds {grace}");
        }
        if name.ends_with("gateway.yaml") {
            // Fleet mode: the replicas judge together through Prometheus, and
            // the admin Service is headless so `weir fleet` reaches every pod.
            let text = configmaps["weir-config"]["data"]["weir.yaml"].as_str().unwrap();
            assert!(text.contains("source: { prometheus: "), "{name}: no fleet analysis source");
            let admin = docs.iter().find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "weir-admin").unwrap();
            assert_eq!(admin["spec"]["clusterIP"], "None", "{name}: weir-admin must be headless");
            assert!(docs.iter().any(|d| d["kind"] == "Service"), "{name}: no Service");
            assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"), "{name}: no PodDisruptionBudget");
        }
    }
}

#[test]
fn the_dockerfile_builds_locked_runs_as_65532_and_probes_without_a_shell() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("RUN ")).collect();
    // .ci/run executes this exact line on the host (no container engine there).
    assert_eq!(runs, ["RUN cargo build --release --locked --bin weir"]);
    assert!(text.contains("USER 65532:65532"));
    assert!(text.contains("EXPOSE 8080 8443 9901"));
    assert!(text.contains(r#"HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/weir", "healthcheck""#));
    assert!(text.contains("COPY config/docker/weir.yaml /etc/weir/weir.yaml"));
    // The image config listens where the Dockerfile says.
    let image_config = std::fs::read_to_string(root().join("config/docker/weir.yaml")).unwrap();
    assert!(image_config.contains("0.0.0.0:8080") && image_config.contains("0.0.0.0:9901"));
}

#[test]
fn healthcheck_answers_for_a_running_weir_and_fails_for_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    std::fs::write(
        &cfg,
        "listen: [{address: \"127.0.0.1:0\"}]\nadmin: {address: \"127.0.0.1:0\"}\naccess_log: false\n\
         upstreams:\n  v1: {endpoints: [\"127.0.0.1:9\"]}\nroutes:\n  - name: app\n    stable: {upstream: v1}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let ready = std::io::BufRead::lines(stderr)
        .map_while(Result::ok)
        .take(50)
        .find(|l| l.contains("weir ready"))
        .expect("weir did not start");
    let v: Value = serde_json::from_str(&ready).unwrap();
    let admin = v["fields"]["admin"].as_str().unwrap().to_owned();
    let probe = |url: &str| Command::new(env!("CARGO_BIN_EXE_weir")).args(["healthcheck", url]).status().unwrap();
    assert!(probe(&format!("http://{admin}/ready")).success());
    assert!(!probe(&format!("http://{admin}/nope")).success());
    let _ = child.kill();
    let _ = child.wait();
    assert!(!probe(&format!("http://{admin}/ready")).success());
}

/// The Prometheus scrape configuration the fleet setup needs is valid, and
/// its scrape interval is the one the gateway's routes rely on.
#[test]
fn the_fleet_scrape_config_passes_promtool_and_matches_the_gateway() {
    let path = root().join("config/prometheus/scrape.yaml");
    let out = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect("promtool must be installed (.ci/run installs the Debian package prometheus)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let scrape = std::fs::read_to_string(&path).unwrap();
    let gateway = std::fs::read_to_string(root().join("config/kubernetes/gateway.yaml")).unwrap();
    assert!(scrape.contains("scrape_interval: 15s") && gateway.contains("scrape_interval: 15s"));
    assert!(scrape.contains("weir-admin.games.svc.cluster.local"), "scrapes the headless admin Service");
}

/// The shipped alert rules load, and each alert has a unit test in
/// weir-rules.test.yaml that fires it (`promtool test rules`).
#[test]
fn the_alert_rules_pass_promtool_and_every_alert_is_tested() {
    let dir = root().join("config/prometheus");
    for args in [&["check", "rules", "weir-rules.yaml"][..], &["test", "rules", "weir-rules.test.yaml"][..]] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool must be installed (.ci/run installs the Debian package prometheus)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?}: {text}");
    }
    let rules = &documents(&dir.join("weir-rules.yaml"))[0];
    let tests = &documents(&dir.join("weir-rules.test.yaml"))[0];
    let alerts: Vec<&str> =
        rules["groups"][0]["rules"].as_array().unwrap().iter().filter_map(|r| r["alert"].as_str()).collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let fired: Vec<&str> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap().iter())
        .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|c| c["alertname"].as_str())
        .collect();
    for a in &alerts {
        assert!(fired.contains(a), "alert {a} has no test that fires it");
    }
}
