use super::*;
use ringkv_types::NodeId;

const FILE: &str = r#"
node_id = 2
cluster = "local"
listen_addr = "127.0.0.12:7100"
data_dir = "data/node-2"
initial_cluster = ["1@127.0.0.11:7100", "2@127.0.0.12:7100", "3@127.0.0.13:7100"]
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-2.pem"
key = "certs/node-2.key"
[raft]
tick_ms = 50
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flag(field: &str, value: &str) -> (String, String, String) {
    (
        field.to_string(),
        value.to_string(),
        format!("--set {field}"),
    )
}

fn with_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("node.toml");
    std::fs::write(&path, FILE).unwrap_or_else(|e| panic!("write: {e}"));
    path
}

fn inputs(file: Option<PathBuf>, env: Vec<(String, String)>) -> ConfigInputs {
    ConfigInputs {
        file,
        env,
        flags: Vec::new(),
        working_dir: PathBuf::from("/work/dir"),
    }
}

/// Only environment variables: no file at all, every required field through `RINGKV_*`.
fn env_only() -> Vec<(String, String)> {
    env(&[
        ("RINGKV_NODE_ID", "1"),
        ("RINGKV_CLUSTER", "ringkv"),
        ("RINGKV_LISTEN_ADDR", "127.0.0.11:7100"),
        ("RINGKV_DATA_DIR", "/var/lib/ringkv"),
        (
            "RINGKV_INITIAL_CLUSTER",
            "1@127.0.0.11:7100, 2@127.0.0.12:7100,3@127.0.0.13:7100",
        ),
        ("RINGKV_TLS__CA_CERT", "/etc/ringkv/ca.pem"),
        ("RINGKV_TLS__CERT", "certs/node-1.pem"),
        ("RINGKV_TLS__KEY", "/etc/ringkv/node-1.key"),
    ])
}

#[test]
fn precedence_is_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = with_file(&dir);
    let mut input = inputs(
        Some(file.clone()),
        env(&[
            ("RINGKV_RAFT__TICK_MS", "70"),
            ("RINGKV_INITIAL_SHARDS", "8"),
            ("PATH", "/bin"),
            ("RINGKV_LOG", "debug"),
        ]),
    );
    input.flags.push(flag("raft.tick_ms", "90"));
    let layered = load(&input).unwrap_or_else(|e| panic!("load: {e}"));
    let config = &layered.config;
    assert_eq!(config.node_id, NodeId(2), "file");
    assert_eq!(config.raft.tick_ms, 90, "flag beats env beats file");
    assert_eq!(config.initial_shards, 8, "env beats default");
    assert_eq!(config.replication_factor, 3, "default");
    assert_eq!(
        config.data_dir,
        dir.path().join("data/node-2"),
        "file-relative"
    );
    assert_eq!(
        layered.sources.get("raft.tick_ms"),
        Some(&Source::Flag("--set raft.tick_ms".into()))
    );
    assert_eq!(
        layered.sources.get("initial_shards"),
        Some(&Source::Env("RINGKV_INITIAL_SHARDS".into()))
    );
    assert_eq!(layered.sources.get("node_id"), Some(&Source::File(file)));
    let printed = layered.render();
    assert!(
        printed.contains("raft.tick_ms = 90  # flag --set raft.tick_ms"),
        "{printed}"
    );
    assert!(printed.contains("initial_shards = 8  # environment RINGKV_INITIAL_SHARDS"));
    assert!(printed.contains("# replication_factor: default  (RINGKV_REPLICATION_FACTOR)"));
    assert!(
        !printed.contains("\"debug\""),
        "RINGKV_LOG is not config: {printed}"
    );
}

#[test]
fn the_file_is_optional_when_the_environment_gives_every_required_field() {
    let layered = load(&inputs(None, env_only())).unwrap_or_else(|e| panic!("load: {e}"));
    let config = &layered.config;
    assert_eq!(config.node_id, NodeId(1));
    assert_eq!(config.initial_cluster.len(), 3);
    assert_eq!(config.data_dir, Path::new("/var/lib/ringkv"));
    assert_eq!(
        config.tls.cert,
        Path::new("/work/dir/certs/node-1.pem"),
        "relative to the working dir"
    );
    let mut missing = env_only();
    missing.retain(|(name, _)| name != "RINGKV_CLUSTER");
    match load(&inputs(None, missing)) {
        Err(Error::ConfigParse { reason, .. }) => {
            assert!(reason.contains("cluster"), "{reason}");
            assert!(reason.contains("RINGKV_"), "{reason}");
        }
        other => panic!("expected a parse error naming cluster, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field_and_where_its_value_came_from() {
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "RINGKV_NODE_IDD",
            "5",
            &["RINGKV_NODE_IDD", "RINGKV_NODE_ID"],
        ),
        (
            "RINGKV_RAFT__TICK_MS",
            "fast",
            &["raft.tick_ms", "RINGKV_RAFT__TICK_MS"],
        ),
        (
            "RINGKV_RAFT__PRE_VOTE",
            "maybe",
            &["raft.pre_vote", "true or false"],
        ),
        (
            "RINGKV_NODE_ID",
            "0",
            &["node_id", "environment RINGKV_NODE_ID"],
        ),
        (
            "RINGKV_RAFT__TICK_MS",
            "0",
            &["raft.tick_ms", "environment RINGKV_RAFT__TICK_MS"],
        ),
        (
            "RINGKV_LISTEN_ADDR",
            "nowhere",
            &["listen_addr", "environment RINGKV_LISTEN_ADDR"],
        ),
    ];
    for (name, value, needles) in cases {
        let mut vars = env_only();
        vars.retain(|(n, _)| n != name);
        vars.push((name.to_string(), value.to_string()));
        let error = match load(&inputs(None, vars)) {
            Ok(_) => panic!("{name}={value}: accepted"),
            Err(error) => error.to_string(),
        };
        for needle in needles {
            assert!(
                error.contains(needle),
                "{name}={value}: `{error}` lacks `{needle}`"
            );
        }
    }
    let mut input = inputs(None, env_only());
    input.flags.push(flag("raft.tick_mss", "5"));
    let error = load(&input).map(|_| ()).unwrap_err().to_string();
    assert!(
        error.contains("raft.tick_mss") && error.contains("flag"),
        "{error}"
    );
}

#[test]
fn every_field_has_an_environment_twin() {
    let reference = env_reference();
    let names: Vec<&str> = reference.iter().map(|(_, env)| env.as_str()).collect();
    for expected in [
        "RINGKV_NODE_ID",
        "RINGKV_CLUSTER",
        "RINGKV_LISTEN_ADDR",
        "RINGKV_DATA_DIR",
        "RINGKV_INITIAL_CLUSTER",
        "RINGKV_JOIN",
        "RINGKV_TLS__CA_CERT",
        "RINGKV_TLS__CERT",
        "RINGKV_TLS__KEY",
        "RINGKV_RAFT__TICK_MS",
        "RINGKV_LIMITS__MAX_VALUE_BYTES",
        "RINGKV_PD__MAX_DOWN_TIME_MS",
        "RINGKV_DEBUG__FAULT_INJECTION",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    // Every twin is accepted (no "names no field" error) with a value of the field's type.
    let schema = crate::config::schema();
    for (field, env) in &reference {
        let value = match schema.get(field) {
            Some(FieldKind::Integer) => "1",
            Some(FieldKind::Bool) => "false",
            Some(FieldKind::Array) => "",
            _ => "x",
        };
        let mut vars = env_only();
        vars.retain(|(n, _)| n != env);
        vars.push((env.clone(), value.to_string()));
        if let Err(error) = load(&inputs(None, vars)) {
            assert!(
                !error.to_string().contains("names no config field"),
                "{env}: {error}"
            );
        }
    }
}

#[test]
fn arrays_take_commas_or_toml_and_join_works_from_the_environment() {
    let mut vars = env_only();
    vars.retain(|(n, _)| n != "RINGKV_INITIAL_CLUSTER" && n != "RINGKV_NODE_ID");
    vars.push(("RINGKV_NODE_ID".into(), "4".into()));
    vars.push((
        "RINGKV_JOIN".into(),
        r#"["127.0.0.11:7100", "127.0.0.12:7100"]"#.into(),
    ));
    let layered = load(&inputs(None, vars)).unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(layered.config.join.len(), 2);
    assert!(layered.config.initial_cluster.is_empty());
}
