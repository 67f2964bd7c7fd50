//! Applying committed commands to a shard's data.

use crate::codec;
use crate::command::{
    Command, CommandResult, KEY_BYTES_MAX, Operation, OperationResult, SessionRecord,
    VALUE_BYTES_MAX,
};
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::keys;
use crate::session_table::{SessionTable, lock_table};
use crate::store::{Store, decode_value, lock_group};
use crate::value::Versioned;
use bytes::Bytes;
use ringkv_types::raft::ConfState;
use ringkv_types::{ShardId, envelope, ring};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What [`Store::expire_sessions`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionExpiry {
    /// Sessions dropped.
    pub dropped: u64,
    /// Sessions left in the table.
    pub remaining: u64,
}

impl Store {
    /// Applies committed `commands` of `shard` and records `applied` (and `conf` when a
    /// configuration entry was among them), all in ONE atomic fjall batch, and returns one
    /// result per command.
    ///
    /// Exactly-once: a command with a session whose sequence equals the session's last applied
    /// one returns the saved result without applying again; a lower one returns
    /// [`CommandResult::StaleSequence`].
    ///
    /// Durability: the Raft log is the write-ahead log; this batch is not made durable by
    /// itself. It goes into the journal's in-process buffer only (no write system call, no
    /// fsync) and reaches the disk with the next group commit's fsync (or [`Store::persist`]),
    /// which covers everything before it in the one journal. A crash may lose it: the node then
    /// re-applies the committed entries after the durable applied index, which is consistent
    /// with the data because both are in one atomic batch. The entries must be durable in the
    /// log first, and the log must not be compacted past them by anything durable before this
    /// batch (the node compacts through the group commit, which comes after it in the journal).
    /// See `docs/node.md`, "Apply without a second journal".
    /// Call with one thread per shard at a time; the node must not apply while a snapshot of the
    /// same shard is being installed.
    ///
    /// # Errors
    /// [`Error::InvalidWrite`] when `applied.index` does not advance; corruption of a value or
    /// session read; [`Error::Poisoned`]; fjall errors (which poison the store).
    pub fn apply(
        &self,
        shard: ShardId,
        commands: &[Command],
        applied: AppliedState,
        conf: Option<&ConfState>,
    ) -> Result<Vec<CommandResult>> {
        self.apply_with_meta(shard, commands, &[], &[], applied, conf, &[])
    }

    /// [`Store::apply`], also saving caller-named `meta` records `(name, value)` (the namespace
    /// of [`Store::set_meta`]) in the same atomic batch: e.g. the shard descriptor a
    /// configuration entry changes, so that a restart never sees the new applied index with the
    /// old descriptor or the reverse.
    ///
    /// `stamps` holds each command's log time (`now_ms` stamped by the leader that proposed it,
    /// 0 = unknown), recorded as its session's `last_ms`; it is empty or as long as `commands`.
    /// `indexes` holds each command's log index, stored as the version of the keys it writes;
    /// empty = every command is at `applied.index` (one entry, or tests).
    ///
    /// # Errors
    /// As [`Store::apply`]; [`Error::TooLarge`] for a name over 1 KiB or a value over
    /// `record_bytes_max` (nothing is written then); [`Error::InvalidWrite`] when `stamps` or
    /// `indexes` is neither empty nor one per command.
    #[allow(
        clippy::too_many_arguments,
        reason = "per-command stamps and indexes are parallel slices of the driver's plan"
    )]
    pub fn apply_with_meta(
        &self,
        shard: ShardId,
        commands: &[Command],
        stamps: &[u64],
        indexes: &[u64],
        applied: AppliedState,
        conf: Option<&ConfState>,
        meta: &[(&[u8], &[u8])],
    ) -> Result<Vec<CommandResult>> {
        let shared = &self.shared;
        for (name, value) in meta {
            if name.len() > 1024 || value.len() as u64 > shared.config.record_bytes_max {
                return Err(Error::TooLarge {
                    size: value.len() as u64,
                    max: shared.config.record_bytes_max,
                });
            }
        }
        for (what, len) in [("stamps", stamps.len()), ("indexes", indexes.len())] {
            if len != 0 && len != commands.len() {
                return Err(Error::InvalidWrite {
                    shard,
                    reason: format!("{len} {what} for {} commands", commands.len()),
                });
            }
        }
        shared.check_writable()?;
        let cache = shared.group(shard)?;
        let previous = lock_group(&cache).applied;
        if applied.index <= previous.index && !(applied == previous && commands.is_empty()) {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "applied index {} does not advance {}",
                    applied.index, previous.index
                ),
            });
        }
        let max = shared.config.record_bytes_max;
        // The session table in memory (never read back from fjall here); updated only after
        // the batch committed.
        let table = self.session_table(shard)?;
        let mut table = lock_table(&table);
        // Writes of this batch, so later commands see earlier ones.
        let mut values: BTreeMap<Vec<u8>, Option<Versioned>> = BTreeMap::new();
        let mut sessions: BTreeMap<u64, SessionRecord> = BTreeMap::new();
        let mut results = Vec::with_capacity(commands.len());
        for (at, command) in commands.iter().enumerate() {
            let stamp = stamps.get(at).copied().unwrap_or(0);
            let index = indexes.get(at).copied().unwrap_or(applied.index.0);
            if let Some(request) = command.session {
                let record = sessions
                    .get(&request.session)
                    .or_else(|| table.get(&request.session));
                if let Some(record) = record {
                    if request.sequence == record.sequence {
                        results.push(CommandResult::Applied(record.result.clone()));
                        continue;
                    }
                    if request.sequence < record.sequence {
                        results.push(CommandResult::StaleSequence {
                            last_applied: record.sequence,
                        });
                        continue;
                    }
                }
            }
            let mut operation_results = Vec::with_capacity(command.operations.len());
            for operation in &command.operations {
                if let Some(rejected) = reject(operation) {
                    operation_results.push(rejected);
                    continue;
                }
                let result = self.apply_operation(operation, &mut values, index, stamp, max)?;
                operation_results.push(result);
            }
            if let Some(request) = command.session {
                sessions.insert(
                    request.session,
                    SessionRecord {
                        sequence: request.sequence,
                        result: operation_results.clone(),
                        last_ms: stamp,
                    },
                );
            }
            results.push(CommandResult::Applied(operation_results));
        }

        let mut batch = shared.db.batch().durability(None);
        for (key, value) in values {
            match value {
                Some(stored) => batch.insert(
                    &shared.data,
                    key,
                    crate::value::encode(&stored.value, stored.version, stored.expires_at_ms),
                ),
                None => batch.remove(&shared.data, key),
            }
        }
        for (session, record) in &sessions {
            batch.insert(
                &shared.raft_state,
                keys::session_key(shard, *session).to_vec(),
                codec::encode(record),
            );
        }
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_APPLIED).to_vec(),
            codec::encode(&applied),
        );
        if let Some(conf) = conf {
            batch.insert(
                &shared.raft_state,
                keys::state_key(shard, keys::KIND_CONF).to_vec(),
                codec::encode(conf),
            );
        }
        for (name, value) in meta {
            batch.insert(&shared.meta, keys::meta_key(name), envelope::encode(value));
        }
        // IMPORTANT: data, sessions and the applied index commit in one batch, so a restart never
        // re-applies an entry whose effects are already on disk.
        if let Err(error) = shared.commit(batch) {
            shared.sessions.forget(shard);
            return Err(error);
        }
        table.extend(sessions);
        drop(table);
        let mut state = lock_group(&cache);
        state.applied = applied;
        if let Some(conf) = conf {
            state.conf = Some(conf.clone());
        }
        Ok(results)
    }

    /// Applies a session expiry entry of `shard` at log time `now_ms`: drops every session whose
    /// last write is `idle_ms` or more older (see [`SessionRecord::expired`]), stamps records of
    /// unknown time with `now_ms` (so they expire one idle period later), and records `applied`,
    /// all in one atomic batch. Every replica applies the same entry to the same table, so the
    /// tables stay equal. Returns how many sessions were dropped and how many remain.
    ///
    /// # Errors
    /// As [`Store::apply`].
    pub fn expire_sessions(
        &self,
        shard: ShardId,
        now_ms: u64,
        idle_ms: u64,
        applied: AppliedState,
    ) -> Result<SessionExpiry> {
        let shared = &self.shared;
        shared.check_writable()?;
        let cache = shared.group(shard)?;
        let previous = lock_group(&cache).applied;
        if applied.index <= previous.index {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "applied index {} does not advance {}",
                    applied.index, previous.index
                ),
            });
        }
        let table = self.session_table(shard)?;
        let mut table = lock_table(&table);
        let mut outcome = SessionExpiry::default();
        let mut dropped = Vec::new();
        let mut stamped = Vec::new();
        let mut batch = shared.db.batch().durability(None);
        for (session, record) in table.iter() {
            let key = keys::session_key(shard, *session).to_vec();
            if record.expired(now_ms, idle_ms) {
                batch.remove(&shared.raft_state, key);
                dropped.push(*session);
                continue;
            }
            if record.last_ms == 0 {
                let mut record = record.clone();
                record.last_ms = now_ms;
                batch.insert(&shared.raft_state, key, codec::encode(&record));
                stamped.push(*session);
            }
        }
        outcome.dropped = dropped.len() as u64;
        outcome.remaining = (table.len() - dropped.len()) as u64;
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_APPLIED).to_vec(),
            codec::encode(&applied),
        );
        if let Err(error) = shared.commit(batch) {
            shared.sessions.forget(shard);
            return Err(error);
        }
        for session in dropped {
            table.remove(&session);
        }
        for session in stamped {
            if let Some(record) = table.get_mut(&session) {
                record.last_ms = now_ms;
            }
        }
        drop(table);
        lock_group(&cache).applied = applied;
        Ok(outcome)
    }

    /// Every session record of `shard`, by session id.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; a malformed key; I/O.
    pub fn sessions(&self, shard: ShardId) -> Result<Vec<(u64, SessionRecord)>> {
        let mut sessions = Vec::new();
        for guard in self.shared.raft_state.prefix(keys::session_prefix(shard)) {
            let (key, value) = guard.into_inner()?;
            let session = keys::parse_session_key(&key)?;
            let record = SessionRecord::decode(&value, self.shared.config.record_bytes_max)
                .map_err(|reason| Error::corrupt_record("session", Some(shard), reason))?;
            sessions.push((session, record));
        }
        Ok(sessions)
    }

    /// The in-memory session table of `shard`, loaded from fjall on first use.
    fn session_table(&self, shard: ShardId) -> Result<Arc<Mutex<SessionTable>>> {
        self.shared.sessions.get_or_load(shard, || {
            Ok(self.sessions(shard)?.into_iter().collect::<SessionTable>())
        })
    }

    /// The session table entry of `session` in `shard`, as stored (read from fjall, not from
    /// the copy in memory that apply uses).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    pub fn read_session(&self, shard: ShardId, session: u64) -> Result<Option<SessionRecord>> {
        match self
            .shared
            .raft_state
            .get(keys::session_key(shard, session))?
        {
            Some(bytes) => SessionRecord::decode(&bytes, self.shared.config.record_bytes_max)
                .map(Some)
                .map_err(|reason| Error::corrupt_record("session", Some(shard), reason)),
            None => Ok(None),
        }
    }

    /// Applies one validated operation of the entry at log `index` with log time `stamp`
    /// (0 = unknown) to the pending writes of this batch, and returns its result. A value whose
    /// TTL has run out at `stamp` counts as absent (every replica decides alike: the time is
    /// the entry's).
    fn apply_operation(
        &self,
        operation: &Operation,
        values: &mut BTreeMap<Vec<u8>, Option<Versioned>>,
        index: u64,
        stamp: u64,
        max: u64,
    ) -> Result<OperationResult> {
        let storage_key = ring::storage_key(operation.key());
        let found = self.current(values, &storage_key, max)?;
        // The version of a new value grows from the stored one, expired or not (see `stored`).
        let live = found.clone().filter(|found| found.live_at(stamp));
        let result = match operation {
            Operation::Put { value, .. } => {
                values.insert(storage_key, Some(stored(value, index, found.as_ref(), 0)));
                OperationResult::Put
            }
            Operation::PutWithTtl { value, ttl_ms, .. } => {
                if *ttl_ms == 0 || stamp == 0 {
                    return Ok(OperationResult::InvalidTtl);
                }
                let expires_at_ms = stamp.saturating_add(*ttl_ms);
                let new = stored(value, index, found.as_ref(), expires_at_ms);
                values.insert(storage_key, Some(new));
                OperationResult::Put
            }
            Operation::Delete { .. } => {
                values.insert(storage_key, None);
                OperationResult::Deleted {
                    existed: live.is_some(),
                }
            }
            Operation::Expire { .. } => {
                let expired = found.is_some() && live.is_none();
                if expired {
                    values.insert(storage_key, None);
                }
                OperationResult::Deleted { existed: expired }
            }
            Operation::Persist { .. } => {
                let had_ttl = live.as_ref().is_some_and(|live| live.expires_at_ms != 0);
                if let Some(live) = live.filter(|_| had_ttl) {
                    let new = stored(&live.value, index, Some(&live), 0);
                    values.insert(storage_key, Some(new));
                }
                OperationResult::Persisted { had_ttl }
            }
            Operation::CompareAndSwap { expected, new, .. } => {
                let swapped = live.as_ref().map(|found| &found.value) == expected.as_ref();
                if swapped {
                    let new = new
                        .as_ref()
                        .map(|new| stored(new, index, found.as_ref(), 0));
                    values.insert(storage_key, new);
                }
                let previous = live.map(|found| found.value);
                OperationResult::CompareAndSwap { swapped, previous }
            }
            Operation::CompareVersionAndSwap {
                expected_version,
                new,
                ..
            } => {
                // Absent matches 0 only; a present value matches its own version only when
                // that is not 0 (a value written before versions).
                let swapped = match &live {
                    None => *expected_version == 0,
                    Some(found) => found.version != 0 && found.version == *expected_version,
                };
                if swapped {
                    let new = new
                        .as_ref()
                        .map(|new| stored(new, index, found.as_ref(), 0));
                    values.insert(storage_key, new);
                }
                let previous_version = live.as_ref().map_or(0, |found| found.version);
                OperationResult::CompareVersionAndSwap {
                    swapped,
                    previous: live.map(|found| found.value),
                    previous_version,
                }
            }
        };
        Ok(result)
    }

    /// The value of a storage key as of the pending writes of this batch.
    fn current(
        &self,
        pending: &BTreeMap<Vec<u8>, Option<Versioned>>,
        storage_key: &[u8],
        max: u64,
    ) -> Result<Option<Versioned>> {
        if let Some(value) = pending.get(storage_key) {
            return Ok(value.clone());
        }
        match self.shared.data.get(storage_key)? {
            Some(bytes) => decode_value(&bytes, max).map(Some),
            None => Ok(None),
        }
    }
}

/// A value written by the entry at log `index` over `previous`: its version is the index, or
/// one more than the previous version when that is larger (only after a split, below). Log indexes grow within a shard,
/// but a split's new shard starts its own log at a low index while its keys keep the versions
/// they had in the parent: this keeps a key's version growing with every write, so a stale
/// version never matches again (no ABA for a compare-and-swap on the version). Every replica
/// computes the same version from the same state.
/// `expires_at_ms` is the new value's expiry (0 = none): a write replaces the TTL.
fn stored(
    value: &Bytes,
    index: u64,
    previous: Option<&Versioned>,
    expires_at_ms: u64,
) -> Versioned {
    let version = match previous {
        // (Equal: the same entry wrote the key before; the entry is atomic, one version.)
        Some(previous) if previous.version > index => previous.version.saturating_add(1),
        _ => index,
    };
    Versioned {
        value: value.clone(),
        version,
        expires_at_ms,
    }
}

/// Deterministic validation of an operation's sizes (the same on every replica).
fn reject(operation: &Operation) -> Option<OperationResult> {
    let (key, values): (&Bytes, [Option<&Bytes>; 2]) = match operation {
        Operation::Put { key, value } | Operation::PutWithTtl { key, value, .. } => {
            (key, [Some(value), None])
        }
        Operation::Delete { key } | Operation::Persist { key } | Operation::Expire { key } => {
            (key, [None, None])
        }
        Operation::CompareAndSwap { key, expected, new } => {
            (key, [expected.as_ref(), new.as_ref()])
        }
        Operation::CompareVersionAndSwap { key, new, .. } => (key, [new.as_ref(), None]),
    };
    if key.len() > KEY_BYTES_MAX {
        return Some(OperationResult::KeyTooLarge);
    }
    if values
        .iter()
        .flatten()
        .any(|value| value.len() > VALUE_BYTES_MAX)
    {
        return Some(OperationResult::ValueTooLarge);
    }
    None
}
