//! The log compaction trigger: once a group's log holds more than a threshold of applied
//! entries, the compaction point moves to the applied index, in the turn's writes (so it is
//! durable after the apply batches it relies on: the one journal orders them before it).

use super::node_core::NodeCore;
use ringkv_raft::Storage;
use ringkv_types::raft::SnapshotMeta;
use ringkv_types::{LogIndex, ShardId};
use tracing::debug;

impl<L: Storage> NodeCore<L> {
    /// Moves `shard`'s compaction point to `applied` once its log holds at least `threshold`
    /// entries from its first index (0 = never compact). Does nothing when the group is gone
    /// or its log cannot tell the term at `applied`.
    pub fn maybe_compact(&mut self, shard: ShardId, applied: LogIndex, threshold: u64) {
        if threshold == 0 {
            return;
        }
        let Some(group) = self.groups.get(&shard) else {
            return;
        };
        let storage = group.raw.storage();
        let Ok(first) = storage.first_index() else {
            return;
        };
        if applied.distance_from(first) < threshold {
            return;
        }
        let Ok(term) = storage.term(applied) else {
            return;
        };
        let conf = group.raw.conf_state().clone();
        debug!(%shard, %applied, "compacting the log");
        self.writes.set_snapshot_meta(
            shard,
            SnapshotMeta {
                index: applied,
                term,
                conf,
            },
        );
    }
}
