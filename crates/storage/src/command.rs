//! The state machine's commands and results, as the node encodes them into Raft entries
//! (postcard; the entry's own envelope protects them on disk and on the wire).
//!
//! postcard has no schema evolution: adding or reordering fields or variants is a format change
//! that needs a new entry format version.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Largest user key: fjall keys are at most 65,535 bytes and the storage key adds the 8-byte ring
/// position. Fixed (not configurable) so every replica rejects the same commands.
pub const KEY_BYTES_MAX: usize = 65_535 - 8;

/// Largest value. Fixed for the same reason as [`KEY_BYTES_MAX`]; the node should refuse larger
/// proposals before they reach the log, and the state machine rejects any that do.
pub const VALUE_BYTES_MAX: usize = 32 << 20;

/// One write against a shard's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Sets `key` to `value`.
    Put {
        /// User key (not the storage key).
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Removes `key` (a no-op when absent).
    Delete {
        /// User key.
        key: Bytes,
    },
    /// Sets `key` to `new` (or removes it when `new` is `None`) only if its current value is
    /// `expected` (`None` = the key must be absent).
    CompareAndSwap {
        /// User key.
        key: Bytes,
        /// Required current value.
        expected: Option<Bytes>,
        /// Value to store on success; `None` deletes.
        new: Option<Bytes>,
    },
    /// Sets `key` to `new` (or removes it when `new` is `None`) only if its current version is
    /// `expected_version`: 0 = the key must be absent (etcd's `mod_revision == 0`); a value
    /// written before versions existed reads as version 0 but is present, so it matches no
    /// expected version (compare it by value). Appended last: postcard numbers variants.
    CompareVersionAndSwap {
        /// User key.
        key: Bytes,
        /// Required current version; 0 = absent.
        expected_version: u64,
        /// Value to store on success; `None` deletes.
        new: Option<Bytes>,
    },
    /// Sets `key` to `value`, expiring `ttl_ms` after the entry's log time (the `now_ms` its
    /// leader stamped): from then on the key is absent. Applied only in an entry with a log
    /// time (`OperationResult::InvalidTtl` otherwise, and for `ttl_ms == 0`). A later put
    /// without a TTL clears it; one with a TTL replaces it. Appended: postcard numbers variants.
    PutWithTtl {
        /// User key.
        key: Bytes,
        /// New value.
        value: Bytes,
        /// Time to live in milliseconds, counted from the entry's log time.
        ttl_ms: u64,
    },
    /// Clears the key's TTL (Redis `PERSIST`), keeping its value; a write (the key gets the
    /// entry's version) only when the key is there and has a TTL.
    Persist {
        /// User key.
        key: Bytes,
    },
    /// Removes `key` only if it has a TTL that has run out at the entry's log time: what a
    /// leader proposes for the expired keys it finds. Conditional, because the key may have
    /// been written again (or persisted) between the leader's look and the apply.
    Expire {
        /// User key.
        key: Bytes,
    },
}

impl Operation {
    /// The user key the operation writes.
    pub fn key(&self) -> &Bytes {
        match self {
            Operation::Put { key, .. }
            | Operation::Delete { key }
            | Operation::CompareAndSwap { key, .. }
            | Operation::CompareVersionAndSwap { key, .. }
            | Operation::PutWithTtl { key, .. }
            | Operation::Persist { key }
            | Operation::Expire { key } => key,
        }
    }
}

/// A client's exactly-once identity for one write: the session and the sequence number within
/// it. Sequence numbers of a session start at 1 and grow by one per new write; a retry reuses
/// the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRequest {
    /// Client session id, unique per client instance.
    pub session: u64,
    /// Sequence number of this write within the session.
    pub sequence: u64,
}

/// A committed command: one or more operations applied atomically, optionally deduplicated by
/// session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Exactly-once identity; `None` for writes that need no deduplication.
    pub session: Option<SessionRequest>,
    /// Operations, applied in order. A failed compare-and-swap does not stop later operations;
    /// each has its own result.
    pub operations: Vec<Operation>,
}

/// Result of one operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationResult {
    /// A put was applied.
    Put,
    /// A delete was applied; whether the key existed.
    Deleted {
        /// The key had a value before.
        existed: bool,
    },
    /// A compare-and-swap: whether it swapped and the value it found.
    CompareAndSwap {
        /// The expected value matched and the new one was stored.
        swapped: bool,
        /// The value found before the operation.
        previous: Option<Bytes>,
    },
    /// Nothing was written: the key is longer than [`KEY_BYTES_MAX`].
    KeyTooLarge,
    /// Nothing was written: a value is longer than [`VALUE_BYTES_MAX`].
    ValueTooLarge,
    /// A compare-and-swap on the version: whether it swapped and what it found.
    CompareVersionAndSwap {
        /// The expected version matched and the new value was stored (or the key removed).
        swapped: bool,
        /// The value found before the operation.
        previous: Option<Bytes>,
        /// Its version (0 when absent or written before versions).
        previous_version: u64,
    },
    /// Nothing was written: a TTL of 0, or a TTL in an entry without a log time.
    InvalidTtl,
    /// A persist: whether the key was there with a TTL (which is now cleared).
    Persisted {
        /// The key existed and had a TTL.
        had_ttl: bool,
    },
}

/// Result of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The command was applied now: the results of its operations.
    Applied(Vec<OperationResult>),
    /// The command is a retry of one the session applied earlier: the results it had then,
    /// and the log index of the entry that applied it (0 = unknown: a session record written
    /// before the index was kept). A retry's answer names that index, not its own entry's:
    /// the index is the version the write gave its keys.
    Repeated {
        /// The results of the operations when they were applied.
        results: Vec<OperationResult>,
        /// The log index of the entry that applied them (0 = unknown).
        index: u64,
    },
    /// The session has already applied a later sequence number, so this one's result is gone.
    /// The client must not retry it.
    StaleSequence {
        /// The last sequence number the session applied.
        last_applied: u64,
    },
}

/// The session table entry of one client session in one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The last applied sequence number.
    pub sequence: u64,
    /// Its result, returned again to a retry.
    pub result: Vec<OperationResult>,
    /// Log time of the session's last write: the `now_ms` its leader stamped into the entry
    /// (milliseconds since the Unix epoch), the same on every replica. 0 = unknown (a record or
    /// entry written before log time existed); an expiry pass stamps it with its own time.
    pub last_ms: u64,
    /// The log index of the entry that applied `sequence`, answered again to a retry (the
    /// version its writes gave). 0 = unknown (a record written before the field existed).
    /// Last, so a build without it still decodes the record (postcard ignores trailing bytes).
    pub index: u64,
}

/// [`SessionRecord`] as written before `index` existed.
#[derive(Deserialize)]
struct SessionRecordV2 {
    sequence: u64,
    result: Vec<OperationResult>,
    last_ms: u64,
}

/// [`SessionRecord`] as written before `last_ms` existed (decoded when the current form does
/// not fit, so stores written by older builds keep their sessions).
#[derive(Deserialize)]
struct SessionRecordV1 {
    sequence: u64,
    result: Vec<OperationResult>,
}

impl SessionRecord {
    /// Decodes a stored record, current form first, then the form without `index`, then the
    /// form without `last_ms`.
    pub(crate) fn decode(bytes: &[u8], max_payload: u64) -> Result<Self, String> {
        let error = match crate::codec::decode::<SessionRecord>(bytes, max_payload) {
            Ok(record) => return Ok(record),
            Err(error) => error,
        };
        if let Ok(old) = crate::codec::decode::<SessionRecordV2>(bytes, max_payload) {
            return Ok(SessionRecord {
                sequence: old.sequence,
                result: old.result,
                last_ms: old.last_ms,
                index: 0,
            });
        }
        match crate::codec::decode::<SessionRecordV1>(bytes, max_payload) {
            Ok(old) => Ok(SessionRecord {
                sequence: old.sequence,
                result: old.result,
                last_ms: 0,
                index: 0,
            }),
            Err(_) => Err(error),
        }
    }

    /// Whether an expiry pass at log time `now_ms` with idle limit `idle_ms` drops this
    /// session: its last write is `idle_ms` or more before `now_ms`. A record of unknown time
    /// (`last_ms == 0`) is never dropped by the pass that first sees it.
    pub fn expired(&self, now_ms: u64, idle_ms: u64) -> bool {
        self.last_ms != 0 && now_ms.saturating_sub(self.last_ms) >= idle_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session record written before `last_ms` existed (sequence and result only) still
    /// decodes, with an unknown time; the current form round-trips; garbage is an error.
    #[test]
    fn session_records_of_the_previous_form_still_decode() {
        #[derive(Serialize)]
        struct Old {
            sequence: u64,
            result: Vec<OperationResult>,
        }
        let old = crate::codec::encode(&Old {
            sequence: 4,
            result: vec![OperationResult::Put],
        });
        let record = SessionRecord::decode(&old, 1024).unwrap();
        assert_eq!((record.sequence, record.last_ms, record.index), (4, 0, 0));
        #[derive(Serialize)]
        struct WithoutIndex {
            sequence: u64,
            result: Vec<OperationResult>,
            last_ms: u64,
        }
        let without_index = crate::codec::encode(&WithoutIndex {
            sequence: 6,
            result: vec![OperationResult::Put],
            last_ms: 1_700_000_000_000,
        });
        let record = SessionRecord::decode(&without_index, 1024).unwrap();
        assert_eq!(
            (record.sequence, record.last_ms, record.index),
            (6, 1_700_000_000_000, 0)
        );
        let new = SessionRecord {
            sequence: 5,
            result: vec![OperationResult::Deleted { existed: true }],
            last_ms: 1_800_000_000_000,
            index: 42,
        };
        let bytes = crate::codec::encode(&new);
        assert_eq!(SessionRecord::decode(&bytes, 1024).unwrap(), new);
        assert!(SessionRecord::decode(&bytes[..bytes.len() - 1], 1024).is_err());
    }

    #[test]
    fn expiry_needs_a_known_time_and_the_full_idle_period() {
        let record = |last_ms| SessionRecord {
            sequence: 1,
            result: Vec::new(),
            last_ms,
            index: 0,
        };
        assert!(!record(0).expired(u64::MAX, 1));
        assert!(!record(100).expired(199, 100));
        assert!(record(100).expired(200, 100));
        // A clock that went backwards never expires anything.
        assert!(!record(500).expired(100, 1));
    }
}
