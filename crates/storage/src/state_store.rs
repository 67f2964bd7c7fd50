//! The seam between a shard's state machine and where its applied state lives: the reads
//! apply needs (applied position, values, session records, meta records), the one atomic
//! [`ApplyBatch`] it produces, and the durability notification.
//!
//! Two implementations: the fjall [`Store`](crate::Store) (production) and
//! [`MemoryState`](crate::MemoryState) (tests and the simulator), which can lose its unsynced
//! batches on a simulated crash. The KV and session semantics themselves
//! ([`kv_machine`](crate::kv_machine)) are written once, over this trait, so both
//! implementations apply alike.
//!
//! # Durability
//! An applied batch is not durable by itself: the Raft log is the write-ahead log. A batch
//! reaches the disk with the next group commit ("batch N is durable"), which covers everything
//! committed before it in the one journal. A crash may lose any suffix of the unsynced
//! batches (never a part of one, never an older one while keeping a newer one); the node then
//! re-applies the committed entries after the durable applied index, which is consistent with
//! the data because both are in one batch. See `docs/node.md`, "Apply without a second
//! journal".

use crate::command::SessionRecord;
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::scan::{ExpiredKeys, ScanPage, ScanRequest};
use crate::value::Versioned;
use bytes::Bytes;
use ringkv_types::ShardId;
use ringkv_types::raft::ConfState;
use ringkv_types::ring::Arc;
use std::collections::BTreeMap;

/// Longest meta record name accepted in an [`ApplyBatch`].
pub const META_NAME_BYTES_MAX: usize = 1024;

/// Everything one apply step of one shard writes, committed atomically: data, session
/// records, the applied position, the configuration and meta records.
#[derive(Clone, Debug, PartialEq)]
pub struct ApplyBatch {
    /// The shard applied.
    pub shard: ShardId,
    /// The new applied position.
    pub applied: AppliedState,
    /// Data writes by storage key (`position ‖ key`): `None` deletes.
    pub values: BTreeMap<Vec<u8>, Option<Versioned>>,
    /// Session records by session id: `None` drops the session.
    pub sessions: BTreeMap<u64, Option<SessionRecord>>,
    /// The configuration to save with the applied position (after a configuration entry).
    pub conf: Option<ConfState>,
    /// Meta records `(name, value)` (the namespace of `Store::set_meta`), e.g. the shard
    /// descriptor a configuration entry or split changes.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// The changes of the batch's keys, one per effective write, in log order, for watches
    /// (not stored: the node takes them before committing). Deletes of absent keys and
    /// `Expire`s of live keys change nothing and are not listed.
    pub events: Vec<ringkv_types::WatchEvent>,
}

impl ApplyBatch {
    /// An empty batch that only moves `shard`'s applied position to `applied`.
    pub fn new(shard: ShardId, applied: AppliedState) -> Self {
        Self {
            shard,
            applied,
            values: BTreeMap::new(),
            sessions: BTreeMap::new(),
            conf: None,
            meta: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Checks the batch against the limits every implementation keeps: meta names up to
    /// [`META_NAME_BYTES_MAX`], meta values up to `record_bytes_max`, and an applied index
    /// that does not go back from `previous`.
    ///
    /// # Errors
    /// [`Error::TooLarge`]; [`Error::InvalidWrite`] for an applied index below `previous`.
    pub fn validate(&self, previous: AppliedState, record_bytes_max: u64) -> Result<()> {
        for (name, value) in &self.meta {
            if name.len() > META_NAME_BYTES_MAX || value.len() as u64 > record_bytes_max {
                return Err(Error::TooLarge {
                    size: value.len() as u64,
                    max: record_bytes_max,
                });
            }
        }
        if self.applied.index < previous.index {
            return Err(Error::InvalidWrite {
                shard: self.shard,
                reason: format!(
                    "applied index {} goes back from {}",
                    self.applied.index, previous.index
                ),
            });
        }
        Ok(())
    }
}

/// Where a node's applied state lives, as apply sees it. Reads see every committed batch
/// (durable or not); see the module docs for durability.
///
/// Contract: one applier per shard at a time; a shard's batches are committed in log order.
pub trait StateStore {
    /// The applied position of `shard` (zero for a new shard).
    ///
    /// # Errors
    /// Corruption or I/O.
    fn applied(&self, shard: ShardId) -> Result<AppliedState>;

    /// The stored value at `storage_key` (`position ‖ key`) and its version.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    fn value(&self, storage_key: &[u8]) -> Result<Option<Versioned>>;

    /// The session record of `session` in `shard`.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    fn session(&self, shard: ShardId, session: u64) -> Result<Option<SessionRecord>>;

    /// Every session record of `shard`, sorted by session id.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    fn sessions(&self, shard: ShardId) -> Result<Vec<(u64, SessionRecord)>>;

    /// The meta record `name`.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; [`Error::TooLarge`] for a name over 1 KiB; I/O.
    fn meta(&self, name: &[u8]) -> Result<Option<Bytes>>;

    /// One page of a scan over a shard's arc, as reads see the store (every committed batch):
    /// the same page rules for every implementation (see [`ScanRequest`]).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    fn scan_page(&self, request: &ScanRequest<'_>) -> Result<ScanPage>;

    /// One step of a leader's sweep for expired keys over `arc`, from the storage key `start`
    /// (empty = the arc's start), as reads see the store: examines at most `examine_max` keys
    /// and returns those whose TTL has run out at log time `now_ms` (at most `keys_max`), where
    /// the next step starts, and whether any value with a TTL was examined. The same step
    /// rules for every implementation (see [`ExpiredKeys`]).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    fn expired_keys(
        &self,
        arc: Arc,
        start: &[u8],
        now_ms: u64,
        examine_max: usize,
        keys_max: usize,
    ) -> Result<ExpiredKeys>;

    /// The largest record (value, session, meta) the store accepts.
    fn record_bytes_max(&self) -> u64;

    /// Commits `batch` atomically: after it, reads see all of it. Not durable on return (see
    /// the module docs).
    ///
    /// # Errors
    /// [`ApplyBatch::validate`]'s errors (nothing is written then); [`Error::Poisoned`]; I/O,
    /// which poisons the store.
    fn commit_apply(&mut self, batch: ApplyBatch) -> Result<()>;

    /// A mark of the batches committed so far, taken when a group commit is submitted: once
    /// that group commit is durable, [`StateStore::batches_durable`] with the mark makes them
    /// durable too (the one journal orders them before it).
    fn journal_mark(&self) -> u64;

    /// Notes that the group commit submitted at `mark` ([`StateStore::journal_mark`]) is
    /// durable, and with it every batch committed before the mark. The fjall store needs
    /// nothing (its journal does this); the memory store keeps unsynced batches until then.
    fn batches_durable(&mut self, mark: u64);
}
