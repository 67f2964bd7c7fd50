//! The in-memory copy of each shard's session table (the exactly-once records), so that apply
//! never reads a session record back from fjall on the write path.
//!
//! fjall stays the durable home of the records: apply writes them in the same atomic batch as the
//! data and the applied index, exactly as before. The copy is loaded from fjall on a shard's
//! first apply after open, and dropped (to be loaded again on the next apply) by every write of
//! session records that does not go through apply: a snapshot install, a split child's copy of
//! its parent's sessions, a replica removal. Those never run concurrently with an apply of the
//! same shard (the node's contract on [`Store::apply`](crate::Store::apply)), so a reload always
//! sees their result.

use crate::command::SessionRecord;
use ringkv_types::ShardId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One shard's session table: session id -> last applied record.
pub(crate) type SessionTable = HashMap<u64, SessionRecord>;

/// The loaded session tables of all shards.
#[derive(Default)]
pub(crate) struct SessionTables {
    shards: Mutex<HashMap<ShardId, Arc<Mutex<SessionTable>>>>,
}

/// Locks a shard's table. A panic while it was held can leave it half-updated only after a
/// failed commit, which poisons the store; the table is then never used for a write again.
pub(crate) fn lock_table(table: &Mutex<SessionTable>) -> MutexGuard<'_, SessionTable> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionTables {
    /// The table of `shard`, loading it with `load` when it is not in memory.
    pub fn get_or_load<E>(
        &self,
        shard: ShardId,
        load: impl FnOnce() -> Result<SessionTable, E>,
    ) -> Result<Arc<Mutex<SessionTable>>, E> {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(table) = shards.get(&shard) {
            return Ok(table.clone());
        }
        let table = Arc::new(Mutex::new(load()?));
        shards.insert(shard, table.clone());
        Ok(table)
    }

    /// Drops the copy of `shard`'s table; the next apply loads it from fjall again.
    pub fn forget(&self, shard: ShardId) {
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&shard);
    }
}
