//! The node's Raft log command format: what the payload of a normal entry holds.
//!
//! `postcard(LogCommand)`; the entry's own envelope (version, length, crc32) protects it on disk
//! and on the wire. postcard has no schema evolution: variants are only ever appended.

use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_storage::Command;
use ringkv_types::ShardMap;
use serde::{Deserialize, Serialize};

/// One command in a group's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogCommand {
    /// Data shards: a state-machine command applied through `Store::apply`.
    Kv(Command),
    /// Placement driver (group 0): replace the shard map. Nothing proposes it yet (static
    /// membership in this version); the variant fixes the format for the PD scheduler.
    SetShardMap(ShardMap),
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
