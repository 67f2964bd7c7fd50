//! Principal x request -> allowed or denied, one row per request. Flipping any letter of the
//! table fails the test.

use super::principal::Grant;
use super::{Principal, authorize};
use bytes::Bytes;
use ringkv_pd::{
    AdminOperator, Command, NodeRegistration, NodeState, NodeStats, SchedulerKind, ShardReport,
    ShardStats,
};
use ringkv_types::namespace::encode;
use ringkv_types::{
    AdminRequest, BatchOp, Epoch, KvOp, KvRequest, NodeId, ReadConsistency, Request, Secret,
    ShardDescriptor, ShardId, WatchRequest, WatchTarget, WireError,
};
use std::collections::BTreeMap;

/// The principals, in the order of the letters in each row.
fn principals() -> Vec<(&'static str, Principal)> {
    vec![
        ("node 1", Principal::Node(NodeId(1))),
        ("node 2", Principal::Node(NodeId(2))),
        ("root", Principal::root()),
        ("admin dora", Principal::user("dora", true, vec![])),
        ("alice", Principal::user("alice", false, vec![])),
        (
            "bob read:alice",
            Principal::user("bob", false, vec![Grant::Read("alice".into())]),
        ),
        (
            "carol readwrite:alice",
            Principal::user("carol", false, vec![Grant::ReadWrite("alice".into())]),
        ),
        ("eve", Principal::user("eve", false, vec![])),
    ]
}

fn kv(op: KvOp) -> Request {
    Request::Kv(KvRequest {
        shard: ShardId(1),
        epoch: Epoch::default(),
        session: None,
        timeout_ms: 0,
        op,
    })
}

fn key(ns: &str) -> Bytes {
    encode(ns, b"x").unwrap()
}

fn get(ns: &str, consistency: ReadConsistency) -> Request {
    kv(KvOp::Get {
        key: key(ns),
        consistency,
    })
}

fn scan(prefix: Bytes) -> Request {
    kv(KvOp::Scan {
        start: Bytes::new(),
        prefix,
        limit: 10,
        keys_only: false,
        consistency: ReadConsistency::Linearizable,
    })
}

fn watch(target: WatchTarget) -> Request {
    Request::Watch(WatchRequest {
        shard: ShardId(1),
        target,
        after: None,
    })
}

fn pd(command: Command) -> Request {
    Request::Admin(AdminRequest::Pd {
        command: postcard::to_stdvec(&command).unwrap().into(),
    })
}

fn report(leader: u64) -> Command {
    Command::ShardReport(ShardReport {
        descriptor: ShardDescriptor {
            id: ShardId(1),
            arc: ringkv_types::ring::Arc::FULL,
            epoch: Epoch::default(),
            replicas: Vec::new(),
        },
        leader: NodeId(leader),
        stats: ShardStats::default(),
        caught_up_learners: Vec::new(),
        split_hint: None,
        now_ms: 0,
    })
}

fn registration() -> NodeRegistration {
    NodeRegistration {
        addr: "127.0.0.1:1".into(),
        labels: BTreeMap::new(),
        capacity_bytes: 0,
    }
}

/// `A` = allowed, `D` = `PermissionDenied`, `I` = `InvalidRequest`; one letter per principal
/// of [`principals`]: node 1, node 2, root, dora (admin), alice, bob (read:alice),
/// carol (readwrite:alice), eve.
fn table() -> Vec<(&'static str, Request, &'static str)> {
    let put = |ns: &str| {
        kv(KvOp::Put {
            key: key(ns),
            value: Bytes::from_static(b"v"),
        })
    };
    vec![
        // Data in alice's namespace: every operation and every read consistency.
        (
            "get alice linearizable",
            get("alice", ReadConsistency::Linearizable),
            "AAAAAAAD",
        ),
        (
            "get alice lease",
            get("alice", ReadConsistency::Lease),
            "AAAAAAAD",
        ),
        (
            "get alice stale",
            get("alice", ReadConsistency::Stale),
            "AAAAAAAD",
        ),
        (
            "exists alice (HAS)",
            kv(KvOp::Exists {
                key: key("alice"),
                consistency: ReadConsistency::Lease,
            }),
            "AAAAAAAD",
        ),
        ("put alice", put("alice"), "AAAAADAD"),
        (
            "delete alice",
            kv(KvOp::Delete { key: key("alice") }),
            "AAAAADAD",
        ),
        (
            "cas alice",
            kv(KvOp::CompareAndSwap {
                key: key("alice"),
                expected: None,
                new: Some(Bytes::from_static(b"v")),
            }),
            "AAAAADAD",
        ),
        (
            "batch alice",
            kv(KvOp::Batch {
                ops: vec![BatchOp::Delete { key: key("alice") }],
            }),
            "AAAAADAD",
        ),
        // One foreign key in a batch refuses the whole batch.
        (
            "batch eve then alice",
            kv(KvOp::Batch {
                ops: vec![
                    BatchOp::Delete { key: key("eve") },
                    BatchOp::Put {
                        key: key("alice"),
                        value: Bytes::from_static(b"v"),
                    },
                ],
            }),
            "AAAADDDD",
        ),
        (
            "get many alice",
            kv(KvOp::GetMany {
                keys: vec![key("alice"), encode("alice", b"y").unwrap()],
                consistency: ReadConsistency::Linearizable,
            }),
            "AAAAAAAD",
        ),
        // One foreign key in a batch get refuses the whole read.
        (
            "get many alice then eve",
            kv(KvOp::GetMany {
                keys: vec![key("alice"), key("eve")],
                consistency: ReadConsistency::Stale,
            }),
            "AAAADDDD",
        ),
        (
            "cas version alice",
            kv(KvOp::CompareVersionAndSwap {
                key: key("alice"),
                expected_version: 0,
                new: Some(Bytes::from_static(b"v")),
            }),
            "AAAAADAD",
        ),
        (
            "scan alice",
            scan(encode("alice", b"").unwrap()),
            "AAAAAAAD",
        ),
        // Watches read: a key or a whole-namespace prefix the principal may read.
        (
            "watch key alice",
            watch(WatchTarget::Key(key("alice"))),
            "AAAAAAAD",
        ),
        (
            "watch prefix alice",
            watch(WatchTarget::Prefix(encode("alice", b"").unwrap())),
            "AAAAAAAD",
        ),
        (
            "watch prefix eve",
            watch(WatchTarget::Prefix(encode("eve", b"p").unwrap())),
            "AAAADDDA",
        ),
        (
            "watch raw prefix (no namespace)",
            watch(WatchTarget::Prefix(Bytes::new())),
            "AAAAIIII",
        ),
        ("scan alice prefix", scan(key("alice")), "AAAAAAAD"),
        ("scan eve", scan(encode("eve", b"").unwrap()), "AAAADDDA"),
        // A scan must name a whole namespace: a bare or cut prefix spans namespaces.
        ("scan everything", scan(Bytes::new()), "AAAAIIII"),
        (
            "scan cut namespace",
            scan(Bytes::from_static(b"\x05ali")),
            "AAAAIIII",
        ),
        ("get eve", get("eve", ReadConsistency::Stale), "AAAADDDA"),
        ("put eve", put("eve"), "AAAADDDA"),
        // A namespace named like a prefix of alice's is another namespace.
        ("put alic", put("alic"), "AAAADDDD"),
        (
            "raw key",
            kv(KvOp::Get {
                key: Bytes::from_static(b"x"),
                consistency: ReadConsistency::Stale,
            }),
            "AAAAIIII",
        ),
        (
            "empty key",
            kv(KvOp::Delete { key: Bytes::new() }),
            "AAAAIIII",
        ),
        // Routing and login: everyone.
        (
            "shard map",
            Request::Admin(AdminRequest::GetShardMap),
            "AAAAAAAA",
        ),
        (
            "shard",
            Request::Admin(AdminRequest::GetShard { shard: ShardId(1) }),
            "AAAAAAAA",
        ),
        ("nodes", Request::Admin(AdminRequest::GetNodes), "AAAAAAAA"),
        (
            "node status",
            Request::Admin(AdminRequest::NodeStatus),
            "AAAAAAAA",
        ),
        (
            "login",
            Request::Admin(AdminRequest::Login {
                user: "alice".into(),
                password: Secret::new("pw"),
            }),
            "AAAAAAAA",
        ),
        // Administration: nodes and admins.
        (
            "pd state",
            Request::Admin(AdminRequest::PdState),
            "AAAADDDD",
        ),
        (
            "pd plan",
            Request::Admin(AdminRequest::PdPlan { balancing: true }),
            "AAAADDDD",
        ),
        (
            "change replica",
            Request::Admin(AdminRequest::ChangeReplica {
                shard: ShardId(1),
                epoch: Epoch::default(),
                change: ringkv_types::ReplicaChange::Remove { node: NodeId(2) },
            }),
            "AAAADDDD",
        ),
        (
            "transfer leader",
            Request::Admin(AdminRequest::TransferLeader {
                shard: ShardId(1),
                to: NodeId(2),
            }),
            "AAAADDDD",
        ),
        (
            "split shard",
            Request::Admin(AdminRequest::SplitShard {
                shard: ShardId(1),
                epoch: Epoch::default(),
                new_shard: ShardId(9),
                at: None,
            }),
            "AAAADDDD",
        ),
        (
            "inspect",
            Request::Admin(AdminRequest::Inspect(
                ringkv_types::inspect::InspectRequest::Data {
                    shard: None,
                    limit: 10,
                },
            )),
            "AAAADDDD",
        ),
        (
            "set faults",
            Request::Admin(AdminRequest::SetFaults {
                cut: vec![NodeId(2)],
            }),
            "AAAADDDD",
        ),
        (
            "inspect data",
            Request::Admin(AdminRequest::Inspect(
                ringkv_types::inspect::InspectRequest::Data {
                    shard: None,
                    limit: 10,
                },
            )),
            "AAAADDDD",
        ),
        (
            "move shard",
            pd(Command::AddOperator {
                operator: AdminOperator::MoveReplica {
                    shard: ShardId(1),
                    from: NodeId(1),
                    to: NodeId(2),
                },
                now_ms: 0,
            }),
            "AAAADDDD",
        ),
        (
            "drain node",
            pd(Command::SetNodeState {
                node: NodeId(2),
                state: NodeState::Draining,
                now_ms: 0,
            }),
            "AAAADDDD",
        ),
        (
            "remove node",
            pd(Command::SetNodeState {
                node: NodeId(2),
                state: NodeState::Removed,
                now_ms: 0,
            }),
            "AAAADDDD",
        ),
        (
            "scheduler",
            pd(Command::SetScheduler {
                scheduler: SchedulerKind::Repair,
                enabled: false,
            }),
            "AAAADDDD",
        ),
        (
            "cancel operator",
            pd(Command::CancelOperator {
                shard: ShardId(1),
                now_ms: 0,
            }),
            "AAAADDDD",
        ),
        (
            "alloc ids",
            pd(Command::AllocIds {
                kind: ringkv_pd::IdKind::Shard,
                count: 1,
            }),
            "AAAADDDD",
        ),
        (
            "register a node (ringctl local add-node)",
            pd(Command::RegisterNode {
                node: registration(),
                now_ms: 0,
            }),
            "AAAADDDD",
        ),
        // Node-agent commands: only the named node.
        (
            "heartbeat of node 1",
            pd(Command::NodeHeartbeat {
                node: NodeId(1),
                stats: NodeStats::default(),
                now_ms: 0,
            }),
            "ADDDDDDD",
        ),
        (
            "heartbeat of node 2",
            pd(Command::NodeHeartbeat {
                node: NodeId(2),
                stats: NodeStats::default(),
                now_ms: 0,
            }),
            "DADDDDDD",
        ),
        (
            "store heartbeat of node 1",
            pd(Command::StoreHeartbeat(ringkv_pd::StoreHeartbeat {
                node: NodeId(1),
                stats: NodeStats::default(),
                shards: vec![],
                full: true,
                now_ms: 0,
            })),
            "ADDDDDDD",
        ),
        (
            "store heartbeat of node 2",
            pd(Command::StoreHeartbeat(ringkv_pd::StoreHeartbeat {
                node: NodeId(2),
                stats: NodeStats::default(),
                shards: vec![],
                full: true,
                now_ms: 0,
            })),
            "DADDDDDD",
        ),
        ("shard report of node 1", pd(report(1)), "ADDDDDDD"),
        ("shard report of node 2", pd(report(2)), "DADDDDDD"),
        (
            "register as node 2",
            pd(Command::RegisterNodeAs {
                id: NodeId(2),
                node: registration(),
                now_ms: 0,
            }),
            "DADDDDDD",
        ),
        ("tick", pd(Command::Tick { now_ms: 0 }), "AADDDDDD"),
        (
            "undecodable pd command",
            Request::Admin(AdminRequest::Pd {
                command: Bytes::from_static(&[0xff, 0xff, 0xff]),
            }),
            "IIIIIIII",
        ),
        (
            "nested token",
            Request::WithToken {
                token: Secret::new("t"),
                request: Box::new(Request::Admin(AdminRequest::GetNodes)),
            },
            "IIIIIIII",
        ),
    ]
}

#[test]
fn every_principal_gets_exactly_its_rights() {
    let principals = principals();
    let mut failures = Vec::new();
    for (name, request, expected) in table() {
        assert_eq!(expected.len(), principals.len(), "row {name}");
        for ((who, principal), want) in principals.iter().zip(expected.chars()) {
            let got = match authorize(principal, &request) {
                Ok(()) => 'A',
                Err(WireError::PermissionDenied { .. }) => 'D',
                Err(WireError::InvalidRequest { .. }) => 'I',
                Err(other) => panic!("{name} / {who}: unexpected {other:?}"),
            };
            if got != want {
                failures.push(format!("{name} / {who}: expected {want}, got {got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn denials_name_the_missing_grant() {
    let bob = Principal::user("bob", false, vec![Grant::Read("alice".into())]);
    let put = kv(KvOp::Put {
        key: key("alice"),
        value: Bytes::new(),
    });
    assert_eq!(
        authorize(&bob, &put),
        Err(WireError::PermissionDenied {
            missing: "readwrite:alice".into()
        })
    );
    assert_eq!(
        authorize(&bob, &get("eve", ReadConsistency::Stale)),
        Err(WireError::PermissionDenied {
            missing: "read:eve".into()
        })
    );
    assert_eq!(
        authorize(&bob, &Request::Admin(AdminRequest::PdState)),
        Err(WireError::PermissionDenied {
            missing: "admin".into()
        })
    );
    assert_eq!(
        authorize(
            &Principal::root(),
            &pd(Command::NodeHeartbeat {
                node: NodeId(3),
                stats: NodeStats::default(),
                now_ms: 0
            })
        ),
        Err(WireError::PermissionDenied {
            missing: "the certificate of node 3".into()
        })
    );
}
