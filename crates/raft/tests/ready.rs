//! Exact-output tests of the driving contract (STYLE §7.4): a group is driven by hand, without
//! `stabilize`, and every `Ready` is compared whole. They pin down which messages may leave
//! before persistence (Raft §5.1 and Figure 2: a server answers only with durable state), that
//! committed entries are handed out only once durable locally, and how `on_persisted` works
//! with several Readies in flight (thesis §10.2.1: the leader writes its log in parallel with
//! replication; pipelining).

mod common;

use bytes::Bytes;
use common::{GROUP, Network};
use ringkv_raft::{ReadState, Ready, Role, SoftState};
use ringkv_types::raft::{Entry, EntryPayload, HardState, Message, MessageBody, Snapshot};
use ringkv_types::{LogIndex, NodeId, Term};

/// A `Ready` with every field, comparable. Built by exhaustive destructuring, so a new field
/// in `Ready` breaks this file until the tests cover it.
#[derive(Debug, PartialEq)]
struct View {
    number: u64,
    soft_state: Option<SoftState>,
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
}

impl View {
    fn of(ready: Ready) -> Self {
        let Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        } = ready;
        Self {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        }
    }

    fn empty(number: u64) -> Self {
        Self {
            number,
            soft_state: None,
            hard_state: None,
            snapshot: None,
            entries: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            committed_entries: Vec::new(),
            read_states: Vec::new(),
        }
    }
}

fn ready(network: &mut Network, id: u64) -> View {
    assert!(network.node(id).has_ready(), "node {id} has no Ready");
    View::of(network.node(id).ready().expect("ready"))
}

/// Writes what `view` asks to persist into `id`'s storage (not yet reported).
fn write(network: &mut Network, id: u64, view: &View) {
    let storage = &network.peer(id).storage;
    if let Some(snapshot) = &view.snapshot {
        storage.apply_snapshot(snapshot.clone());
    }
    storage.append(&view.entries);
    if let Some(hard_state) = view.hard_state {
        storage.set_hard_state(hard_state);
    }
}

/// Writes and reports Ready `view` of `id` durable.
fn persist(network: &mut Network, id: u64, view: &View) {
    write(network, id, view);
    network
        .node(id)
        .on_persisted(view.number)
        .expect("on_persisted");
    network.node(id).check_invariants();
}

fn deliver(network: &mut Network, messages: &[Message]) {
    for message in messages {
        let to = message.to.get();
        network.node(to).step(message.clone()).expect("step");
        network.node(to).check_invariants();
    }
}

fn message(from: u64, to: u64, body: MessageBody) -> Message {
    Message {
        group: GROUP,
        from: NodeId(from),
        to: NodeId(to),
        term: Term(1),
        body,
    }
}

fn noop(index: u64) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Noop,
    }
}

fn normal(index: u64, data: &'static [u8]) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from_static(data)),
    }
}

fn append(from: u64, to: u64, prev: u64, entries: Vec<Entry>, commit: u64) -> Message {
    let prev_term = if prev == 0 { Term(0) } else { Term(1) };
    message(
        from,
        to,
        MessageBody::Append {
            prev_index: LogIndex(prev),
            prev_term,
            entries,
            commit: LogIndex(commit),
        },
    )
}

fn ack(from: u64, to: u64, index: u64) -> Message {
    message(
        from,
        to,
        MessageBody::AppendResponse {
            reject: false,
            index: LogIndex(index),
            hint_index: LogIndex::ZERO,
            hint_term: Term::ZERO,
        },
    )
}

fn hard(vote: u64, commit: u64) -> Option<HardState> {
    Some(HardState {
        term: Term(1),
        vote: NodeId(vote),
        commit: LogIndex(commit),
    })
}

fn vote_request(to: u64) -> Message {
    message(
        1,
        to,
        MessageBody::Vote {
            last_index: LogIndex::ZERO,
            last_term: Term::ZERO,
            transfer: true,
        },
    )
}

/// Raft §5.2, §5.3 and Figure 2 ("respond after updating stable storage"): the whole Readies
/// of an election and the first replicated entry. Votes and append acknowledgements promise
/// durable state, so they come only in `persisted_messages`; a leader's appends go in
/// `messages` and may leave before its own write; the leader counts itself toward commit only
/// after its own write is reported.
#[test]
fn election_and_first_entry_whole_readies() {
    let mut network = Network::new(3);

    network.node(1).campaign().unwrap();
    let candidate = ready(&mut network, 1);
    let expected = View {
        soft_state: Some(SoftState {
            leader: NodeId::NONE,
            role: Role::Candidate,
        }),
        hard_state: hard(1, 0),
        persisted_messages: vec![vote_request(2), vote_request(3)],
        ..View::empty(1)
    };
    assert_eq!(candidate, expected);
    persist(&mut network, 1, &candidate);
    deliver(&mut network, &candidate.persisted_messages);

    let granted = message(2, 1, MessageBody::VoteResponse { reject: false });
    let voter = ready(&mut network, 2);
    let expected = View {
        hard_state: hard(1, 0),
        persisted_messages: vec![granted.clone()],
        ..View::empty(1)
    };
    assert_eq!(
        voter, expected,
        "a vote leaves only after the vote is durable"
    );
    persist(&mut network, 2, &voter);
    let voter_3 = ready(&mut network, 3);
    persist(&mut network, 3, &voter_3);
    deliver(&mut network, &voter.persisted_messages);

    // Elected: the no-op is appended and sent before the leader writes it.
    let leader = ready(&mut network, 1);
    let expected = View {
        soft_state: Some(SoftState {
            leader: NodeId(1),
            role: Role::Leader,
        }),
        entries: vec![noop(1)],
        messages: vec![
            append(1, 2, 0, vec![noop(1)], 0),
            append(1, 3, 0, vec![noop(1)], 0),
        ],
        ..View::empty(2)
    };
    assert_eq!(leader, expected);
    // The late vote from node 3 changes nothing.
    deliver(&mut network, &voter_3.persisted_messages);
    assert!(!network.node(1).has_ready());

    deliver(&mut network, &leader.messages);
    let follower = ready(&mut network, 2);
    let expected = View {
        soft_state: Some(SoftState {
            leader: NodeId(1),
            role: Role::Follower,
        }),
        entries: vec![noop(1)],
        persisted_messages: vec![ack(2, 1, 1)],
        ..View::empty(2)
    };
    assert_eq!(
        follower, expected,
        "an acknowledgement leaves only after the entries are durable"
    );
    persist(&mut network, 2, &follower);
    deliver(&mut network, &follower.persisted_messages);

    // Node 2 holds the no-op, but the leader has not written it yet: one of three.
    assert!(
        !network.node(1).has_ready(),
        "committed without the leader's own write"
    );
    assert_eq!(network.peer(1).node.status().committed, LogIndex::ZERO);

    persist(&mut network, 1, &leader);
    let commit = ready(&mut network, 1);
    let expected = View {
        hard_state: hard(1, 1),
        messages: vec![append(1, 2, 1, vec![], 1)],
        committed_entries: vec![noop(1)],
        ..View::empty(3)
    };
    assert_eq!(
        commit, expected,
        "node 3's probe is outstanding, so only node 2 hears of commit"
    );
    persist(&mut network, 1, &commit);
    network.node(1).on_applied(LogIndex(1));

    deliver(&mut network, &commit.messages);
    let applied = ready(&mut network, 2);
    let expected = View {
        hard_state: hard(1, 1),
        persisted_messages: vec![ack(2, 1, 1)],
        committed_entries: vec![noop(1)],
        ..View::empty(3)
    };
    assert_eq!(applied, expected);
}

/// Elects node 1 in a 3-node group and settles everything: the no-op at index 1 is committed
/// and applied on every node, nothing is in flight.
fn elected() -> Network {
    let mut network = Network::new(3);
    network.campaign(1);
    network.tick_all(common::config(1).heartbeat_ticks);
    for id in 1..=3 {
        assert_eq!(network.peer(id).applied_index, LogIndex(1));
        assert!(!network.node(id).has_ready());
    }
    network.delivered.clear();
    network
}

/// Figure 2 (apply only committed entries) with the log-before-apply rule of §5.3: the leader
/// learns that entry 2 is committed from the followers before its own write of it finished.
/// The Ready carrying the new commit index hands out nothing to apply; the entry comes out only
/// after the leader reports its write.
#[test]
fn leader_applies_only_after_its_own_write() {
    let mut network = elected();
    network.node(1).propose(Bytes::from_static(b"a")).unwrap();
    let proposal = ready(&mut network, 1);
    let first = proposal.number;
    let expected = View {
        entries: vec![normal(2, b"a")],
        messages: vec![
            append(1, 2, 1, vec![normal(2, b"a")], 1),
            append(1, 3, 1, vec![normal(2, b"a")], 1),
        ],
        ..View::empty(first)
    };
    assert_eq!(proposal, expected);
    write(&mut network, 1, &proposal);

    deliver(&mut network, &proposal.messages);
    for id in [2, 3] {
        let follower = ready(&mut network, id);
        persist(&mut network, id, &follower);
        deliver(&mut network, &follower.persisted_messages);
    }
    let committed = ready(&mut network, 1);
    let expected = View {
        hard_state: hard(1, 2),
        messages: vec![append(1, 2, 2, vec![], 2), append(1, 3, 2, vec![], 2)],
        ..View::empty(first + 1)
    };
    assert_eq!(
        committed, expected,
        "entry 2 handed out before the leader's write was reported"
    );
    write(&mut network, 1, &committed);

    network.node(1).on_persisted(first).unwrap();
    let apply = ready(&mut network, 1);
    let expected = View {
        committed_entries: vec![normal(2, b"a")],
        ..View::empty(first + 2)
    };
    assert_eq!(apply, expected);
}

/// Thesis §10.2.1 (pipelining) on the leader: two Readies are taken before either is written.
/// Reporting the first durable counts only its entries: the commit may be ahead (the followers
/// hold both), but only entry 2 is handed out; reporting the second hands out entry 3. Messages
/// of Ready N+1 leave before Ready N is durable.
#[test]
fn leader_pipelines_two_readies_and_persists_in_order() {
    let mut network = elected();
    network.node(1).propose(Bytes::from_static(b"a")).unwrap();
    let ready_a = ready(&mut network, 1);
    network.node(1).propose(Bytes::from_static(b"b")).unwrap();
    let ready_b = ready(&mut network, 1);
    assert_eq!(ready_a.entries, vec![normal(2, b"a")]);
    assert_eq!(
        ready_b,
        View {
            entries: vec![normal(3, b"b")],
            messages: vec![
                append(1, 2, 2, vec![normal(3, b"b")], 1),
                append(1, 3, 2, vec![normal(3, b"b")], 1)
            ],
            ..View::empty(ready_a.number + 1)
        }
    );

    for view in [&ready_a, &ready_b] {
        deliver(&mut network, &view.messages);
    }
    for id in [2, 3] {
        let follower = ready(&mut network, id);
        assert_eq!(follower.entries, vec![normal(2, b"a"), normal(3, b"b")]);
        persist(&mut network, id, &follower);
        deliver(&mut network, &follower.persisted_messages);
    }
    let commit = ready(&mut network, 1);
    assert_eq!(commit.hard_state, hard(1, 3));
    assert!(
        commit.committed_entries.is_empty(),
        "applied before the leader's write"
    );

    write(&mut network, 1, &ready_a);
    network.node(1).on_persisted(ready_a.number).unwrap();
    let apply_a = ready(&mut network, 1);
    assert_eq!(
        apply_a,
        View {
            committed_entries: vec![normal(2, b"a")],
            ..View::empty(commit.number + 1)
        }
    );
    network.node(1).on_applied(LogIndex(2));

    write(&mut network, 1, &ready_b);
    network.node(1).on_persisted(ready_b.number).unwrap();
    let apply_b = ready(&mut network, 1);
    assert_eq!(
        apply_b,
        View {
            committed_entries: vec![normal(3, b"b")],
            ..View::empty(apply_a.number + 1)
        }
    );
}

/// `on_persisted(N)` also covers every earlier Ready: reporting only the second of two
/// pipelined Readies hands out both entries, in order.
#[test]
fn on_persisted_covers_earlier_readies() {
    let mut network = elected();
    network.node(1).propose(Bytes::from_static(b"a")).unwrap();
    let ready_a = ready(&mut network, 1);
    network.node(1).propose(Bytes::from_static(b"b")).unwrap();
    let ready_b = ready(&mut network, 1);
    for view in [&ready_a, &ready_b] {
        deliver(&mut network, &view.messages);
    }
    for id in [2, 3] {
        let follower = ready(&mut network, id);
        persist(&mut network, id, &follower);
        deliver(&mut network, &follower.persisted_messages);
    }
    let commit = ready(&mut network, 1);
    write(&mut network, 1, &ready_a);
    write(&mut network, 1, &ready_b);
    network.node(1).on_persisted(ready_b.number).unwrap();
    let apply = ready(&mut network, 1);
    assert_eq!(
        apply,
        View {
            committed_entries: vec![normal(2, b"a"), normal(3, b"b")],
            ..View::empty(commit.number + 1)
        }
    );
}

/// Pipelining on a follower, with a commit index that runs ahead of its writes: the follower
/// takes the Ready for entry 2, then receives entry 3 with commit 2 before writing entry 2. The
/// second Ready carries the new commit index but nothing to apply, and each Ready acknowledges
/// exactly its own entries (in `persisted_messages`). Entry 2 is handed out once the first
/// Ready is reported; entry 3 waits for its commit.
#[test]
fn follower_pipelines_and_applies_only_durable_committed_entries() {
    let mut network = elected();
    deliver(&mut network, &[append(1, 2, 1, vec![normal(2, b"a")], 1)]);
    let first = ready(&mut network, 2);
    let number = first.number;
    assert_eq!(
        first,
        View {
            entries: vec![normal(2, b"a")],
            persisted_messages: vec![ack(2, 1, 2)],
            ..View::empty(number)
        }
    );
    deliver(&mut network, &[append(1, 2, 2, vec![normal(3, b"b")], 2)]);
    let second = ready(&mut network, 2);
    assert_eq!(
        second,
        View {
            hard_state: hard(1, 2),
            entries: vec![normal(3, b"b")],
            persisted_messages: vec![ack(2, 1, 3)],
            ..View::empty(number + 1)
        },
        "entry 2 handed out before it was durable"
    );

    persist(&mut network, 2, &first);
    let apply = ready(&mut network, 2);
    assert_eq!(
        apply,
        View {
            committed_entries: vec![normal(2, b"a")],
            ..View::empty(number + 2)
        }
    );
    network.node(2).on_applied(LogIndex(2));
    persist(&mut network, 2, &second);
    assert!(!network.node(2).has_ready(), "entry 3 is not committed");

    deliver(&mut network, &[append(1, 2, 3, vec![], 3)]);
    let commit = ready(&mut network, 2);
    assert_eq!(
        commit,
        View {
            hard_state: hard(1, 3),
            persisted_messages: vec![ack(2, 1, 3)],
            committed_entries: vec![normal(3, b"b")],
            ..View::empty(number + 3)
        }
    );
}

/// Thesis §6.4, whole Readies of one ReadIndex round: the read produces heartbeats (sent at
/// once, in `messages`) carrying the round as context and the commit index each follower is
/// known to hold; the follower's answer echoes the context; the read state comes out in the
/// leader's next Ready and nothing else does.
#[test]
fn read_index_round_whole_readies() {
    let mut network = elected();
    network
        .node(1)
        .read_index(42, ringkv_raft::ReadMode::Safe)
        .expect("leader");
    let round = ready(&mut network, 1);
    let context = match &round.messages.first().map(|m| &m.body) {
        Some(MessageBody::Heartbeat { context, .. }) => *context,
        other => panic!("expected a heartbeat, got {other:?}"),
    };
    let heartbeat = |to| {
        message(
            1,
            to,
            MessageBody::Heartbeat {
                commit: LogIndex(1),
                context,
            },
        )
    };
    assert_eq!(
        round,
        View {
            messages: vec![heartbeat(2), heartbeat(3)],
            ..View::empty(round.number)
        }
    );
    deliver(&mut network, &round.messages[..1]);
    let answer = ready(&mut network, 2);
    assert_eq!(
        answer,
        View {
            persisted_messages: vec![message(2, 1, MessageBody::HeartbeatResponse { context })],
            ..View::empty(answer.number)
        }
    );
    deliver(&mut network, &answer.persisted_messages);
    let served = ready(&mut network, 1);
    assert_eq!(
        served,
        View {
            read_states: vec![ReadState {
                context: 42,
                index: LogIndex(1)
            }],
            ..View::empty(round.number + 1)
        }
    );
}

/// Raft §7, whole Readies of a snapshot install: the follower's Ready carries the snapshot and
/// the commit index it implies, nothing to apply (the snapshot is the state machine), and the
/// acknowledgement only in `persisted_messages`. Once it is reported durable nothing is handed
/// out again for the covered entries.
#[test]
fn snapshot_install_whole_ready() {
    let mut network = elected();
    network.propose(1, b"a");
    network.compact(1);
    let snapshot = network.peer(1).storage.current_snapshot();
    let install = Message {
        group: GROUP,
        from: NodeId(1),
        to: NodeId(3),
        term: Term(1),
        body: MessageBody::InstallSnapshot {
            snapshot: snapshot.clone(),
        },
    };
    // Node 3 of a fresh group stands for a follower that has nothing yet.
    let mut target = Network::new(3);
    deliver(&mut target, &[install]);
    let installed = ready(&mut target, 3);
    assert_eq!(
        installed,
        View {
            soft_state: Some(SoftState {
                leader: NodeId(1),
                role: Role::Follower
            }),
            hard_state: hard(0, 2),
            snapshot: Some(snapshot),
            persisted_messages: vec![ack(3, 1, 2)],
            ..View::empty(1)
        }
    );
    persist(&mut target, 3, &installed);
    assert!(
        !target.node(3).has_ready(),
        "entries covered by the snapshot handed out"
    );
    let status = target.peer(3).node.status();
    assert_eq!(
        (status.applied, status.committed, status.first_index),
        (LogIndex(2), LogIndex(2), LogIndex(3))
    );
}
