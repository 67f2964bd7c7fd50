//! `ringctl status` as text, aligned and simple, and as JSON, over a made-up cluster answer.
#![allow(clippy::unwrap_used, reason = "tests: a failure is a test failure")]

use super::*;
use ringkv_types::{LogIndex, NodeId, NodeStatus, ReplicaRole, ReplicaStatus, ShardMap, Term};

fn replica(shard: u64, node: u64, leader: Option<u64>, applied: u64) -> ReplicaStatus {
    ReplicaStatus {
        shard: ShardId(shard),
        role: ReplicaRole::Voter,
        is_leader: leader == Some(node),
        leader: leader.map(NodeId),
        term: Term(3),
        commit: LogIndex(applied),
        applied: LogIndex(applied),
    }
}

/// Two shards on nodes 1 and 2 (node 3 unreachable): shard 1 led by node 1, shard 2 leaderless.
fn status() -> ClusterStatus {
    let shards = ringkv_pd::test_support::round_robin_map(3, 2, 3).shards;
    let node = |id: u64, replicas: Vec<ReplicaStatus>| {
        (
            NodeId(id),
            format!("127.0.0.{}:7100", 10 + id),
            Ok(NodeStatus {
                node: NodeId(id),
                cluster: "test".into(),
                uptime_secs: 7,
                replicas,
                space_alarm: None,
            }),
        )
    };
    ClusterStatus {
        map: Some(ShardMap { version: 4, shards }),
        map_error: None,
        nodes: vec![
            node(1, vec![replica(1, 1, Some(1), 9), replica(2, 1, None, 5)]),
            node(2, vec![replica(1, 2, Some(1), 8), replica(2, 2, None, 5)]),
            (
                NodeId(3),
                "127.0.0.13:7100".into(),
                Err("unreachable".into()),
            ),
        ],
    }
}

#[test]
fn table_has_headers_notes_and_aligned_rows() {
    let text = text(&status(), false);
    assert!(
        text.starts_with("shard map version 4, 2 shards\n"),
        "{text}"
    );
    assert!(text.contains("NODE"), "{text}");
    assert!(text.contains("SHARD"), "{text}");
    assert!(text.contains("1 shard(s) without a known leader"), "{text}");
    let shard1 = text
        .lines()
        .find(|l| l.starts_with("s1 "))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(shard1, ["s1", "1,2,3", "n1", "3", "9", "n1:9", "n2:8"]);
}

#[test]
fn simple_has_rows_only() {
    let text = text(&status(), true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "n1, 127.0.0.11:7100, 7s, 2, 1",
            "n2, 127.0.0.12:7100, 7s, 2, 0",
            "n3, 127.0.0.13:7100, unreachable: unreachable",
            "s1, 1,2,3, n1, 3, 9, n1:9 n2:8",
            "s2, 1,2,3, -, -, -, n1:5 n2:5",
        ],
        "{text}"
    );
}

#[test]
fn json_names_leaders_and_unreachable_nodes() {
    let document = status().json();
    assert_eq!(document["map_version"], 4);
    assert_eq!(document["nodes"][2]["reachable"], false);
    assert_eq!(document["shards"][0]["leader"], 1);
    assert_eq!(document["shards"][0]["applied"]["n2"], 8);
    assert!(document["shards"][1]["leader"].is_null());
}

#[test]
fn a_space_alarm_is_shown_in_the_table_and_the_json() {
    let mut status = status();
    if let Ok(node) = &mut status.nodes[1].2 {
        node.space_alarm = Some(ringkv_types::SpaceAlarm {
            free_bytes: 12 << 20,
            reserve_bytes: 256 << 20,
        });
    }
    let table = text(&status, false);
    assert!(
        table.contains("ALARM NOSPACE: node n2 has 12 MiB free, under its reserve of 256 MiB"),
        "{table}"
    );
    assert!(!text(&status, true).contains("ALARM"));
    let document = status.json();
    assert_eq!(document["nodes"][1]["space_alarm"]["free_bytes"], 12 << 20);
    assert!(document["nodes"][0]["space_alarm"].is_null());
}
