//! Rendering tests over a PD state built by applying real commands.
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use super::*;
use ringkv_pd::Apply;
use ringkv_types::pd::{
    AdminOperator, Command, NodeRegistration, NodeState, NodeStats, ShardReport, ShardStats, Step,
};
use ringkv_types::{ShardId, ShardMap};

/// Four nodes (node 4 joined later and holds nothing), four shards on nodes 1..=3, leaders
/// reported for shards 1..=3 (all on node 1), an admin move of shard 2 in flight, node 3 draining.
fn state() -> PdState {
    let mut state = PdState::new();
    let registration = |id: u64| NodeRegistration {
        addr: format!("127.0.0.{}:7100", 10 + id),
        labels: BTreeMap::new(),
        capacity_bytes: 10 << 30,
    };
    let shards = ringkv_pd::test_support::round_robin_map(3, 4, 3).shards;
    let commands = vec![
        Command::Bootstrap {
            cluster_id: 1,
            cluster_name: "local".into(),
            nodes: (1..=3).map(|id| (NodeId(id), registration(id))).collect(),
            shard_map: ShardMap {
                version: 1,
                shards: shards.clone(),
            },
            settings: Settings::default(),
            now_ms: 1,
        },
        Command::RegisterNode {
            node: registration(4),
            now_ms: 2,
        },
        Command::NodeHeartbeat {
            node: NodeId(1),
            stats: NodeStats {
                capacity_bytes: 10 << 30,
                available_bytes: 9 << 30,
                ..NodeStats::default()
            },
            now_ms: 3,
        },
    ];
    for command in &commands {
        state.apply(command).unwrap();
    }
    for descriptor in shards.iter().take(3) {
        let report = ShardReport {
            descriptor: descriptor.clone(),
            leader: NodeId(1),
            stats: ShardStats {
                size_bytes: 3 << 20,
                ..ShardStats::default()
            },
            caught_up_learners: Vec::new(),
            split_hint: None,
            now_ms: 4,
        };
        state.apply(&Command::ShardReport(report)).unwrap();
    }
    let operator = AdminOperator::MoveReplica {
        shard: ShardId(2),
        from: NodeId(2),
        to: NodeId(4),
    };
    state
        .apply(&Command::AddOperator {
            operator,
            now_ms: 5,
        })
        .unwrap();
    state
        .apply(&Command::SetNodeState {
            node: NodeId(3),
            state: NodeState::Draining,
            now_ms: 6,
        })
        .unwrap();
    state.check_invariants();
    state
}

/// The cells of the table line whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|c| !c.is_empty()))
        .map(Iterator::collect::<Vec<_>>)
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{table}"))
}

#[test]
fn nodes_table_lists_state_counts_and_usage() {
    let table = nodes_table(&state());
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_eq!(
        row(&table, "ID"),
        [
            "ID", "ADDRESS", "STATE", "REPLICAS", "LEADERS", "CAPACITY", "USED"
        ]
    );
    assert_eq!(
        row(&table, "1"),
        [
            "1",
            "127.0.0.11:7100",
            "Up",
            "4",
            "3",
            "10.0 GiB",
            "1.0 GiB"
        ]
    );
    assert_eq!(row(&table, "3")[2], "Draining");
    assert_eq!(
        row(&table, "4"),
        ["4", "127.0.0.14:7100", "Up", "0", "0", "10.0 GiB", "-"]
    );
}

#[test]
fn shards_table_shows_arcs_roles_leaders_sizes_and_operators() {
    let table = shards_table(&state());
    assert_eq!(table.lines().count(), 5, "{table}");
    let first = row(&table, "1");
    assert_eq!(
        first,
        [
            "1",
            "0000000000000000..4000000000000000",
            "1.1",
            "1,2,3",
            "1",
            "3.0 MiB",
            "-"
        ]
    );
    let moving = row(&table, "2");
    assert_eq!(
        moving.last().copied(),
        Some("op1 admin: add learner on n4 (step 1/3)")
    );
    let last = row(&table, "4");
    assert_eq!(last.get(1).copied(), Some("c000000000000000..end"));
    assert_eq!(last.get(4).copied(), Some("-"), "no leader reported");
}

#[test]
fn json_output_parses_and_carries_the_fields() {
    let state = state();
    for value in [
        nodes_json(&state, None),
        shards_json(&state),
        schedulers_json(&state.settings),
        Balance::of(&state).json(),
        operators_json(&ringkv_pd::plan(&state)),
    ] {
        let text = serde_json::to_string_pretty(&value).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, value);
    }
    let nodes = nodes_json(&state, None);
    assert_eq!(nodes["nodes"][2]["state"], "Draining");
    assert_eq!(nodes["nodes"][0]["used_bytes"], 1u64 << 30);
    let shards = shards_json(&state);
    assert_eq!(shards["shards"][1]["operator"]["kind"], "admin");
    assert_eq!(shards["shards"][0]["replicas"][0]["role"], "voter");
    assert_eq!(shards["shards"][3]["arc"]["end"], Value::Null);
    assert_eq!(
        schedulers_json(&state.settings)["schedulers"]["balance-replicas"],
        true
    );
}

#[test]
fn balance_counts_only_up_nodes() {
    let state = state();
    let balance = Balance::of(&state);
    // Node 3 is draining: not counted. Node 4 is up with nothing.
    assert_eq!(
        balance.replicas.keys().copied().collect::<Vec<_>>(),
        [NodeId(1), NodeId(2), NodeId(4)]
    );
    assert_eq!(balance.replica_spread(), 4);
    assert_eq!(balance.leader_spread(), 3);
    assert!(!balance.is_balanced());
    assert_eq!(
        balance.line(),
        "replicas n1=4 n2=4 n4=0 | leaders n1=3 n2=0 n4=0 | 1 operator(s) in flight"
    );
    let even = Balance {
        replicas: [(NodeId(1), 3), (NodeId(2), 2)].into(),
        leaders: [(NodeId(1), 1), (NodeId(2), 1)].into(),
        operators: 0,
    };
    assert!(even.is_balanced());
}

#[test]
fn schedulers_and_settings_parse() {
    let cases = [
        ("repair", Some(SchedulerKind::Repair)),
        ("balance-replicas", Some(SchedulerKind::BalanceReplicas)),
        ("Balance_Leaders", Some(SchedulerKind::BalanceLeaders)),
        ("drain", Some(SchedulerKind::Drain)),
        ("split", Some(SchedulerKind::Split)),
        ("balance", None),
    ];
    for (name, expected) in cases {
        assert_eq!(parse_scheduler(name), expected, "{name}");
    }
    let settings = Settings::default();
    let changed = set_setting(&settings, "max-operators", "4").unwrap();
    assert_eq!(changed.max_operators, 4);
    let off = set_setting(&settings, "split", "off").unwrap();
    assert!(!off.split);
    assert!(
        set_setting(&settings, "nope", "1")
            .unwrap_err()
            .contains("unknown setting")
    );
    assert!(set_setting(&settings, "max_operators", "-1").is_err());
    assert!(set_setting(&settings, "replication_factor", "99999999999").is_err());
    assert!(set_setting(&settings, "repair", "maybe").is_err());
    let listed = schedulers_table(&settings);
    assert_eq!(row(&listed, "balance-leaders"), ["balance-leaders", "yes"]);
    assert_eq!(row(&listed, "max_operators"), ["max_operators", "16"]);
}

#[test]
fn sizes_and_steps_read_well() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    let plan = ringkv_pd::plan(&state());
    let table = operators_table(&plan);
    assert_eq!(table.lines().count(), plan.len() + 1);
    assert_eq!(
        step_text(&Step::Split {
            new_shard: ShardId(9),
            at: 1 << 63
        }),
        "split at 8000000000000000 (new s9)"
    );
}

#[test]
fn a_progress_line_names_a_few_operators_in_flight() {
    let mut state = state();
    assert_eq!(
        few_operators_text(&state),
        ": op1 admin: add learner on n4 (step 1/3) on shard 2"
    );
    state.operators.clear();
    assert_eq!(few_operators_text(&state), "", "nothing in flight");
}
