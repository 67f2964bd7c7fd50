//! Model test: random log and state-machine operations on several groups, with restarts, checked
//! against a `BTreeMap` model after every step. Seeded; a failure prints the seed and step.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use bytes::Bytes;
use common::{Rng, entry, open};
use ringkv_raft::{Storage, StorageError};
use ringkv_storage::{AppliedState, Command, Operation, Store, WriteBatchBuilder};
use ringkv_types::raft::{Entry, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

#[derive(Default, Clone)]
struct ModelGroup {
    snapshot: (u64, u64),
    entries: BTreeMap<u64, Entry>,
    hard_state: HardState,
    applied: u64,
}

impl ModelGroup {
    fn last(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.snapshot.0)
    }
    fn term(&self, index: u64) -> u64 {
        if index == self.snapshot.0 {
            self.snapshot.1
        } else {
            self.entries[&index].term.get()
        }
    }
    fn max_term(&self) -> u64 {
        self.entries
            .values()
            .map(|e| e.term.get())
            .max()
            .unwrap_or(0)
            .max(self.snapshot.1)
    }
}

fn check(
    store: &Store,
    model: &BTreeMap<ShardId, ModelGroup>,
    data: &BTreeMap<String, String>,
    context: &str,
) {
    for (shard, expected) in model {
        let group = store.group(*shard).unwrap();
        let first = expected.snapshot.0 + 1;
        let last = expected.last();
        assert_eq!(
            group.first_index().unwrap(),
            LogIndex(first),
            "{context} {shard} first"
        );
        assert_eq!(
            group.last_index().unwrap(),
            LogIndex(last),
            "{context} {shard} last"
        );
        assert_eq!(
            group.hard_state(),
            expected.hard_state,
            "{context} {shard} hard state"
        );
        assert_eq!(
            group.term(LogIndex(first - 1)).unwrap(),
            Term(expected.snapshot.1),
            "{context}"
        );
        if first > 1 {
            assert!(matches!(
                group.term(LogIndex(first - 2)),
                Err(StorageError::Compacted { .. })
            ));
        }
        assert!(matches!(
            group.term(LogIndex(last + 1)),
            Err(StorageError::Unavailable { .. })
        ));
        let got = group
            .entries(LogIndex(first), LogIndex(last + 1), u64::MAX)
            .unwrap();
        let want: Vec<Entry> = expected.entries.values().cloned().collect();
        assert_eq!(got, want, "{context} {shard} entries");
        for index in first..=last {
            assert_eq!(
                group.term(LogIndex(index)).unwrap(),
                Term(expected.term(index)),
                "{context}"
            );
        }
        assert_eq!(
            store.applied(*shard).unwrap().index,
            LogIndex(expected.applied),
            "{context}"
        );
    }
    for key in 0..40 {
        let key = format!("k{key}");
        let got = store.get(key.as_bytes()).unwrap();
        assert_eq!(
            got.as_deref(),
            data.get(&key).map(|v| v.as_bytes()),
            "{context} key {key}"
        );
    }
}

fn run(seed: u64, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut rng = Rng(seed);
    let shards = [ShardId(1), ShardId(2), ShardId(300)];
    let mut model: BTreeMap<ShardId, ModelGroup> =
        shards.iter().map(|s| (*s, ModelGroup::default())).collect();
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    for step in 0..steps {
        let context = format!("seed {seed:#x} step {step}");
        let mut batch = WriteBatchBuilder::new();
        let mut next = model.clone();
        // At most one operation per group per batch: within a batch the writer orders a group's
        // operations itself (snapshot, appends, hard state), which the model does not mimic.
        for shard in shards {
            if rng.below(2) == 0 {
                continue;
            }
            let group = next.get_mut(&shard).unwrap();
            match rng.below(10) {
                0..=5 => {
                    // Append at a random point in [first, last + 1], maybe in a new term.
                    let first = group.snapshot.0 + 1;
                    let start = first + rng.below(group.last() + 2 - first);
                    let term = group.max_term() + rng.below(2);
                    let term = term.max(1);
                    let count = 1 + rng.below(5);
                    let list: Vec<Entry> = (start..start + count).map(|i| entry(i, term)).collect();
                    batch.append(shard, &list).unwrap();
                    group.entries.split_off(&start);
                    group
                        .entries
                        .extend(list.into_iter().map(|e| (e.index.get(), e)));
                }
                6 => {
                    // Compact to a point inside the log.
                    let index = group.snapshot.0 + rng.below(group.last() - group.snapshot.0 + 1);
                    if index > group.snapshot.0 {
                        let term = group.term(index);
                        let meta = SnapshotMeta {
                            index: LogIndex(index),
                            term: Term(term),
                            conf: Default::default(),
                        };
                        batch.set_snapshot_meta(shard, meta);
                        group.entries = group.entries.split_off(&(index + 1));
                        group.snapshot = (index, term);
                    }
                }
                7 => {
                    // A snapshot past the end (or with another term) discards the log.
                    let index = group.last() + rng.below(3);
                    if index > group.snapshot.0 {
                        let term = group.max_term() + 1;
                        batch.set_snapshot_meta(
                            shard,
                            SnapshotMeta {
                                index: LogIndex(index),
                                term: Term(term),
                                conf: Default::default(),
                            },
                        );
                        group.entries.clear();
                        group.snapshot = (index, term);
                    }
                }
                _ => {
                    let hard_state = HardState {
                        term: Term(group.max_term()),
                        vote: NodeId(rng.below(4)),
                        commit: LogIndex(rng.below(group.last() + 1)),
                    };
                    batch.set_hard_state(shard, hard_state);
                    group.hard_state = hard_state;
                }
            }
        }
        store.write(batch).unwrap();
        model = next;

        if rng.below(3) == 0 {
            let shard = shards[rng.below(shards.len() as u64) as usize];
            let group = model.get_mut(&shard).unwrap();
            let mut commands = Vec::new();
            for _ in 0..rng.below(4) {
                let key = format!("k{}", rng.below(40));
                let operation = if rng.below(4) == 0 {
                    data.remove(&key);
                    Operation::Delete {
                        key: Bytes::from(key),
                    }
                } else {
                    let value = format!("v{step}");
                    data.insert(key.clone(), value.clone());
                    Operation::Put {
                        key: Bytes::from(key),
                        value: Bytes::from(value),
                    }
                };
                commands.push(Command {
                    session: None,
                    operations: vec![operation],
                });
            }
            group.applied += 1;
            store
                .apply(
                    shard,
                    &commands,
                    AppliedState {
                        index: LogIndex(group.applied),
                        term: Term(1),
                    },
                    None,
                )
                .unwrap();
        }
        if rng.below(25) == 0 {
            drop(store);
            store = open(dir.path());
        }
        check(&store, &model, &data, &context);
    }
    drop(store);
    let store = open(dir.path());
    check(
        &store,
        &model,
        &data,
        &format!("seed {seed:#x} final reopen"),
    );
}

#[test]
fn store_matches_model_over_random_operations_and_restarts() {
    for seed in 1..=8u64 {
        run(seed.wrapping_mul(0x9e37_79b9), 250);
    }
}
