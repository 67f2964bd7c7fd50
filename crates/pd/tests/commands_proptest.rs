//! Property: any sequence of commands, valid or not, applies without panicking; a refused
//! command leaves the state exactly as it was; the state's invariants hold after every command;
//! and applying the same sequence twice gives the same states and answers (determinism); a
//! `LeaderTick` the PD leader would leave out (`tick_would_act` false) changes nothing but log
//! time and last heartbeats.

use proptest::prelude::*;
use ringkv_pd::{
    AdminOperator, Apply, Command, IdKind, NodeRegistration, NodeState, NodeStats, PdState,
    SchedulerKind, Settings, ShardReport, ShardStats,
};
use ringkv_types::ring::Arc;
use ringkv_types::{Epoch, NodeId, Replica, ReplicaRole, ShardDescriptor, ShardId, ShardMap};
use std::collections::BTreeMap;

const NODES: u64 = 5;
const SHARDS: u64 = 4;

fn registration(addr: String) -> NodeRegistration {
    NodeRegistration {
        addr,
        labels: BTreeMap::new(),
        capacity_bytes: 1 << 30,
    }
}

fn bootstrapped() -> PdState {
    let shards = Arc::split_even(SHARDS)
        .into_iter()
        .enumerate()
        .map(|(i, arc)| ShardDescriptor {
            id: ShardId(i as u64 + 1),
            arc,
            epoch: Epoch {
                conf_ver: 1,
                version: 1,
            },
            replicas: (0..3)
                .map(|j| Replica {
                    node: NodeId((i as u64 + j) % NODES + 1),
                    role: ReplicaRole::Voter,
                    member: ringkv_types::member_id(NodeId((i as u64 + j) % NODES + 1), 1),
                })
                .collect(),
        })
        .collect();
    let mut state = PdState::new();
    let settings = Settings {
        heartbeat_timeout_ms: 100,
        max_down_time_ms: 300,
        operator_step_timeout_ms: 500,
        split_size_bytes: 1000,
        ..Settings::default()
    };
    let bootstrap = Command::Bootstrap {
        cluster_id: 1,
        cluster_name: "prop".to_string(),
        nodes: (1..=NODES)
            .map(|n| (NodeId(n), registration(format!("n{n}"))))
            .collect(),
        shard_map: ShardMap { version: 1, shards },
        settings,
        now_ms: 0,
    };
    state.apply(&bootstrap).expect("valid bootstrap");
    state
}

fn node() -> impl Strategy<Value = NodeId> {
    (0..NODES + 3).prop_map(NodeId)
}

fn shard() -> impl Strategy<Value = ShardId> {
    (0..SHARDS + 4).prop_map(ShardId)
}

fn role() -> impl Strategy<Value = ReplicaRole> {
    prop_oneof![Just(ReplicaRole::Voter), Just(ReplicaRole::Learner)]
}

/// Which arc a report claims.
#[derive(Clone, Copy, Debug)]
enum ArcChoice {
    /// The shard's slot in the initial map.
    Slot,
    /// The left half of the slot (after a split at the midpoint).
    LeftHalf,
    /// The right half of the slot (the new shard of such a split).
    RightHalf,
    /// Anything.
    Random(Arc),
}

fn arc_choice() -> impl Strategy<Value = ArcChoice> {
    prop_oneof![
        6 => Just(ArcChoice::Slot),
        2 => Just(ArcChoice::LeftHalf),
        2 => Just(ArcChoice::RightHalf),
        1 => (any::<u64>(), proptest::option::of(any::<u64>()))
            .prop_map(|(start, end)| ArcChoice::Random(Arc { start, end })),
    ]
}

fn resolve(choice: ArcChoice, slot: Arc) -> Arc {
    let mid = slot.midpoint();
    match choice {
        ArcChoice::Slot => slot,
        ArcChoice::LeftHalf => Arc {
            start: slot.start,
            end: Some(mid),
        },
        ArcChoice::RightHalf => Arc {
            start: mid,
            end: slot.end,
        },
        ArcChoice::Random(arc) => arc,
    }
}

/// Mostly plausible reports (distinct nodes, the leader among the voters, epochs near the
/// current ones), some nonsense.
fn report() -> impl Strategy<Value = Command> {
    (
        prop_oneof![4 => (1..=SHARDS).prop_map(ShardId), 1 => shard()],
        (0u64..SHARDS, arc_choice()),
        prop_oneof![
            4 => proptest::sample::subsequence((1..=NODES).collect::<Vec<u64>>(), 2..5),
            1 => proptest::sample::subsequence((1..=NODES + 1).collect::<Vec<u64>>(), 1..5),
        ],
        proptest::collection::vec(prop_oneof![4 => Just(ReplicaRole::Voter), 1 => role()], 5),
        any::<proptest::sample::Index>(),
        (1u64..12, 1u64..4),
        proptest::collection::vec(node(), 0..3),
        (0u64..2000, proptest::option::of(any::<u64>())),
        0u64..5000,
    )
        .prop_map(
            |(
                shard,
                (slot, choice),
                nodes,
                roles,
                leader,
                (conf_ver, version),
                caught_up,
                (size, hint),
                now,
            )| {
                let slot = Arc::split_even(SHARDS)
                    .get(slot as usize)
                    .copied()
                    .unwrap_or(Arc::FULL);
                let replicas: Vec<Replica> = nodes
                    .iter()
                    .zip(roles)
                    .map(|(&node, role)| Replica {
                        node: NodeId(node),
                        role,
                        member: ringkv_types::member_id(NodeId(node), 1),
                    })
                    .collect();
                let voters: Vec<NodeId> = replicas
                    .iter()
                    .filter(|r| r.role == ReplicaRole::Voter)
                    .map(|r| r.node)
                    .collect();
                let leader = if voters.is_empty() {
                    NodeId(1)
                } else {
                    voters[leader.index(voters.len())]
                };
                Command::ShardReport(ShardReport {
                    descriptor: ShardDescriptor {
                        id: shard,
                        arc: resolve(choice, slot),
                        epoch: Epoch { conf_ver, version },
                        replicas,
                    },
                    leader,
                    stats: ShardStats {
                        size_bytes: size,
                        ..ShardStats::default()
                    },
                    caught_up_learners: caught_up,
                    split_hint: hint,
                    now_ms: now,
                })
            },
        )
}

fn node_state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        Just(NodeState::Up),
        Just(NodeState::Down),
        Just(NodeState::Draining),
        Just(NodeState::Removed),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => report(),
        2 => (node(), 0u64..5000).prop_map(|(node, now_ms)| Command::NodeHeartbeat {
            node,
            stats: NodeStats::default(),
            now_ms,
        }),
        2 => (0u64..5000).prop_map(|now_ms| Command::Tick { now_ms }),
        2 => (0u64..5000, proptest::collection::vec((node(), 0u64..6000), 0..6)).prop_map(
            |(now_ms, last_heard)| Command::LeaderTick { now_ms, last_heard }
        ),
        1 => (node(), node_state(), 0u64..5000).prop_map(|(node, state, now_ms)| {
            Command::SetNodeState { node, state, now_ms }
        }),
        1 => (0u8..10).prop_map(|n| Command::RegisterNode {
            node: registration(format!("n{n}")),
            now_ms: 0,
        }),
        1 => (shard(), node(), node()).prop_map(|(shard, from, to)| Command::AddOperator {
            operator: AdminOperator::MoveReplica { shard, from, to },
            now_ms: 0,
        }),
        1 => (shard(), node()).prop_map(|(shard, to)| Command::AddOperator {
            operator: AdminOperator::TransferLeader { shard, to },
            now_ms: 0,
        }),
        1 => (shard(), proptest::option::of(any::<u64>())).prop_map(|(shard, at)| {
            Command::AddOperator {
                operator: AdminOperator::SplitShard { shard, at },
                now_ms: 0,
            }
        }),
        1 => shard().prop_map(|shard| Command::CancelOperator { shard, now_ms: 0 }),
        1 => (0usize..5, any::<bool>()).prop_map(|(i, enabled)| Command::SetScheduler {
            scheduler: SchedulerKind::ALL[i],
            enabled,
        }),
        1 => (0u64..3, any::<u64>()).prop_map(|(kind, count)| Command::AllocIds {
            kind: [IdKind::Node, IdKind::Shard, IdKind::Incarnation][kind as usize],
            count: count % 4,
        }),
        3 => auth_command().prop_map(|command| Command::Auth { command, now_ms: 0 }),
    ]
}

/// User and key commands over a few names (valid and not), roles and hashes.
fn auth_command() -> impl Strategy<Value = ringkv_pd::AuthCommand> {
    use ringkv_pd::{AuthCommand, Role};
    let name = prop_oneof![
        Just("alice".to_string()),
        Just("bob".to_string()),
        Just("root".to_string()),
        Just("bad/name".to_string()),
    ];
    let hash = prop_oneof![
        Just("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string()),
        Just(String::new()),
        Just("plain".to_string()),
    ];
    let role = prop_oneof![
        Just(Role::Admin),
        Just(Role::Read("alice".into())),
        Just(Role::ReadWrite("bob".into())),
    ];
    prop_oneof![
        (name.clone(), hash.clone()).prop_map(|(name, password_hash)| AuthCommand::AddUser {
            name,
            password_hash
        }),
        name.clone()
            .prop_map(|name| AuthCommand::DeleteUser { name }),
        (name.clone(), hash).prop_map(|(name, password_hash)| AuthCommand::SetPassword {
            name,
            password_hash
        }),
        (name.clone(), role.clone()).prop_map(|(name, role)| AuthCommand::Grant { name, role }),
        (name, role).prop_map(|(name, role)| AuthCommand::Revoke { name, role }),
        (0usize..3).prop_map(|n| AuthCommand::AddSigningKey {
            private_pkcs8: vec![7; n * 24],
            public: vec![9; 32],
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_command_sequence_is_safe_and_deterministic(
        commands in proptest::collection::vec(command(), 1..60)
    ) {
        let mut state = bootstrapped();
        let mut answers = Vec::new();
        for command in &commands {
            let before = state.clone();
            let skipped = matches!(command, Command::LeaderTick { .. })
                && !ringkv_pd::tick_would_act(&state, command);
            prop_assert_eq!(&state, &before, "deciding a tick changed the state");
            let answer = state.apply(command);
            if skipped {
                // The PD leader leaves out a tick that would not act: applying it must change
                // nothing but log time and last heartbeats.
                let mut expected = before.clone();
                expected.now_ms = state.now_ms;
                for (id, node) in &mut expected.nodes {
                    node.last_heartbeat_ms = state.nodes[id].last_heartbeat_ms;
                }
                prop_assert_eq!(&state, &expected, "a tick left out would have acted");
            }
            state.check_invariants();
            if answer.is_err() {
                prop_assert_eq!(&state, &before, "refused {:?} changed the state", command);
            }
            prop_assert!(state.now_ms >= before.now_ms, "time went back");
            prop_assert!(state.ids.next_shard >= before.ids.next_shard);
            prop_assert!(state.ids.next_node >= before.ids.next_node);
            prop_assert!(state.ids.next_incarnation >= before.ids.next_incarnation);
            prop_assert!(state.shard_map.version >= before.shard_map.version);
            prop_assert!(state.auth.next_generation >= before.auth.next_generation);
            prop_assert!(state.auth.version >= before.auth.version);
            // A user whose password or roles shrank has a newer generation.
            for (name, user) in &state.auth.users {
                if let Some(old) = before.auth.users.get(name)
                    && (old.password_hash != user.password_hash
                        || !old.roles.is_subset(&user.roles))
                {
                    prop_assert!(user.generation > old.generation, "{} kept its tokens", name);
                }
            }
            answers.push(answer);
        }
        let mut replay = bootstrapped();
        let replayed: Vec<_> = commands.iter().map(|c| replay.apply(c)).collect();
        prop_assert_eq!(replay, state);
        prop_assert_eq!(replayed, answers);
    }
}
