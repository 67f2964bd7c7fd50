//! What the node hands to the group-commit writer: every group's writes of one Ready cycle.

use crate::codec;
use crate::error::{Error, Result};
use crate::snapshot_install::PreparedSnapshot;
use ringkv_types::raft::{Entry, HardState, SnapshotMeta};
use ringkv_types::{LogIndex, ShardId, Term};
use std::collections::BTreeMap;

/// One encoded log entry waiting for the writer.
pub(crate) struct EncodedEntry {
    pub index: LogIndex,
    pub term: Term,
    pub record: Vec<u8>,
}

/// The writes of one group in one batch.
#[derive(Default)]
pub(crate) struct GroupWrite {
    /// A snapshot to install (marker, applied state; data moved after the commit), first.
    pub install: Option<PreparedSnapshot>,
    /// A new compaction point, applied after `install`.
    pub snapshot_meta: Option<SnapshotMeta>,
    /// Contiguous entries to append, replacing any conflicting suffix.
    pub entries: Vec<EncodedEntry>,
    /// Hard state to save, applied last.
    pub hard_state: Option<HardState>,
    /// A brand-new group's starting point (applied state and configuration), applied first.
    pub initialize: Option<SnapshotMeta>,
    /// Caller-named `meta` records written in this batch (name, value).
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Session records to write (a split child's copy of its parent's sessions).
    pub sessions: Vec<(u64, crate::command::SessionRecord)>,
}

/// The writes of all groups for one group commit: one fjall batch, one `fdatasync`.
///
/// The node fills a builder from all groups' Readies, then hands it to
/// [`Store::submit`](crate::Store::submit), and can fill the next builder while the writer syncs
/// this one. Encoding (postcard + crc32) happens here, on the caller's thread; the writer only
/// computes truncations against the durable log and commits.
///
/// # Durability contract
/// - A batch is atomic: after a crash either all of its writes (every group's) are on disk or
///   none is.
/// - When its [`Ticket`](crate::Ticket) returns `Ok`, everything in the batch is durable
///   (`fdatasync` of the journal returned) and visible through [`GroupStorage`](crate::GroupStorage);
///   so is every batch submitted before it. Tickets complete in submission order.
/// - When a ticket returns an error that [`Error::is_fatal`], nothing more will ever be durable:
///   the store is poisoned and the node must exit. A non-fatal error
///   ([`Error::InvalidWrite`], corruption found while computing truncations) means nothing of
///   this batch was written; it signals a bug or a damaged disk.
///
/// # Order within a group
/// Per group, a batch applies: snapshot install, then compaction point, then appends, then the
/// hard state, whatever order the methods were called in. Appending twice to one group merges
/// the appends as two Readies would (the second replaces the first's overlapping suffix).
#[derive(Default)]
pub struct WriteBatchBuilder {
    pub(crate) groups: BTreeMap<ShardId, GroupWrite>,
    scratch: Vec<u8>,
    entry_count: usize,
    bytes: usize,
}

impl WriteBatchBuilder {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Log entries in the batch.
    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// Approximate encoded bytes in the batch, for the caller's batch-size limit.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Appends `entries` to `shard`'s log. Entries at or after `entries[0].index` already in the
    /// log (or earlier in this batch) are replaced: a conflicting suffix is truncated.
    ///
    /// # Errors
    /// [`Error::InvalidWrite`] when `entries` are not contiguous or leave a gap after entries
    /// already in this batch; [`Error::TooLarge`] for an entry over `record_bytes_max`
    /// (checked by the writer). Nothing is added on error.
    pub fn append(&mut self, shard: ShardId, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for pair in entries.windows(2) {
            if let [previous, next] = pair
                && next.index != previous.index.next()
            {
                return Err(Error::InvalidWrite {
                    shard,
                    reason: format!(
                        "entries not contiguous: {} then {}",
                        previous.index, next.index
                    ),
                });
            }
        }
        let group = self.groups.entry(shard).or_default();
        if let Some(batch_first) = group.entries.first().map(|entry| entry.index) {
            let batch_next = batch_first.plus(group.entries.len() as u64);
            if first.index > batch_next {
                return Err(Error::InvalidWrite {
                    shard,
                    reason: format!(
                        "append at {} leaves a gap after {}",
                        first.index, batch_next
                    ),
                });
            }
            if first.index < batch_first {
                self.entry_count -= group.entries.len();
                group.entries.clear();
            } else {
                let keep = first.index.distance_from(batch_first) as usize;
                self.entry_count -= group.entries.len() - keep;
                group.entries.truncate(keep);
            }
        }
        group.entries.reserve(entries.len());
        for entry in entries {
            let mut record = Vec::with_capacity(entry.size_bytes() as usize + 16);
            codec::encode_into(entry, &mut self.scratch, &mut record);
            self.bytes += record.len();
            group.entries.push(EncodedEntry {
                index: entry.index,
                term: entry.term,
                record,
            });
        }
        self.entry_count += entries.len();
        Ok(())
    }

    /// Saves `shard`'s hard state (the last call in a batch wins). Terms never decrease
    /// (Raft §5.1): the writer refuses a lower term with [`Error::InvalidWrite`].
    pub fn set_hard_state(&mut self, shard: ShardId, hard_state: HardState) {
        self.groups.entry(shard).or_default().hard_state = Some(hard_state);
    }

    /// Moves `shard`'s compaction point to `meta` (Raft §7): entries up to `meta.index` are
    /// deleted. When the log holds `meta.index` with `meta.term`, the entries after it are kept
    /// (log compaction, or a snapshot of a prefix of our log); otherwise the whole log is
    /// discarded and the log restarts after `meta.index` (a snapshot from a leader whose history
    /// differs). A `meta.index` at or below the current compaction point is ignored.
    pub fn set_snapshot_meta(&mut self, shard: ShardId, meta: SnapshotMeta) {
        self.groups.entry(shard).or_default().snapshot_meta = Some(meta);
    }

    /// Starts a brand-new group (no log, no applied state yet) at `meta`: its applied state
    /// becomes `(meta.index, meta.term)` with configuration `meta.conf`, and its log's
    /// compaction point moves to `meta`, so the log continues at `meta.index + 1`. The shard's
    /// data range is left as it is (a split child's data is already in the store). A follower
    /// whose log is empty is then behind the leader's compaction point and gets a snapshot,
    /// never a log replay that would lack the group's starting data.
    pub fn initialize_group(&mut self, shard: ShardId, meta: SnapshotMeta) {
        let group = self.groups.entry(shard).or_default();
        group.snapshot_meta = Some(meta.clone());
        group.initialize = Some(meta);
    }

    /// Writes `shard`'s exactly-once session records with this batch: a split child starts with
    /// a copy of its parent's sessions, so a write retried against the child after the split is
    /// still applied at most once.
    pub fn set_sessions(
        &mut self,
        shard: ShardId,
        sessions: Vec<(u64, crate::command::SessionRecord)>,
    ) {
        self.groups
            .entry(shard)
            .or_default()
            .sessions
            .extend(sessions);
    }

    /// Saves the caller-named record `name` in the `meta` keyspace with this batch (the same
    /// namespace as [`Store::set_meta`](crate::Store::set_meta)): atomically with `shard`'s
    /// writes of this batch, e.g. a shard descriptor installed with a snapshot.
    pub fn set_meta(&mut self, shard: ShardId, name: &[u8], value: Vec<u8>) {
        self.bytes += name.len() + value.len();
        self.groups
            .entry(shard)
            .or_default()
            .meta
            .push((name.to_vec(), value));
    }

    /// Installs a validated, staged snapshot into its shard: this batch carries the install's
    /// durable marker, the applied state and configuration and the log's new compaction point
    /// (as [`WriteBatchBuilder::set_snapshot_meta`]); the writer then moves the staged data and
    /// sessions into the shard's range in bounded batches before it answers the ticket (see
    /// `snapshot_install`). A crash meanwhile is finished by the next open.
    pub fn install_snapshot(&mut self, snapshot: PreparedSnapshot) {
        let shard = snapshot.shard();
        let group = self.groups.entry(shard).or_default();
        self.bytes += snapshot.size_bytes() as usize;
        group.snapshot_meta = Some(snapshot.meta().clone());
        group.install = Some(snapshot);
    }
}
