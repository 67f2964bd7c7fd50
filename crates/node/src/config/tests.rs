//! Parsing and validation of node configs: defaults, paths, named errors, the examples.

use super::*;

const GOOD: &str = r#"
node_id = 2
cluster = "local"
listen_addr = "127.0.0.12:7100"
data_dir = "data/node-2"
initial_cluster = ["1@127.0.0.11:7100", "2@127.0.0.12:7100", "3@127.0.0.13:7100"]
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-2.pem"
key = "/abs/node-2.key"
"#;

#[test]
fn a_minimal_file_gets_defaults_and_resolved_paths() {
    let config = NodeConfig::parse(GOOD, Path::new("/etc/ringkv")).unwrap();
    assert_eq!(config.node_id, NodeId(2));
    assert_eq!(config.initial_shards, 16);
    assert_eq!(config.replication_factor, 3);
    assert_eq!(config.data_dir, Path::new("/etc/ringkv/data/node-2"));
    assert_eq!(config.tls.key, Path::new("/abs/node-2.key"));
    assert_eq!(config.raft.tick_ms, 100);
    assert_eq!(config.limits.max_key_bytes, 4096);
    assert_eq!(config.initial_cluster[2].to_string(), "3@127.0.0.13:7100");
}

#[test]
fn bad_fields_are_named() {
    let cases: [(&str, &str, &str); 11] = [
        ("node_id = 2", "node_id = 0", "node_id"),
        ("node_id = 2", "node_id = 4294967296", "node_id"),
        (
            "\"3@127.0.0.13:7100\"",
            "\"4294967299@127.0.0.13:7100\"",
            "initial_cluster",
        ),
        ("node_id = 2", "node_id = 4", "initial_cluster"),
        (
            "\"2@127.0.0.12:7100\"",
            "\"2127.0.0.12:7100\"",
            "initial_cluster",
        ),
        (
            "\"2@127.0.0.12:7100\"",
            "\"1@127.0.0.12:7100\"",
            "initial_cluster",
        ),
        ("cluster = \"local\"", "cluster = \"no spaces\"", "cluster"),
        (
            "listen_addr = \"127.0.0.12:7100\"",
            "listen_addr = \"x\"",
            "listen_addr",
        ),
        (
            "[tls]",
            "replication_factor = 4\n[tls]",
            "replication_factor",
        ),
        ("[tls]", "initial_shards = 0\n[tls]", "initial_shards"),
        (
            "key = \"/abs/node-2.key\"",
            "key = \"k\"\n[raft]\nheartbeat_ticks = 20",
            "raft",
        ),
    ];
    for (from, to, field) in cases {
        let text = GOOD.replace(from, to);
        match NodeConfig::parse(&text, Path::new(".")) {
            Err(Error::ConfigInvalid { field: got, .. }) => {
                assert!(got.starts_with(field), "{to}: got field {got}");
            }
            other => panic!("{to}: expected an invalid field, got {other:?}"),
        }
    }
}

#[test]
fn a_node_either_bootstraps_or_joins() {
    let joining = GOOD.replace(
        "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
        "join = [\"127.0.0.11:7100\"]\nnode_id = 4",
    )
    .replace("node_id = 2\n", "");
    let config = NodeConfig::parse(&joining, Path::new("/")).unwrap();
    assert!(config.initial_cluster.is_empty());
    assert!(!config.hosts_pd());
    assert_eq!(config.join, vec!["127.0.0.11:7100".to_string()]);
    let cases: [(&str, &str, &str); 5] = [
        (
            "key = \"/abs/node-2.key\"",
            "key = \"k\"\n[pd]\nmax_operators = 0",
            "pd.max_operators",
        ),
        (
            "key = \"/abs/node-2.key\"",
            "key = \"k\"\n[pd]\nheartbeat_timeout_ms = 100",
            "pd.heartbeat_timeout_ms",
        ),
        (
            "key = \"/abs/node-2.key\"",
            "key = \"k\"\n[pd]\ntick_interval_ms = 0",
            "pd.tick_interval_ms",
        ),
        ("[tls]", "join = [\"127.0.0.11:7100\"]\n[tls]", "join"),
        ("initial_cluster = [", "initial_clusterx = [", ""),
    ];
    for (from, to, field) in cases {
        let text = GOOD.replace(from, to);
        match NodeConfig::parse(&text, Path::new(".")) {
            Err(Error::ConfigInvalid { field: got, .. }) => assert_eq!(got, field, "{to}"),
            Err(Error::ConfigParse { .. }) if field.is_empty() => {}
            other => panic!("{to}: expected an invalid field, got {other:?}"),
        }
    }
    let neither = GOOD.replace(
        "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
        "",
    );
    assert!(matches!(
        NodeConfig::parse(&neither, Path::new(".")),
        Err(Error::ConfigInvalid {
            field: "initial_cluster",
            ..
        })
    ));
    let wildcard = joining.replace("127.0.0.12:7100\"", "0.0.0.0:7100\"");
    assert!(matches!(
        NodeConfig::parse(&wildcard, Path::new(".")),
        Err(Error::ConfigInvalid {
            field: "listen_addr",
            ..
        })
    ));
}

#[test]
fn http_is_https_unless_plain_on_loopback() {
    assert!(
        NodeConfig::parse(GOOD, Path::new("."))
            .unwrap()
            .http
            .is_none()
    );
    let https = GOOD.replace("[tls]", "http_addr = \"0.0.0.0:8100\"\n[tls]");
    let http = NodeConfig::parse(&https, Path::new("."))
        .unwrap()
        .http
        .unwrap();
    assert!(http.tls);
    assert_eq!(http.addr, "0.0.0.0:8100".parse().unwrap());
    assert_eq!(http.slow_request, Duration::from_secs(1));
    let plain = GOOD.replace(
        "[tls]",
        "http_addr = \"127.0.0.12:8100\"\nhttp_tls = false\nslow_request_ms = 5\n[tls]",
    );
    let http = NodeConfig::parse(&plain, Path::new("."))
        .unwrap()
        .http
        .unwrap();
    assert!(!http.tls);
    assert_eq!(http.slow_request, Duration::from_millis(5));
    for (text, field) in [
        (
            "http_addr = \"10.0.0.1:8100\"\nhttp_tls = false",
            "http_tls",
        ),
        ("http_addr = \"0.0.0.0:8100\"\nhttp_tls = false", "http_tls"),
        ("http_addr = \"localhost:8100\"", "http_addr"),
        (
            "http_addr = \"127.0.0.1:1\"\nslow_request_ms = 0",
            "slow_request_ms",
        ),
    ] {
        let bad = GOOD.replace("[tls]", &format!("{text}\n[tls]"));
        match NodeConfig::parse(&bad, Path::new(".")) {
            Err(Error::ConfigInvalid { field: got, .. }) => assert_eq!(got, field, "{text}"),
            other => panic!("{text}: expected an invalid field, got {other:?}"),
        }
    }
    let json = GOOD.replace("[tls]", "log_format = \"json\"\n[tls]");
    assert_eq!(
        NodeConfig::parse(&json, Path::new(".")).unwrap().log_format,
        LogFormat::Json
    );
    let bad = GOOD.replace("[tls]", "log_format = \"xml\"\n[tls]");
    assert!(matches!(
        NodeConfig::parse(&bad, Path::new(".")),
        Err(Error::ConfigParse { .. })
    ));
}

#[test]
fn typos_and_missing_fields_are_parse_errors() {
    let typo = GOOD.replace("[tls]", "initial_shard = 8\n[tls]");
    assert!(matches!(
        NodeConfig::parse(&typo, Path::new(".")),
        Err(Error::ConfigParse { reason, .. }) if reason.contains("initial_shard")
    ));
    let missing = GOOD.replace("cluster = \"local\"", "");
    assert!(matches!(
        NodeConfig::parse(&missing, Path::new(".")),
        Err(Error::ConfigParse { .. })
    ));
    let limits = GOOD.to_string() + "[limits]\nmax_key_bytes = 0\n";
    assert!(matches!(
        NodeConfig::parse(&limits, Path::new(".")),
        Err(Error::ConfigInvalid {
            field: "limits.max_key_bytes",
            ..
        })
    ));
}

#[test]
fn connection_and_request_limits_are_checked_by_name() {
    let parsed = NodeConfig::parse(GOOD, Path::new(".")).unwrap();
    assert_eq!(parsed.limits.client_timeout_max_ms, 30_000);
    assert!(parsed.limits.client_address_validation);
    assert!(parsed.limits.max_client_connections < parsed.limits.max_connections);
    for (table, field) in [
        (
            "client_timeout_max_ms = 1000\n",
            "limits.client_timeout_max_ms",
        ),
        (
            "client_read_timeout_ms = 0\n",
            "limits.client_read_timeout_ms",
        ),
        (
            "client_write_timeout_ms = 0\n",
            "limits.client_write_timeout_ms",
        ),
        (
            "client_idle_timeout_ms = 0\n",
            "limits.client_idle_timeout_ms",
        ),
        (
            "max_client_connections = 0\n",
            "limits.max_client_connections",
        ),
        (
            "client_inbound_bytes_max = 1048576\n",
            "limits.client_inbound_bytes_max",
        ),
        (
            "raft_inbound_bytes_max = 1048576\n",
            "limits.raft_inbound_bytes_max",
        ),
    ] {
        let text = GOOD.to_string() + "[limits]\n" + table;
        match NodeConfig::parse(&text, Path::new(".")) {
            Err(Error::ConfigInvalid { field: named, .. }) => assert_eq!(named, field),
            other => panic!("{table}: expected {field} to be refused, got {other:?}"),
        }
    }
    let text = GOOD.to_string()
        + "[limits]\nmax_client_connections = 10\nclient_address_validation = false\n";
    let parsed = NodeConfig::parse(&text, Path::new(".")).unwrap();
    assert_eq!(parsed.limits.max_client_connections, 10);
    assert!(!parsed.limits.client_address_validation);
}

#[test]
fn the_documented_examples_are_valid() {
    let example = include_str!("../../../../config/node.example.toml");
    let config = NodeConfig::parse(example, Path::new("/x/config")).unwrap();
    assert_eq!(config.initial_cluster.len(), 3);
    assert_eq!(config.raft.log_compaction_entries, 100_000);
    assert!(!config.debug.fault_injection);
    for (id, text) in [
        (1, include_str!("../../../../config/local-3/node-1.toml")),
        (2, include_str!("../../../../config/local-3/node-2.toml")),
        (3, include_str!("../../../../config/local-3/node-3.toml")),
    ] {
        let config = NodeConfig::parse(text, Path::new("/x/config/local-3")).unwrap();
        assert_eq!(config.node_id, NodeId(id));
        assert_eq!(
            config.address_of(NodeId(id)),
            Some(config.listen_addr.to_string().as_str())
        );
        assert_eq!(config.advertise_addr, config.listen_addr.to_string());
    }
}

#[test]
fn addresses_may_be_dns_names_and_advertise_defaults_sensibly() {
    let named = GOOD
        .replace("127.0.0.11:7100", "ringkv-1:7100")
        .replace("\"2@127.0.0.12:7100\"", "\"2@ringkv-2.ringkv.svc:7100\"")
        .replace("127.0.0.13:7100", "ringkv-3:7100")
        .replace(
            "listen_addr = \"127.0.0.12:7100\"",
            "listen_addr = \"0.0.0.0:7100\"",
        );
    let config = NodeConfig::parse(&named, Path::new("/")).unwrap();
    assert_eq!(
        config.advertise_addr, "ringkv-2.ringkv.svc:7100",
        "own initial entry"
    );
    assert_eq!(config.address_of(NodeId(1)), Some("ringkv-1:7100"));
    let explicit = named.replace(
        "[tls]",
        "advertise_addr = \"ringkv-2.ringkv.svc:7100\"\n[tls]",
    );
    assert!(NodeConfig::parse(&explicit, Path::new("/")).is_ok());
    let other = named.replace("[tls]", "advertise_addr = \"elsewhere:7100\"\n[tls]");
    assert!(matches!(
        NodeConfig::parse(&other, Path::new("/")),
        Err(Error::ConfigInvalid {
            field: "advertise_addr",
            ..
        })
    ));
    // A joining node on 0.0.0.0 needs advertise_addr; join entries may be names.
    let joining = GOOD
        .replace(
            "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
            "join = [\"ringkv-1:7100\", \"10.0.0.1:7100\"]",
        )
        .replace("node_id = 2", "node_id = 4")
        .replace("listen_addr = \"127.0.0.12:7100\"", "listen_addr = \"0.0.0.0:7100\"");
    assert!(matches!(
        NodeConfig::parse(&joining, Path::new("/")),
        Err(Error::ConfigInvalid {
            field: "listen_addr",
            ..
        })
    ));
    let joining = joining.replace("[tls]", "advertise_addr = \"ringkv-4:7100\"\n[tls]");
    let config = NodeConfig::parse(&joining, Path::new("/")).unwrap();
    assert_eq!(config.advertise_addr, "ringkv-4:7100");
    assert_eq!(config.join, vec!["ringkv-1:7100", "10.0.0.1:7100"]);
    for bad in ["ringkv-4", "ringkv-4:0", "bad name:1"] {
        let text = joining.replace("ringkv-4:7100", bad);
        assert!(
            matches!(
                NodeConfig::parse(&text, Path::new("/")),
                Err(Error::ConfigInvalid {
                    field: "advertise_addr",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

/// `[pd]` mirrors PD's `Settings` (plus the node's own timing fields) and
/// [`NodeConfig::pd_settings`] is the one conversion: every setting needs its `pd.` key with
/// PD's default, so a setting added to PD cannot be forgotten here.
#[test]
fn every_pd_setting_has_its_pd_key_and_pds_default() {
    let keys = schema();
    let defaults = ringkv_pd::Settings::default();
    let names = serde_json::to_value(&defaults).unwrap();
    for name in names.as_object().unwrap().keys() {
        if name == "replication_factor" {
            // Top level (`replication_factor`), shared with the initial shard map.
            assert!(keys.contains_key(name.as_str()), "{name}");
            continue;
        }
        assert!(keys.contains_key(&format!("pd.{name}")), "no pd.{name} key");
    }
    let config = NodeConfig::parse(GOOD, Path::new("/etc/ringkv")).unwrap();
    assert_eq!(
        config.pd_settings(),
        ringkv_pd::Settings {
            replication_factor: 3,
            ..defaults
        }
    );
}

/// `[raft]` mirrors the Raft core's tunables (plus the node's own `tick_ms` and
/// `log_compaction_entries`) and [`NodeConfig::raft_config`] is the one conversion: every key,
/// set to a value other than its default, reaches the core's `Config`. A key added to `[raft]`
/// fails here until the conversion and this test carry it.
#[test]
fn every_raft_key_reaches_the_cores_config() {
    let node_only = ["log_compaction_entries", "tick_ms"];
    let mirrored = [
        "check_quorum",
        "election_timeout_ticks",
        "heartbeat_ticks",
        "lease_margin_ticks",
        "max_apply_bytes",
        "max_inflight_messages",
        "max_message_bytes",
        "max_pending_reads",
        "max_uncommitted_bytes",
        "pre_vote",
        "quiesce",
    ];
    let keys: std::collections::BTreeSet<String> = schema()
        .keys()
        .filter_map(|key| key.strip_prefix("raft.").map(str::to_string))
        .collect();
    let expected: std::collections::BTreeSet<String> = node_only
        .iter()
        .chain(&mirrored)
        .map(|key| key.to_string())
        .collect();
    assert_eq!(
        keys, expected,
        "a [raft] key without its place in raft_config"
    );
    let defaults = RaftConfig::default();
    let (inflight, message, uncommitted, apply, reads) = (
        defaults.max_inflight_messages + 1,
        defaults.max_message_bytes + 1,
        defaults.max_uncommitted_bytes + 1,
        defaults.max_apply_bytes + 1,
        defaults.max_pending_reads + 1,
    );
    // Values unlike both defaults (the node's and the core's); the switches both ways.
    for switch in [false, true] {
        let text = format!(
            "{GOOD}[raft]
election_timeout_ticks = 11
heartbeat_ticks = 3
lease_margin_ticks = 3
max_inflight_messages = {inflight}
max_message_bytes = {message}
max_uncommitted_bytes = {uncommitted}
max_apply_bytes = {apply}
max_pending_reads = {reads}
pre_vote = {switch}
check_quorum = {switch}
quiesce = {switch}
"
        );
        let config = NodeConfig::parse(&text, Path::new("/")).unwrap();
        let core = config.raft_config(ringkv_types::ShardId(3), NodeId(2));
        assert_eq!(
            (
                core.election_timeout_ticks,
                core.heartbeat_ticks,
                core.lease_margin_ticks,
                core.max_inflight_messages,
                core.max_message_bytes,
                core.max_uncommitted_bytes,
                core.max_apply_bytes,
                core.max_pending_reads,
            ),
            (11, 3, 3, inflight, message, uncommitted, apply, reads)
        );
        assert_eq!(
            (core.pre_vote, core.check_quorum, core.quiesce),
            (switch, switch, switch)
        );
    }
}
