//! Read-only views for the database inspector (`ringctl inspect`): a group's persisted records,
//! a range of its log, the keys of an arc. Each call reads one consistent fjall snapshot and
//! never touches the group caches the node runs on, so it is safe on a running node and on a
//! stopped node's data dir alike.

use crate::codec;
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::keys;
use crate::store::Store;
use fjall::Readable;
use ringkv_types::raft::{ConfState, Entry, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, ShardId, ring};
use std::ops::Bound;

/// A group's persisted Raft and state-machine records, as read by [`Store::group_records`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRecords {
    /// The hard state (default when none was saved).
    pub hard_state: HardState,
    /// The log's compaction point.
    pub snapshot: SnapshotMeta,
    /// The state machine's applied position.
    pub applied: AppliedState,
    /// The configuration saved with the applied position.
    pub conf: Option<ConfState>,
    /// First index in the log (`snapshot.index + 1`).
    pub first_index: LogIndex,
    /// Last index in the log (`snapshot.index` when the log is empty).
    pub last_index: LogIndex,
}

impl Store {
    /// The persisted records of `shard`, from one consistent view of the store.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] / [`Error::CorruptEntry`] for records that fail their checks;
    /// I/O.
    pub fn group_records(&self, shard: ShardId) -> Result<GroupRecords> {
        let shared = &self.shared;
        let view = shared.db.snapshot();
        let max = shared.config.record_bytes_max;
        let read = |kind: u8| -> Result<Option<Vec<u8>>> {
            Ok(view
                .get(&shared.raft_state, keys::state_key(shard, kind))?
                .map(|bytes| bytes.to_vec()))
        };
        let snapshot: SnapshotMeta =
            decode(shard, max, read(keys::KIND_SNAPSHOT_META)?, "snapshot_meta")?
                .unwrap_or_default();
        let hard_state: HardState =
            decode(shard, max, read(keys::KIND_HARD_STATE)?, "hard_state")?.unwrap_or_default();
        let applied: AppliedState =
            decode(shard, max, read(keys::KIND_APPLIED)?, "applied")?.unwrap_or_default();
        let conf: Option<ConfState> = decode(shard, max, read(keys::KIND_CONF)?, "conf_state")?;
        let mut records = GroupRecords {
            first_index: snapshot.index.next(),
            last_index: snapshot.index,
            hard_state,
            snapshot,
            applied,
            conf,
        };
        let mut log = view.prefix(&shared.raft_log, keys::shard_prefix(shard));
        if let Some(first) = log.next() {
            let (_, first_index) = keys::parse_log_key(&first.key()?)?;
            records.first_index = first_index;
            records.last_index = first_index;
        }
        if let Some(last) = log.next_back() {
            let (_, last_index) = keys::parse_log_key(&last.key()?)?;
            records.last_index = last_index;
        }
        Ok(records)
    }

    /// Up to `limit` entries of `shard`'s log from index `from` on, checked (envelope, crc and
    /// index) and decoded, plus whether more follow.
    ///
    /// # Errors
    /// [`Error::CorruptEntry`] naming the first entry that fails its checks; I/O.
    pub fn log_entries(
        &self,
        shard: ShardId,
        from: LogIndex,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool)> {
        let shared = &self.shared;
        let view = shared.db.snapshot();
        let start = keys::log_key(shard, from);
        let end = match shard.get().checked_add(1) {
            Some(next) => Bound::Excluded(next.to_be_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for guard in view.range(&shared.raft_log, (Bound::Included(start.to_vec()), end)) {
            if entries.len() >= limit {
                return Ok((entries, true));
            }
            let (key, value) = guard.into_inner()?;
            let (_, index) = keys::parse_log_key(&key)?;
            entries.push(shared.decode_entry(shard, index, &value)?);
        }
        Ok((entries, false))
    }

    /// Calls `visit(user key, value)` for up to `limit` keys of `arc`, in storage order (ring
    /// position, then key), from one consistent view; returns whether more keys follow.
    /// Values are checked against their crc32.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] for a value that fails its check; I/O.
    pub fn scan_data(
        &self,
        arc: ring::Arc,
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<bool> {
        let shared = &self.shared;
        let view = shared.db.snapshot();
        let (lower, upper) = arc.storage_bounds();
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        let range = view.range(&shared.data, (Bound::Included(lower), upper));
        for (seen, guard) in range.enumerate() {
            if seen >= limit {
                return Ok(true);
            }
            let (key, value) = guard.into_inner()?;
            // The storage key is the 8-byte ring position followed by the user key.
            let user_key = key.get(8..).ok_or(Error::MalformedKey {
                keyspace: keys::KEYSPACE_DATA,
                len: key.len(),
            })?;
            let value = crate::value::decode(&value, shared.config.record_bytes_max)?;
            visit(user_key, &value.value);
        }
        Ok(false)
    }
}

/// Decodes an optional `raft_state` record of `shard`.
fn decode<T: serde::de::DeserializeOwned>(
    shard: ShardId,
    max: u64,
    bytes: Option<Vec<u8>>,
    record: &'static str,
) -> Result<Option<T>> {
    bytes
        .map(|bytes| {
            codec::decode(&bytes, max)
                .map_err(|reason| Error::corrupt_record(record, Some(shard), reason))
        })
        .transpose()
}
