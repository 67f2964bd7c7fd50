//! The node's Raft log command format: what the payload of a normal entry holds.
//!
//! `postcard(LogCommand)`; the entry's own envelope (version, length, crc32) protects it on disk
//! and on the wire. postcard has no schema evolution: variants are only ever appended.

use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_storage::Command;
use ringkv_types::{Epoch, ShardId, ShardMap};
use serde::{Deserialize, Serialize};

/// The postcard variant index of [`LogCommand::Split`].
const SPLIT_VARIANT: u8 = 2;
/// The postcard variant index of [`LogCommand::ExpireSessions`].
const EXPIRE_VARIANT: u8 = 5;
/// The postcard variant index of [`LogCommand::SplitFromEntry`].
const SPLIT_FROM_ENTRY_VARIANT: u8 = 6;

/// One command in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCommand {
    /// Data shards: a state-machine command applied through `Store::apply`.
    Kv(Command),
    /// Placement driver (group 0), first format: replace the shard map. Never proposed (the
    /// PD state machine, [`LogCommand::Pd`], replaced it); skipped when applied.
    SetShardMap(ShardMap),
    /// Data shards, first format of a split (no longer proposed; replayed as written): split
    /// the shard at ring position `at` into `[start, at)` (kept) and `[at, end)` (the new
    /// shard `new_shard`, its log starting at index 5 like a bootstrap group). Applied only
    /// when the shard's epoch still equals `epoch` and `at` lies strictly inside its arc;
    /// otherwise every replica skips it alike.
    Split {
        /// The epoch the leader proposed against.
        epoch: Epoch,
        /// The new shard's id.
        new_shard: ShardId,
        /// Where the new shard starts.
        at: u64,
    },
    /// Placement driver (group 0): a command applied to the PD state on every PD replica
    /// (`ringkv_pd::PdState::apply`), its `now_ms` stamped by the PD leader that proposed it.
    Pd(ringkv_pd::Command),
    /// Data shards: [`LogCommand::Kv`] with its log time, `now_ms` (ms since the Unix epoch)
    /// stamped by the leader that proposed it; recorded as the session's last write time.
    KvAt {
        /// The proposing leader's clock.
        now_ms: u64,
        /// The write.
        command: Command,
    },
    /// Data shards: drop client sessions idle for `idle_ms` or more at log time `now_ms`
    /// (`ringkv_storage::Store::expire_sessions`). Proposed by the leader now and then; the
    /// limit travels in the entry so every replica drops the same sessions.
    ExpireSessions {
        /// The proposing leader's clock.
        now_ms: u64,
        /// The idle limit.
        idle_ms: u64,
    },
    /// Data shards: [`LogCommand::Split`], with the new shard's log starting at this entry's
    /// index and term instead of index 5, so its keys' versions (log indexes) keep growing
    /// across the split. A new variant rather than a new meaning of `Split`: a committed
    /// entry must mean the same to every version that applies it (a node too old to decode
    /// this one stops instead of creating the shard differently).
    SplitFromEntry {
        /// The epoch the leader proposed against.
        epoch: Epoch,
        /// The new shard's id.
        new_shard: ShardId,
        /// Where the new shard starts.
        at: u64,
    },
}

impl LogCommand {
    /// Encodes the command as an entry payload.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if serde fails (it does not for these types).
    pub fn encode(&self) -> Result<Bytes> {
        postcard::to_stdvec(self)
            .map(Bytes::from)
            .map_err(|error| Error::Corrupt {
                what: "log command (encode)",
                reason: error.to_string(),
            })
    }

    /// Whether `payload` may be a [`LogCommand::Split`], without decoding it: postcard writes
    /// the variant index first, as a one-byte varint below 128. The apply loop uses this to
    /// cut a batch of entries at splits cheaply; it decodes the candidates fully.
    pub fn may_be_split(payload: &[u8]) -> bool {
        matches!(
            payload.first(),
            Some(&(SPLIT_VARIANT | SPLIT_FROM_ENTRY_VARIANT))
        )
    }

    /// Whether `payload` may be a [`LogCommand::ExpireSessions`] (see [`Self::may_be_split`]).
    pub fn may_be_expiry(payload: &[u8]) -> bool {
        payload.first() == Some(&EXPIRE_VARIANT)
    }

    /// A key-value write and its log time (0 when the entry has none), or the command itself
    /// when it is not a write.
    #[allow(
        clippy::result_large_err,
        reason = "the command is handed back by value to its caller, once per entry"
    )]
    pub fn into_kv(self) -> std::result::Result<(u64, Command), Self> {
        match self {
            LogCommand::KvAt { now_ms, command } => Ok((now_ms, command)),
            LogCommand::Kv(command) => Ok((0, command)),
            other => Err(other),
        }
    }

    /// Decodes an entry payload.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the payload is not a command of this format.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        postcard::from_bytes(payload).map_err(|error| Error::Corrupt {
            what: "log command",
            reason: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_recognised_by_their_first_byte() {
        let split = LogCommand::Split {
            epoch: Epoch {
                conf_ver: 1,
                version: 2,
            },
            new_shard: ShardId(9),
            at: 77,
        };
        let bytes = split.encode().unwrap();
        assert!(LogCommand::may_be_split(&bytes));
        assert_eq!(LogCommand::decode(&bytes).unwrap(), split);
        let kv = LogCommand::Kv(Command {
            session: None,
            operations: Vec::new(),
        });
        assert!(!LogCommand::may_be_split(&kv.encode().unwrap()));
        let map = LogCommand::SetShardMap(ShardMap {
            version: 1,
            shards: Vec::new(),
        });
        assert!(!LogCommand::may_be_split(&map.encode().unwrap()));
        let pd = LogCommand::Pd(ringkv_pd::Command::Tick { now_ms: 7 });
        let bytes = pd.encode().unwrap();
        assert!(!LogCommand::may_be_split(&bytes));
        // Appended after `Split`: the variant index is fixed by the format.
        assert_eq!(bytes.first(), Some(&3));
        assert_eq!(LogCommand::decode(&bytes).unwrap(), pd);
        let split = LogCommand::SplitFromEntry {
            epoch: Epoch {
                conf_ver: 1,
                version: 2,
            },
            new_shard: ShardId(9),
            at: 77,
        };
        let bytes = split.encode().unwrap();
        assert_eq!(bytes.first(), Some(&6));
        assert!(LogCommand::may_be_split(&bytes));
        assert_eq!(LogCommand::decode(&bytes).unwrap(), split);
    }

    #[test]
    fn stamped_writes_and_expiries_have_fixed_variant_indexes() {
        let kv = LogCommand::KvAt {
            now_ms: 1_800_000_000_000,
            command: Command {
                session: None,
                operations: Vec::new(),
            },
        };
        let bytes = kv.encode().unwrap();
        assert_eq!(bytes.first(), Some(&4));
        assert!(!LogCommand::may_be_split(&bytes) && !LogCommand::may_be_expiry(&bytes));
        assert_eq!(LogCommand::decode(&bytes).unwrap(), kv);
        let expiry = LogCommand::ExpireSessions {
            now_ms: 1_800_000_000_000,
            idle_ms: 60_000,
        };
        let bytes = expiry.encode().unwrap();
        assert!(LogCommand::may_be_expiry(&bytes) && !LogCommand::may_be_split(&bytes));
        assert_eq!(LogCommand::decode(&bytes).unwrap(), expiry);
    }
}
