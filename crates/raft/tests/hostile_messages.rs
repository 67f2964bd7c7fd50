//! A hostile or buggy peer cannot crash the Raft core: a three-replica group with some history
//! is stepped with arbitrary messages (any kind, any sender, terms and indexes near the group's
//! and at the extremes, broken entry runs, bogus configurations and snapshots), interleaved
//! with honest traffic and ticks. No step may panic or return an error (the node treats an
//! error as fatal), and after every Ready the core's invariants hold (terms and commit never
//! go back, commit within the log, applied in order: `Network::process_ready` checks them).
//! The case count and the seed are fixed so the run time is bounded in CI.

mod common;

use bytes::Bytes;
use common::{GROUP, Network};
use proptest::prelude::*;
use ringkv_raft::validate::VALUE_MAX;
use ringkv_types::raft::{
    ConfState, Entry, EntryPayload, Message, MessageBody, Snapshot, SnapshotMeta,
};
use ringkv_types::{LogIndex, NodeId, Term};

/// Indexes and terms: mostly near the group's own (small), sometimes at the limits.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..12,
        1 => Just(VALUE_MAX),
        1 => Just(VALUE_MAX + 1),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

fn conf() -> impl Strategy<Value = ConfState> {
    (
        proptest::collection::vec(0u64..6, 0..4),
        proptest::collection::vec(0u64..6, 0..3),
    )
        .prop_map(|(voters, learners)| ConfState {
            voters: voters.into_iter().map(NodeId).collect(),
            learners: learners.into_iter().map(NodeId).collect(),
        })
}

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        3 => Just(EntryPayload::Noop),
        3 => proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|data| EntryPayload::Normal(Bytes::from(data))),
        1 => conf().prop_map(EntryPayload::Config),
    ]
}

/// Entries: a contiguous run from `prev + 1` (honest shape) or arbitrary indexes.
fn entries(prev: u64) -> impl Strategy<Value = Vec<Entry>> {
    let contiguous = proptest::collection::vec((0u64..8, payload()), 0..5).prop_map(move |run| {
        run.into_iter()
            .enumerate()
            .map(|(offset, (term, payload))| Entry {
                term: Term(term),
                index: LogIndex(prev.saturating_add(1 + offset as u64)),
                payload,
            })
            .collect()
    });
    let arbitrary =
        proptest::collection::vec((number(), number(), payload()), 0..5).prop_map(|run| {
            run.into_iter()
                .map(|(term, index, payload)| Entry {
                    term: Term(term),
                    index: LogIndex(index),
                    payload,
                })
                .collect()
        });
    prop_oneof![3 => contiguous, 1 => arbitrary]
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (number(), number()).prop_map(|(i, t)| MessageBody::PreVote {
            last_index: LogIndex(i),
            last_term: Term(t),
        }),
        any::<bool>().prop_map(|reject| MessageBody::PreVoteResponse { reject }),
        (number(), number(), any::<bool>()).prop_map(|(i, t, transfer)| MessageBody::Vote {
            last_index: LogIndex(i),
            last_term: Term(t),
            transfer,
        }),
        any::<bool>().prop_map(|reject| MessageBody::VoteResponse { reject }),
        (number(), number(), number()).prop_flat_map(|(prev, prev_term, commit)| {
            entries(prev).prop_map(move |entries| MessageBody::Append {
                prev_index: LogIndex(prev),
                prev_term: Term(prev_term),
                entries,
                commit: LogIndex(commit),
            })
        }),
        (any::<bool>(), number(), number(), number()).prop_map(|(reject, i, hi, ht)| {
            MessageBody::AppendResponse {
                reject,
                index: LogIndex(i),
                hint_index: LogIndex(hi),
                hint_term: Term(ht),
            }
        }),
        (number(), any::<u64>()).prop_map(|(commit, context)| MessageBody::Heartbeat {
            commit: LogIndex(commit),
            context,
        }),
        any::<u64>().prop_map(|context| MessageBody::HeartbeatResponse { context }),
        (number(), number(), conf()).prop_map(|(index, term, conf)| {
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(index),
                        term: Term(term),
                        conf,
                    },
                    data: Bytes::new(),
                },
            }
        }),
        Just(MessageBody::TimeoutNow),
        Just(MessageBody::ReplicaRemoved),
        Just(MessageBody::NodeAlive),
    ]
}

/// One hostile message from any member (or a stranger) to one of the three replicas.
fn message() -> impl Strategy<Value = Message> {
    (0u64..5, 1u64..4, number(), body()).prop_map(|(from, to, term, body)| Message {
        group: GROUP,
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    })
}

#[derive(Clone, Debug)]
enum Action {
    Hostile(Message),
    Deliver(usize),
    Tick,
    Propose(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => message().prop_map(Action::Hostile),
        3 => (1usize..6).prop_map(Action::Deliver),
        1 => Just(Action::Tick),
        1 => (1u64..4).prop_map(Action::Propose),
    ]
}

fn process_all(network: &mut Network) {
    let ids: Vec<NodeId> = network.peers.keys().copied().collect();
    for id in ids {
        while network.process_ready(id) {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Fixed: the same 512 cases in every CI run (a failure reproduces); change the seed
        // locally to explore further.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7269_6e67),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_peer_messages_never_panic_the_core(
        actions in proptest::collection::vec(action(), 1..60)
    ) {
        let mut network = Network::new(3);
        network.campaign(1);
        network.stabilize();
        network.propose(1, b"a");
        network.propose(1, b"b");
        network.stabilize();
        for action in actions {
            match action {
                Action::Hostile(message) => {
                    let to = message.to;
                    let result = network
                        .peers
                        .get_mut(&to)
                        .map(|peer| peer.node.step(message.clone()));
                    prop_assert!(
                        matches!(result, Some(Ok(()))),
                        "step({message:?}) -> {result:?}"
                    );
                }
                Action::Deliver(count) => {
                    for _ in 0..count {
                        if !network.deliver_one() {
                            break;
                        }
                    }
                }
                Action::Tick => {
                    // Not `tick_all`: it waits for the network to settle, which hostile traffic
                    // may prevent for good (a fake leader keeps coming back); that is not a bug.
                    for id in 1..=3 {
                        let result = network.node(id).tick();
                        prop_assert!(result.is_ok(), "tick {id}: {result:?}");
                    }
                }
                Action::Propose(id) => {
                    let _ = network.node(id).propose(Bytes::from_static(b"p"));
                }
            }
            process_all(&mut network);
        }
    }
}
