//! The committed log of a shard's keys across splits: a split's new shard continues its
//! parent's history, so the log of its keys is the parent's up to the split entry, then its
//! own (its indexes continue after the split entry's). The TTL checks and the exactly-once
//! check read logs this way.

use super::ttl::TtlWorld;
use ringkv_types::ShardId;
use ringkv_types::raft::Entry;
use std::collections::BTreeMap;

impl TtlWorld {
    /// `child` was split from `parent` at log index `index`.
    pub fn split(&mut self, parent: ShardId, child: ShardId, index: u64) {
        self.splits.entry(child).or_insert((parent, index));
    }

    /// The committed log of `shard`'s keys, across the splits that created it: index ->
    /// (entry, first world time any replica applied it).
    pub(super) fn lineage(&self, shard: ShardId) -> BTreeMap<u64, (Entry, u64)> {
        let mut entries = self.log.get(&shard).cloned().unwrap_or_default();
        let mut current = shard;
        while let Some((parent, index)) = self.splits.get(&current).copied() {
            if let Some(before) = self.log.get(&parent) {
                for (at, entry) in before.range(..=index) {
                    entries.entry(*at).or_insert_with(|| entry.clone());
                }
            }
            current = parent;
        }
        entries
    }
}
