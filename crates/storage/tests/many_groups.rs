//! 1,000 groups on one database: group commits spanning all of them, reopen, and per-group
//! bounds and reads.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use common::{entries, open};
use ringkv_raft::Storage;
use ringkv_storage::WriteBatchBuilder;
use ringkv_types::raft::HardState;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

const GROUPS: u64 = 1_000;

#[test]
fn a_thousand_groups_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Ten rounds; each is one group commit covering every group (a node-wide Ready cycle).
    for round in 0..10u64 {
        let mut batch = WriteBatchBuilder::new();
        for group in 0..GROUPS {
            let shard = ShardId(group);
            // Odd groups get a new leader in round 5 that rewrites the previous round's tail.
            let rewrite = round == 5 && group % 2 == 1;
            let first = if rewrite { round * 3 } else { round * 3 + 1 };
            batch
                .append(shard, &entries(first..=round * 3 + 3, 1 + round / 5))
                .unwrap();
            batch.set_hard_state(
                shard,
                HardState {
                    term: Term(1 + round / 5),
                    vote: NodeId(1),
                    commit: LogIndex(round * 3 + 1),
                },
            );
        }
        assert_eq!(store.write(batch).unwrap().groups.len() as u64, GROUPS);
    }
    drop(store);
    let store = open(dir.path());
    let shards = store.groups().unwrap();
    assert_eq!(shards.len() as u64, GROUPS);
    for shard in shards {
        let group = store.group(shard).unwrap();
        assert_eq!(group.last_index().unwrap(), LogIndex(30), "{shard}");
        assert_eq!(group.hard_state().commit, LogIndex(28), "{shard}");
        let got = group.entries(LogIndex(1), LogIndex(31), u64::MAX).unwrap();
        let mut expected = entries(1..=15, 1);
        if shard.get() % 2 == 1 {
            expected.truncate(14);
        }
        expected.extend(entries(expected.len() as u64 + 1..=30, 2));
        assert_eq!(got, expected, "{shard}");
    }
}
