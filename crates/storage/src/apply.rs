//! Applying committed commands to a shard's data.

use crate::codec;
use crate::command::{Command, CommandResult, SessionRecord};
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::keys;
use crate::kv_machine::{self, CommandRun, SessionExpiry};
use crate::scan::{ScanPage, ScanRequest};
use crate::session_table::{SessionTable, lock_table};
use crate::state_store::{ApplyBatch, StateStore};
use crate::store::{Store, decode_value, lock_group};
use crate::value::Versioned;
use bytes::Bytes;
use ringkv_types::raft::ConfState;
use ringkv_types::{ShardId, envelope};
use std::sync::{Arc, Mutex};

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
        self.shared.check_writable()?;
        let run = CommandRun {
            commands,
            stamps,
            indexes,
            versions_follow_index: false,
        };
        let (batch, results) = kv_machine::apply_commands(self, shard, run, applied, conf, meta)?;
        self.commit_batch(batch)?;
        Ok(results)
    }

    /// Applies a session expiry entry of `shard` at log time `now_ms` (see
    /// [`kv_machine::expire_sessions`]) and records `applied`, in one atomic batch. Returns how
    /// many sessions were dropped and how many remain.
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
        self.shared.check_writable()?;
        let (batch, outcome) = kv_machine::expire_sessions(self, shard, now_ms, idle_ms, applied)?;
        self.commit_batch(batch)?;
        Ok(outcome)
    }

    /// Commits an [`ApplyBatch`] in ONE atomic fjall batch, not synced (see
    /// [`Store::apply`]), then updates the session table and applied position in memory.
    ///
    /// # Errors
    /// [`ApplyBatch::validate`]'s errors; [`Error::Poisoned`]; fjall errors (which poison the
    /// store).
    pub fn commit_batch(&self, batch: ApplyBatch) -> Result<()> {
        let shared = &self.shared;
        shared.check_writable()?;
        let shard = batch.shard;
        let cache = shared.group(shard)?;
        let previous = lock_group(&cache).applied;
        batch.validate(previous, shared.config.record_bytes_max)?;
        // The session table in memory (never read back from fjall here); updated only after
        // the batch committed.
        let table = self.session_table(shard)?;
        let mut table = lock_table(&table);
        let mut writes = shared.db.batch().durability(None);
        for (key, value) in &batch.values {
            match value {
                Some(stored) => writes.insert(
                    &shared.data,
                    key.as_slice(),
                    crate::value::encode(&stored.value, stored.version, stored.expires_at_ms),
                ),
                None => writes.remove(&shared.data, key.as_slice()),
            }
        }
        for (session, record) in &batch.sessions {
            let key = keys::session_key(shard, *session).to_vec();
            match record {
                Some(record) => writes.insert(&shared.raft_state, key, codec::encode(record)),
                None => writes.remove(&shared.raft_state, key),
            }
        }
        writes.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_APPLIED).to_vec(),
            codec::encode(&batch.applied),
        );
        if let Some(conf) = &batch.conf {
            writes.insert(
                &shared.raft_state,
                keys::state_key(shard, keys::KIND_CONF).to_vec(),
                codec::encode(conf),
            );
        }
        for (name, value) in &batch.meta {
            writes.insert(&shared.meta, keys::meta_key(name), envelope::encode(value));
        }
        // IMPORTANT: data, sessions and the applied index commit in one batch, so a restart never
        // re-applies an entry whose effects are already on disk.
        if let Err(error) = shared.commit(writes) {
            shared.sessions.forget(shard);
            return Err(error);
        }
        for (session, record) in batch.sessions {
            match record {
                Some(record) => table.insert(session, record),
                None => table.remove(&session),
            };
        }
        drop(table);
        let mut state = lock_group(&cache);
        state.applied = batch.applied;
        if let Some(conf) = batch.conf {
            state.conf = Some(conf);
        }
        Ok(())
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
}

/// The fjall store as the state machine's [`StateStore`]: session reads come from the table in
/// memory, value reads from the `data` keyspace, and batches go into the journal unsynced.
impl StateStore for Store {
    fn applied(&self, shard: ShardId) -> Result<AppliedState> {
        Store::applied(self, shard)
    }

    fn value(&self, storage_key: &[u8]) -> Result<Option<Versioned>> {
        match self.shared.data.get(storage_key)? {
            Some(bytes) => decode_value(&bytes, self.shared.config.record_bytes_max).map(Some),
            None => Ok(None),
        }
    }

    fn session(&self, shard: ShardId, session: u64) -> Result<Option<SessionRecord>> {
        let table = self.session_table(shard)?;
        let record = lock_table(&table).get(&session).cloned();
        Ok(record)
    }

    fn sessions(&self, shard: ShardId) -> Result<Vec<(u64, SessionRecord)>> {
        let table = self.session_table(shard)?;
        let mut sessions: Vec<(u64, SessionRecord)> = lock_table(&table)
            .iter()
            .map(|(session, record)| (*session, record.clone()))
            .collect();
        sessions.sort_unstable_by_key(|(session, _)| *session);
        Ok(sessions)
    }

    fn meta(&self, name: &[u8]) -> Result<Option<Bytes>> {
        Store::meta(self, name)
    }

    fn scan_page(&self, request: &ScanRequest<'_>) -> Result<ScanPage> {
        Store::scan_page(self, request)
    }

    fn expired_keys(
        &self,
        arc: ringkv_types::ring::Arc,
        start: &[u8],
        now_ms: u64,
        examine_max: usize,
        keys_max: usize,
    ) -> Result<crate::scan::ExpiredKeys> {
        Store::expired_keys(self, arc, start, now_ms, examine_max, keys_max)
    }

    fn record_bytes_max(&self) -> u64 {
        self.shared.config.record_bytes_max
    }

    fn commit_apply(&mut self, batch: ApplyBatch) -> Result<()> {
        self.commit_batch(batch)
    }

    fn journal_mark(&self) -> u64 {
        0
    }

    fn batches_durable(&mut self, _mark: u64) {
        // The journal orders every apply batch before the group commit that follows it.
    }
}
