//! Serving reads in the core: a confirmed read (its ReadIndex round done) is answered from the
//! applied state once the replica has applied up to its index, through
//! [`ringkv_storage::StateStore`], so the same code serves `ringkvd` (the fjall store) and the
//! simulator (memory).

use super::node_core::NodeCore;
use crate::kv_read::read_now;
use ringkv_raft::Storage;
use ringkv_storage::StateStore;
use ringkv_types::ShardId;

impl<L: Storage> NodeCore<L> {
    /// Answers the confirmed reads of `shard` whose index is applied, from `store`. `now_ms`
    /// is the wall clock (read by the driver); the read's log time is the replica's clock,
    /// never below a stamp it saw (and later stamps of this leader are at least this, so a
    /// key it reported expired stays so).
    pub fn serve_reads<S: StateStore + ?Sized>(&mut self, shard: ShardId, store: &S, now_ms: u64) {
        let Some(group) = self.groups.get_mut(&shard) else {
            return;
        };
        let applied = group.applied;
        let arc = group.descriptor.arc;
        let now_ms = group.next_stamp(now_ms);
        let (ready, waiting): (Vec<_>, Vec<_>) = group
            .reads_ready
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        group.reads_ready = waiting;
        for (_, reads) in ready {
            for read in reads {
                group.reads_served += 1;
                self.replies
                    .send(read.reply, read_now(store, &read.op, applied, arc, now_ms));
            }
        }
    }
}
