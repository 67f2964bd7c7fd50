//! The replicated state machine the simulated clients use: a map from key to value with put,
//! get, delete and compare-and-swap.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A key within one group.
pub type Key = u8;
/// Values are unique per write so the linearizability checker can tell writes apart.
pub type Value = u64;

/// A state machine operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Read a key.
    Get(Key),
    /// Write a key.
    Put(Key, Value),
    /// Remove a key.
    Delete(Key),
    /// Write `new` if the key currently holds `expected` (`None`: absent).
    Cas {
        /// Key.
        key: Key,
        /// Expected current value.
        expected: Option<Value>,
        /// Value to write.
        new: Value,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match *self {
            Op::Get(key) | Op::Put(key, _) | Op::Delete(key) => key,
            Op::Cas { key, .. } => key,
        }
    }
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Get: the value read.
    Value(Option<Value>),
    /// Put or delete done.
    Done,
    /// Compare-and-swap: whether it swapped.
    Swapped(bool),
}

/// A command as stored in a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Client that issued it.
    pub client: u64,
    /// The client's operation number.
    pub op_id: u64,
    /// The operation (never `Get`: reads do not go through the log).
    pub op: Op,
}

impl Command {
    /// Encodes for a log entry.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// Decodes a log entry.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

/// The state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Current values.
    pub values: BTreeMap<Key, Value>,
}

impl KvState {
    /// Applies `op` and returns its result. Deterministic: every replica gets the same answer.
    pub fn apply(&mut self, op: &Op) -> OpResult {
        match *op {
            Op::Get(key) => OpResult::Value(self.values.get(&key).copied()),
            Op::Put(key, value) => {
                self.values.insert(key, value);
                OpResult::Done
            }
            Op::Delete(key) => {
                self.values.remove(&key);
                OpResult::Done
            }
            Op::Cas { key, expected, new } => {
                if self.values.get(&key).copied() == expected {
                    self.values.insert(key, new);
                    OpResult::Swapped(true)
                } else {
                    OpResult::Swapped(false)
                }
            }
        }
    }

    /// Serializes for a snapshot.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// Restores from a snapshot (an empty snapshot is an empty map).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::default());
        }
        postcard::from_bytes(bytes).ok()
    }
}
