//! A data shard's state machine, with no I/O: committed commands (puts, deletes,
//! compare-and-swaps, with exactly-once sessions) and session expiry passes become one
//! [`ApplyBatch`] and the results to answer, computed from reads through [`StateStore`]. The
//! same code runs over the fjall store and the memory store, so every replica (and the
//! simulator) computes the same state from the same log.

use crate::command::{
    Command, CommandResult, KEY_BYTES_MAX, Operation, OperationResult, SessionRecord,
    VALUE_BYTES_MAX,
};
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::state_store::{ApplyBatch, StateStore};
use crate::value::Versioned;
use bytes::Bytes;
use ringkv_types::raft::ConfState;
use ringkv_types::{ShardId, WatchEvent, WatchEventKind, ring};

/// What [`expire_sessions`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionExpiry {
    /// Sessions dropped.
    pub dropped: u64,
    /// Sessions left in the table.
    pub remaining: u64,
}

/// A run of committed commands of one shard, as the node's apply plan holds them.
#[derive(Clone, Copy, Debug)]
pub struct CommandRun<'a> {
    /// The commands, in log order.
    pub commands: &'a [Command],
    /// Each command's log time (`now_ms` stamped by its leader, 0 = unknown), recorded as its
    /// session's `last_ms`; empty or one per command.
    pub stamps: &'a [u64],
    /// Each command's log index, stored as the version of the keys it writes; empty = every
    /// command is at the batch's applied index.
    pub indexes: &'a [u64],
    /// Whether every key of the shard has a version no higher than the log index being applied
    /// (true of every shard whose log began where its keys' versions stood: a bootstrap shard,
    /// a `SplitFromEntry` child; not of a child of the first split format, whose log restarted
    /// at index 5 under the parent's versions). Then a put's version is its index and the
    /// previous value is not read (a memtable lookup per put). A claim the caller makes; debug
    /// builds check it on every put.
    pub versions_follow_index: bool,
}

impl<'a> CommandRun<'a> {
    /// `commands` with no stamps, all at the applied index (one entry, or tests).
    pub fn plain(commands: &'a [Command]) -> Self {
        Self {
            commands,
            stamps: &[],
            indexes: &[],
            versions_follow_index: false,
        }
    }
}

/// Applies `run` to `shard` at `applied`: the batch to commit (data, sessions, the applied
/// position, `conf` and `meta` records) and one result per command.
///
/// Exactly-once: a command with a session whose sequence equals the session's last applied
/// one returns the saved result without applying again; a lower one returns
/// [`CommandResult::StaleSequence`]. Oversized keys and values are rejected per operation,
/// alike on every replica.
///
/// # Errors
/// [`Error::InvalidWrite`] when `applied.index` does not advance (an empty run may repeat the
/// current position) or when `stamps` or `indexes` is neither empty nor one per command;
/// [`Error::TooLarge`] for a meta record over the limits; read errors of `store`.
pub fn apply_commands<S: StateStore + ?Sized>(
    store: &S,
    shard: ShardId,
    run: CommandRun<'_>,
    applied: AppliedState,
    conf: Option<&ConfState>,
    meta: &[(&[u8], &[u8])],
) -> Result<(ApplyBatch, Vec<CommandResult>)> {
    let commands = run.commands;
    for (what, len) in [("stamps", run.stamps.len()), ("indexes", run.indexes.len())] {
        if len != 0 && len != commands.len() {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!("{len} {what} for {} commands", commands.len()),
            });
        }
    }
    let previous = store.applied(shard)?;
    if applied.index <= previous.index && !(applied == previous && commands.is_empty()) {
        return Err(Error::InvalidWrite {
            shard,
            reason: format!(
                "applied index {} does not advance {}",
                applied.index, previous.index
            ),
        });
    }
    let mut batch = ApplyBatch::new(shard, applied);
    batch.conf = conf.cloned();
    batch.meta = meta
        .iter()
        .map(|(name, value)| (name.to_vec(), value.to_vec()))
        .collect();
    batch.validate(previous, store.record_bytes_max())?;
    let mut results = Vec::with_capacity(commands.len());
    for (at, command) in commands.iter().enumerate() {
        let stamp = run.stamps.get(at).copied().unwrap_or(0);
        let index = run.indexes.get(at).copied().unwrap_or(applied.index.0);
        if let Some(request) = command.session {
            let record = match batch.sessions.get(&request.session) {
                Some(pending) => pending.clone(),
                None => store.session(shard, request.session)?,
            };
            if let Some(record) = record {
                if request.sequence == record.sequence {
                    results.push(CommandResult::Repeated {
                        results: record.result,
                        index: record.index,
                    });
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
            let result = match reject(operation) {
                Some(rejected) => rejected,
                None => apply_operation(
                    store,
                    &mut batch,
                    operation,
                    (index, stamp),
                    run.versions_follow_index,
                )?,
            };
            operation_results.push(result);
        }
        if let Some(request) = command.session {
            batch.sessions.insert(
                request.session,
                Some(SessionRecord {
                    sequence: request.sequence,
                    result: operation_results.clone(),
                    last_ms: stamp,
                    index,
                }),
            );
        }
        results.push(CommandResult::Applied(operation_results));
    }
    Ok((batch, results))
}

/// Applies one valid operation of the entry at log `index` with log time `stamp` (0 = unknown)
/// into `batch`. A value whose TTL has run out at `stamp` counts as absent (every replica
/// decides alike: the time is the entry's). With `versions_follow_index` (see [`CommandRun`]) a
/// put does not read the previous value: its version is `index` either way.
fn apply_operation<S: StateStore + ?Sized>(
    store: &S,
    batch: &mut ApplyBatch,
    operation: &Operation,
    (index, stamp): (u64, u64),
    versions_follow_index: bool,
) -> Result<OperationResult> {
    let storage_key = ring::storage_key(operation.key());
    let blind = versions_follow_index
        && matches!(
            operation,
            Operation::Put { .. } | Operation::PutWithTtl { .. }
        );
    let found = if blind && !cfg!(debug_assertions) {
        None
    } else {
        match batch.values.get(&storage_key) {
            Some(pending) => pending.clone(),
            None => store.value(&storage_key)?,
        }
    };
    // IMPORTANT: a wrong claim would let a key's version go backwards (a stale version could
    // match a compare-and-swap again); debug builds, so every test, check it.
    debug_assert!(
        !blind || found.as_ref().is_none_or(|found| found.version <= index),
        "{:?} holds version {} above the log index {index} of a shard whose versions follow \
         its log index",
        operation.key(),
        found.as_ref().map_or(0, |found| found.version),
    );
    let found = if blind { None } else { found };
    // The version of a new value grows from the stored one, expired or not (see `stored`).
    let live = found.clone().filter(|found| found.live_at(stamp));
    Ok(match operation {
        Operation::Put { value, .. } => {
            let stored = stored(value, index, found.as_ref(), 0);
            put_event(batch, operation.key(), &stored, index);
            batch.values.insert(storage_key, Some(stored));
            OperationResult::Put
        }
        Operation::PutWithTtl { value, ttl_ms, .. } => {
            if *ttl_ms == 0 || stamp == 0 {
                return Ok(OperationResult::InvalidTtl);
            }
            let expires_at_ms = stamp.saturating_add(*ttl_ms);
            let new = stored(value, index, found.as_ref(), expires_at_ms);
            put_event(batch, operation.key(), &new, index);
            batch.values.insert(storage_key, Some(new));
            OperationResult::Put
        }
        Operation::Delete { .. } => {
            if let Some(found) = &found {
                delete_event(batch, operation.key(), found, index, WatchEventKind::Delete);
            }
            batch.values.insert(storage_key, None);
            OperationResult::Deleted {
                existed: live.is_some(),
            }
        }
        Operation::Expire { .. } => {
            let expired = found.is_some() && live.is_none();
            if let Some(found) = found.as_ref().filter(|_| expired) {
                delete_event(batch, operation.key(), found, index, WatchEventKind::Expire);
                batch.values.insert(storage_key, None);
            }
            OperationResult::Deleted { existed: expired }
        }
        Operation::Persist { .. } => {
            let had_ttl = live.as_ref().is_some_and(|live| live.expires_at_ms != 0);
            if let Some(live) = live.filter(|_| had_ttl) {
                let new = stored(&live.value, index, Some(&live), 0);
                put_event(batch, operation.key(), &new, index);
                batch.values.insert(storage_key, Some(new));
            }
            OperationResult::Persisted { had_ttl }
        }
        Operation::CompareAndSwap { expected, new, .. } => {
            let swapped = live.as_ref().map(|found| &found.value) == expected.as_ref();
            if swapped {
                let new = new
                    .as_ref()
                    .map(|new| stored(new, index, found.as_ref(), 0));
                swap_event(batch, operation.key(), found.as_ref(), new.as_ref(), index);
                batch.values.insert(storage_key, new);
            }
            OperationResult::CompareAndSwap {
                swapped,
                previous: live.map(|found| found.value),
            }
        }
        Operation::CompareVersionAndSwap {
            expected_version,
            new,
            ..
        } => {
            // Absent matches 0 only; a present value matches its own version only when that
            // is not 0 (a value written before versions).
            let swapped = match &live {
                None => *expected_version == 0,
                Some(found) => found.version != 0 && found.version == *expected_version,
            };
            if swapped {
                let new = new
                    .as_ref()
                    .map(|new| stored(new, index, found.as_ref(), 0));
                swap_event(batch, operation.key(), found.as_ref(), new.as_ref(), index);
                batch.values.insert(storage_key, new);
            }
            let previous_version = live.as_ref().map_or(0, |found| found.version);
            OperationResult::CompareVersionAndSwap {
                swapped,
                previous: live.map(|found| found.value),
                previous_version,
            }
        }
    })
}

/// Applies a session expiry entry of `shard` at log time `now_ms`: drops every session whose
/// last write is `idle_ms` or more older (see [`SessionRecord::expired`]) and stamps records
/// of unknown time with `now_ms` (so they expire one idle period later), with the applied
/// position, in one batch. Every replica applies the same entry to the same table, so the
/// tables stay equal.
///
/// # Errors
/// [`Error::InvalidWrite`] when `applied.index` does not advance; read errors of `store`.
pub fn expire_sessions<S: StateStore + ?Sized>(
    store: &S,
    shard: ShardId,
    now_ms: u64,
    idle_ms: u64,
    applied: AppliedState,
) -> Result<(ApplyBatch, SessionExpiry)> {
    let previous = store.applied(shard)?;
    if applied.index <= previous.index {
        return Err(Error::InvalidWrite {
            shard,
            reason: format!(
                "applied index {} does not advance {}",
                applied.index, previous.index
            ),
        });
    }
    let mut batch = ApplyBatch::new(shard, applied);
    let mut outcome = SessionExpiry::default();
    for (session, mut record) in store.sessions(shard)? {
        if record.expired(now_ms, idle_ms) {
            batch.sessions.insert(session, None);
            outcome.dropped += 1;
            continue;
        }
        outcome.remaining += 1;
        if record.last_ms == 0 {
            record.last_ms = now_ms;
            batch.sessions.insert(session, Some(record));
        }
    }
    Ok((batch, outcome))
}

/// A value written by the entry at log `index` over `previous`: its version is the index, or
/// one more than the previous version when that is larger. Log indexes grow within a shard,
/// and a split's new shard continues its parent's (`SplitFromEntry`), so the second case
/// arises only in shards split in the first format (their log restarted at index 5 while their
/// keys kept the parent's versions): it keeps a key's version growing with every write there
/// too. Every replica computes the same version from the same state.
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

/// Records a put of `key` for watches. Keys and values are copied: the entry's buffer they
/// point into must not stay alive with the history.
fn put_event(batch: &mut ApplyBatch, key: &Bytes, stored: &Versioned, index: u64) {
    batch.events.push(WatchEvent {
        key: Bytes::copy_from_slice(key),
        kind: WatchEventKind::Put {
            value: Bytes::copy_from_slice(&stored.value),
        },
        version: stored.version,
        index,
    });
}

/// Records the removal of `key` (holding `found`) for watches: the deletion's version is the
/// entry's index, or one more than the removed value's when that is larger (after a split), as
/// [`stored`] counts.
fn delete_event(
    batch: &mut ApplyBatch,
    key: &Bytes,
    found: &Versioned,
    index: u64,
    kind: WatchEventKind,
) {
    let version = if found.version > index {
        found.version.saturating_add(1)
    } else {
        index
    };
    batch.events.push(WatchEvent {
        key: Bytes::copy_from_slice(key),
        kind,
        version,
        index,
    });
}

/// Records a compare-and-swap's write: a put of `new`, or a delete of `found` (nothing when
/// both are absent).
fn swap_event(
    batch: &mut ApplyBatch,
    key: &Bytes,
    found: Option<&Versioned>,
    new: Option<&Versioned>,
    index: u64,
) {
    match (new, found) {
        (Some(new), _) => put_event(batch, key, new, index),
        (None, Some(found)) => delete_event(batch, key, found, index, WatchEventKind::Delete),
        (None, None) => {}
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
