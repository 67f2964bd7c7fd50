//! The Kubernetes manifests and the compose file against what the node accepts: the settings
//! they give as `RINGKV_*` variables load and validate through the node's own config layering,
//! the ports they expose are the ones those settings bind, and the probes hit the node's health
//! routes. No YAML library is in the tree; the few shapes read here are read line by line, and
//! a shape this reader does not find fails the test. The manifests were not applied to a
//! cluster (none can run here).

use ringkv_node::config_layers::{ConfigInputs, load};
use std::path::PathBuf;

fn read(path: &str) -> String {
    let full = ringkv_deploy_tests::repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `KEY: value` lines indented under the line `header` (a YAML mapping of scalars).
fn mapping_under(text: &str, header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim() == header {
            inside = Some(indent);
            continue;
        }
        if let Some(parent) = inside {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if indent <= parent {
                break;
            }
            let (key, value) = line
                .trim()
                .split_once(':')
                .unwrap_or_else(|| panic!("not KEY: value under {header}: {line}"));
            let value = value.trim().trim_matches('"').to_string();
            out.push((key.trim().to_string(), value));
        }
    }
    assert!(!out.is_empty(), "nothing under `{header}`");
    out
}

fn validate(mut env: Vec<(String, String)>, node_id: &str) {
    env.push(("RINGKV_NODE_ID".into(), node_id.into()));
    // What the image's entrypoint adds for the node.
    env.push((
        "RINGKV_TLS__CERT".into(),
        format!("/certs/node-{node_id}.pem"),
    ));
    env.push((
        "RINGKV_TLS__KEY".into(),
        format!("/certs/node-{node_id}.key"),
    ));
    let inputs = ConfigInputs {
        file: None,
        env,
        flags: Vec::new(),
        working_dir: PathBuf::from("/"),
    };
    if let Err(error) = load(&inputs) {
        panic!("node {node_id} rejects the settings: {error}");
    }
}

/// The image's ENV lines (the defaults every container starts with).
fn image_env() -> Vec<(String, String)> {
    let dockerfile = read("Dockerfile");
    let mut env = Vec::new();
    for line in dockerfile.lines() {
        let line = line
            .trim()
            .trim_start_matches("ENV ")
            .trim_end_matches('\\')
            .trim();
        if let Some((key, value)) = line.split_once('=')
            && key.starts_with("RINGKV_")
        {
            env.push((key.to_string(), value.to_string()));
        }
    }
    assert!(
        env.iter().any(|(k, _)| k == "RINGKV_LISTEN_ADDR"),
        "{env:?}"
    );
    env
}

#[test]
fn kubernetes_settings_ports_and_probes_match_the_node() {
    let config_map = mapping_under(&read("deploy/k8s/configmap.yaml"), "data:");
    for node in ["1", "2", "3"] {
        validate(config_map.clone(), node);
    }
    let get = |key: &str| {
        config_map
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    let quic_port = get("RINGKV_LISTEN_ADDR")
        .rsplit(':')
        .next()
        .map(str::to_string);
    let http_port = get("RINGKV_HTTP_ADDR")
        .rsplit(':')
        .next()
        .map(str::to_string);
    let statefulset = read("deploy/k8s/statefulset.yaml");
    let services = read("deploy/k8s/services.yaml");
    for (port, protocol) in [(&quic_port, "UDP"), (&http_port, "TCP")] {
        let port = port.as_deref().unwrap_or_default();
        assert!(
            statefulset.contains(&format!("containerPort: {port}, protocol: {protocol}")),
            "the StatefulSet does not expose {port}/{protocol}"
        );
        assert!(
            services.contains(&format!("port: {port}, protocol: {protocol}")),
            "the Services do not expose {port}/{protocol}"
        );
    }
    // Every initial_cluster name is a pod of the headless service.
    for entry in get("RINGKV_INITIAL_CLUSTER").split(',') {
        assert!(entry.contains(".ringkv-peer:"), "{entry}");
    }
    assert!(statefulset.contains("serviceName: ringkv-peer"));
    assert!(services.contains("name: ringkv-peer") && services.contains("clusterIP: None"));
    assert!(statefulset.contains("replicas: 3"));
    assert!(statefulset.contains("volumeClaimTemplates:"));
    assert!(services.contains("maxUnavailable: 1"));
    // Probes: the health routes the node serves.
    let routes = read("crates/node/src/http/mod.rs");
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        let after = statefulset
            .split_once(&format!("{probe}:"))
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no {probe}"));
        let first_path = after
            .split("path: ")
            .nth(1)
            .and_then(|r| r.split(',').next());
        assert_eq!(first_path, Some(path), "{probe}");
        assert!(
            routes.contains(&format!("\"{path}\"")),
            "the node has no route {path}"
        );
        assert!(after.contains("scheme: HTTPS"), "{probe} must use HTTPS");
    }
}

#[test]
fn compose_settings_over_the_image_defaults_are_accepted() {
    let compose = read("deploy/compose.yaml");
    let shared = mapping_under(&compose, "environment: &node-env");
    let mut env = image_env();
    for (key, value) in shared {
        // `${VAR:-default}` as compose expands it with VAR unset.
        let value = match value.split_once(":-") {
            Some((_, default)) => default.trim_end_matches('}').to_string(),
            None => value,
        };
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    for node in ["1", "2", "3"] {
        validate(env.clone(), node);
        assert!(compose.contains(&format!("RINGKV_NODE_ID: \"{node}\"")));
        assert!(compose.contains(&format!("--node={node}=ringkv-{node},")));
    }
}
