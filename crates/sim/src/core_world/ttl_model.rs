//! One shard's committed log replayed with the client-visible semantics of TTL keys (the
//! model the log-time checks of `ttl.rs` judge operations against).

use super::ttl::{LOG_TIME_CHECK, OpNote};
use crate::checkers::Violation;
use crate::kv::{Op, OpResult};
use ringkv_node::log_command::LogCommand;
use ringkv_storage::Operation;
use ringkv_types::raft::{Entry, EntryPayload};
use std::collections::BTreeMap;

/// A key's value in the model: the value and its expiry (0 = none).
type ModelValue = Option<(u64, u64)>;

/// One shard's committed log replayed with the client-visible semantics.
#[derive(Default)]
pub(super) struct LogModel {
    /// Per key: (index, value from that index on).
    changes: BTreeMap<Vec<u8>, Vec<(u64, ModelValue)>>,
    /// (first apply time, index), for the largest index applied before a time.
    applied_at: Vec<(u64, u64)>,
    /// A client write's (session, sequence) -> (index, compare-and-swap result).
    writes: BTreeMap<(u64, u64), (u64, Option<bool>)>,
    /// Removals the sweep proposed (operations of its entries).
    pub(super) sweep_removals: u64,
}

impl LogModel {
    pub(super) fn build(entries: &BTreeMap<u64, (Entry, u64)>) -> Self {
        let mut model = LogModel::default();
        let mut current: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
        let mut sessions: BTreeMap<u64, u64> = BTreeMap::new();
        let mut applied_by = 0;
        for (index, (entry, first_applied)) in entries {
            // (Kept sorted by time even if a later index were applied first: a later bound
            // only weakens the check.)
            applied_by = applied_by.max(*first_applied);
            model.applied_at.push((applied_by, *index));
            let EntryPayload::Normal(data) = &entry.payload else {
                continue;
            };
            let (stamp, command) = match LogCommand::decode(data) {
                Ok(LogCommand::KvAt { now_ms, command }) => (now_ms, command),
                Ok(LogCommand::Kv(command)) => (0, command),
                _ => continue,
            };
            if let Some(request) = command.session {
                let last = sessions.entry(request.session).or_insert(0);
                if request.sequence <= *last {
                    continue;
                }
                *last = request.sequence;
            }
            let mut swapped = None;
            for operation in &command.operations {
                if command.session.is_none()
                    && matches!(
                        operation,
                        Operation::Expire { .. } | Operation::Delete { .. }
                    )
                {
                    model.sweep_removals += 1;
                }
                let key = operation.key().to_vec();
                let live = current
                    .get(&key)
                    .copied()
                    .filter(|(_, expires)| *expires == 0 || stamp == 0 || stamp < *expires);
                let new: Option<ModelValue> = match operation {
                    Operation::Put { value, .. } => Some(decode(value).map(|v| (v, 0))),
                    Operation::PutWithTtl { value, ttl_ms, .. } => (*ttl_ms > 0 && stamp > 0)
                        .then(|| decode(value).map(|v| (v, stamp + ttl_ms))),
                    Operation::Delete { .. } if command.session.is_some() => Some(None),
                    // The sweep's removals (in entries with no session) take effect as the
                    // design says `Expire` does: only if the key is expired at the entry's
                    // stamp. Whatever they remove beyond that shows as a lost write.
                    Operation::Delete { .. } | Operation::Expire { .. } => {
                        let stored = current.contains_key(&key);
                        (stored && live.is_none()).then_some(None)
                    }
                    Operation::CompareAndSwap { expected, new, .. } => {
                        let hit =
                            live.map(|(v, _)| v) == expected.as_deref().and_then(decode_slice);
                        swapped = Some(hit);
                        hit.then(|| new.as_deref().and_then(decode_slice).map(|v| (v, 0)))
                    }
                    _ => None,
                };
                if let Some(new) = new {
                    match new {
                        Some(value) => current.insert(key.clone(), value),
                        None => current.remove(&key),
                    };
                    model.changes.entry(key).or_default().push((*index, new));
                }
            }
            if let Some(request) = command.session {
                model
                    .writes
                    .insert((request.session, request.sequence), (*index, swapped));
            }
        }
        model
    }

    /// The key's value after index `p`.
    fn value_at(&self, key: &[u8], p: u64) -> ModelValue {
        self.changes
            .get(key)
            .and_then(|changes| changes.iter().rev().find(|(index, _)| *index <= p))
            .and_then(|(_, value)| *value)
    }

    /// The largest index some replica applied strictly before world time `at` (first apply
    /// times grow with the index: a replica applies in order).
    fn applied_before(&self, at: u64) -> u64 {
        let count = self.applied_at.partition_point(|(time, _)| *time < at);
        count
            .checked_sub(1)
            .and_then(|last| self.applied_at.get(last))
            .map_or(0, |(_, index)| *index)
    }

    /// Checks one operation against the log; true for a read that found its value expired.
    pub(super) fn check(
        &self,
        operation: &crate::history::Operation,
        note: &OpNote,
        read_ms: Option<u64>,
    ) -> Result<bool, Violation> {
        let key = super::clients::user_key(operation.op.key()).to_vec();
        let shard = operation.group;
        let lo = self.applied_before(note.invoked);
        let fail = |check: &'static str, detail: String| {
            Err(Violation {
                check,
                detail: format!("shard {shard} key {}: {detail}", operation.op.key()),
            })
        };
        match (operation.op, operation.completed) {
            (Op::Get(_), Some((_, OpResult::Value(seen)))) => {
                let (Some(p), Some(read_ms)) = (note.index, read_ms) else {
                    return fail(
                        LOG_TIME_CHECK,
                        "a read answered without its index or time".into(),
                    );
                };
                if p < lo {
                    return fail(
                        LOG_TIME_CHECK,
                        format!("read at index {p}, but index {lo} was applied before it began"),
                    );
                }
                let stored = self.value_at(&key, p);
                let expected = stored
                    .filter(|(_, expires)| *expires == 0 || read_ms < *expires)
                    .map(|(value, _)| value);
                if expected != seen {
                    return fail(
                        LOG_TIME_CHECK,
                        format!(
                            "read at index {p}, log time {read_ms} saw {seen:?}, the log holds {expected:?} (stored {stored:?})"
                        ),
                    );
                }
                return Ok(stored.is_some() && expected.is_none());
            }
            (_, Some((_, result))) if !matches!(operation.op, Op::Get(_)) => {
                let Some(session) = note.session else {
                    return Ok(false);
                };
                let Some((index, swapped)) = self.writes.get(&session).copied() else {
                    return fail(
                        LOG_TIME_CHECK,
                        format!("acknowledged write {:?} is not in the log", operation.op),
                    );
                };
                if note.index.is_some_and(|answered| answered != index) {
                    return fail(
                        LOG_TIME_CHECK,
                        format!(
                            "write answered index {:?}, its entry is at {index}",
                            note.index
                        ),
                    );
                }
                if index <= lo {
                    return fail(
                        LOG_TIME_CHECK,
                        format!(
                            "write at index {index}, but index {lo} was applied before it began"
                        ),
                    );
                }
                let applied_at = self
                    .applied_at
                    .get(self.applied_at.partition_point(|(_, at)| *at < index))
                    .map(|(time, _)| *time);
                if let (Some(applied_at), Some(answered_at)) = (applied_at, note.answered)
                    && applied_at > answered_at
                {
                    return fail(
                        LOG_TIME_CHECK,
                        format!(
                            "write answered at {answered_at}, its entry {index} first applied at \
                             {applied_at}"
                        ),
                    );
                }
                if let OpResult::Swapped(answered) = result
                    && swapped != Some(answered)
                {
                    return fail(
                        LOG_TIME_CHECK,
                        format!(
                            "compare-and-swap at index {index} answered {answered}, the log implies {swapped:?}"
                        ),
                    );
                }
            }
            _ => {}
        }
        Ok(false)
    }
}

fn decode(value: &bytes::Bytes) -> Option<u64> {
    decode_slice(value)
}

fn decode_slice(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}
