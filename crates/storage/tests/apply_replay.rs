//! The Raft log is the write-ahead log: apply batches are not made durable by themselves, so a
//! crash may lose the latest ones; recovery re-applies the committed entries after the durable
//! applied index from the log.
//!
//! A child process (this test binary, re-executed with `RINGKV_APPLY_REPLAY_CHILD` set) appends
//! committed entries with durable group commits, applies each, and after the last round of
//! applies exits at once: no destructor runs, so nothing buffered in the process reaches the disk (as a
//! `kill -9`). The parent then checks what the recovery argument of `docs/node.md` needs:
//! - the applied index and the data and session records agree (one atomic batch);
//! - every apply before the last durable group commit survived (the commit's fsync covers
//!   everything before it in the journal), and the log holds every entry after the durable
//!   applied index;
//! - replaying those entries brings the state to where the child was, exactly once.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use bytes::Bytes;
use common::open;
use ringkv_raft::Storage;
use ringkv_storage::{
    AppliedState, Command, CommandResult, Operation, OperationResult, SessionRequest, Store,
    WriteBatchBuilder,
};
use ringkv_types::raft::{Entry, EntryPayload, HardState};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::process::Command as Process;

const CHILD_ENV: &str = "RINGKV_APPLY_REPLAY_CHILD";
const SHARD: ShardId = ShardId(7);
const ROUNDS: u64 = 20;
const PER_ROUND: u64 = 8;
const LAST: u64 = ROUNDS * PER_ROUND;
/// The child's exit status after its last apply.
const CHILD_EXIT: i32 = 3;

/// The command of log index `index`: session 1's write number `index`, one put.
fn command(index: u64) -> Command {
    Command {
        session: Some(SessionRequest {
            session: 1,
            sequence: index,
        }),
        operations: vec![Operation::Put {
            key: Bytes::from(format!("key-{index}")),
            value: Bytes::from(format!("value-{index}")),
        }],
    }
}

/// The command an entry carries (the test's own encoding: the index in decimal).
fn decode(entry: &Entry) -> Command {
    let EntryPayload::Normal(payload) = &entry.payload else {
        panic!("entry {} is not a normal entry", entry.index);
    };
    command(std::str::from_utf8(payload).unwrap().parse().unwrap())
}

fn applied(index: u64) -> AppliedState {
    AppliedState {
        index: LogIndex(index),
        term: Term(1),
    }
}

fn child(dir: &str) -> ! {
    let store = open(std::path::Path::new(dir));
    for round in 0..ROUNDS {
        let first = round * PER_ROUND + 1;
        let last = first + PER_ROUND - 1;
        let entries: Vec<Entry> = (first..=last)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Normal(Bytes::from(index.to_string())),
            })
            .collect();
        let mut batch = WriteBatchBuilder::new();
        batch.append(SHARD, &entries).unwrap();
        batch.set_hard_state(
            SHARD,
            HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(last),
            },
        );
        store.write(batch).unwrap();
        for index in first..=last {
            let results = store
                .apply(SHARD, &[command(index)], applied(index), None)
                .unwrap();
            assert_eq!(
                results,
                vec![CommandResult::Applied(vec![OperationResult::Put])]
            );
        }
    }
    // The crash: `exit` runs no destructor, so nothing buffered in this process is written.
    std::process::exit(CHILD_EXIT);
}

/// The applied index, after checking that data and session record agree with it.
fn check_consistent(store: &Store, upto: u64) -> u64 {
    let durable = store.applied(SHARD).unwrap().index.get();
    for index in 1..=upto {
        let value = store.get(format!("key-{index}").as_bytes()).unwrap();
        if index <= durable.min(LAST) {
            assert_eq!(value, Some(Bytes::from(format!("value-{index}"))));
        } else {
            assert_eq!(value, None, "key-{index} is there but applied is {durable}");
        }
    }
    let sessions = store.sessions(SHARD).unwrap();
    if durable > 0 {
        assert_eq!(sessions.len(), 1);
        // Entry `LAST + 1` below is a retry of write `LAST`: it moves applied, not the record.
        assert_eq!(
            sessions[0].1.sequence,
            durable.min(LAST),
            "session record vs applied"
        );
    }
    durable
}

#[test]
fn applies_lost_in_a_crash_are_replayed_from_the_log() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "applies_lost_in_a_crash_are_replayed_from_the_log",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(CHILD_EXIT), "the child failed");

    let store = open(dir.path());
    let durable = check_consistent(&store, LAST);
    // The last group commit came after every apply of the rounds before the last one.
    assert!(
        durable >= LAST - PER_ROUND,
        "applied {durable}: an apply before the last durable group commit was lost"
    );
    // This is what the test is about: the crash lost the applies after the last group commit
    // (they were only in the process's journal buffer), so recovery has to replay.
    assert!(
        durable < LAST,
        "the crash lost no apply (applied {durable}): apply batches became durable on their own"
    );
    let group = store.group(SHARD).unwrap();
    assert_eq!(group.hard_state().commit, LogIndex(LAST));
    assert!(group.first_index().unwrap() <= LogIndex(durable + 1));
    let entries = group
        .entries(LogIndex(durable + 1), LogIndex(LAST + 1), u64::MAX)
        .unwrap();
    assert_eq!(entries.len() as u64, LAST - durable);
    drop(group);
    // Replay as the node does: one batch for the run of committed entries.
    let commands: Vec<Command> = entries.iter().map(decode).collect();
    let results = store.apply(SHARD, &commands, applied(LAST), None).unwrap();
    assert!(
        results
            .iter()
            .all(|result| *result == CommandResult::Applied(vec![OperationResult::Put]))
    );
    assert_eq!(check_consistent(&store, LAST), LAST);
    // A retry of the last write (same session and sequence) is answered, not applied again,
    // with the index that applied it (this replay applied the run as one, at `LAST`).
    let retry = store
        .apply(SHARD, &[command(LAST)], applied(LAST + 1), None)
        .unwrap();
    assert_eq!(
        retry,
        vec![CommandResult::Repeated {
            results: vec![OperationResult::Put],
            index: LAST
        }]
    );
    store.persist().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(check_consistent(&store, LAST), LAST + 1);
}
