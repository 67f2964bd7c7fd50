//! The node-local records of its replicas, in the store's `meta` keyspace.
//!
//! ```text
//! shard/     ‖ shard BE (8) -> postcard(ShardDescriptor)   the replica's current descriptor
//! tombstone/ ‖ shard BE (8) -> postcard(NodeId)            highest removed member id here
//! versions/  ‖ shard BE (8) -> (empty)                      the shard's versions follow its index
//! ```
//!
//! A shard's descriptor is owned by the shard's own Raft log: it is saved in the same atomic
//! batch as the apply of the configuration entry that changes it, or the snapshot install that
//! carries it, and a node runs exactly the groups of its local descriptors.

use crate::error::{Error, Result};
use ringkv_storage::{StateStore, Store};
use ringkv_types::{NodeId, ShardDescriptor, ShardId};
use std::collections::BTreeMap;

const DESCRIPTOR_PREFIX: &[u8] = b"shard/";
const TOMBSTONE_PREFIX: &[u8] = b"tombstone/";
const VERSIONS_PREFIX: &[u8] = b"versions/";

/// The meta name of `shard`'s local descriptor.
pub fn descriptor_key(shard: ShardId) -> Vec<u8> {
    let mut key = DESCRIPTOR_PREFIX.to_vec();
    key.extend_from_slice(&shard.get().to_be_bytes());
    key
}

/// The meta name of `shard`'s tombstone.
pub fn tombstone_key(shard: ShardId) -> Vec<u8> {
    let mut key = TOMBSTONE_PREFIX.to_vec();
    key.extend_from_slice(&shard.get().to_be_bytes());
    key
}

/// The meta name of `shard`'s record that its keys' versions never exceed its log index (see
/// `ringkv_storage::kv_machine::CommandRun::versions_follow_index`). Written with the group
/// by the node that creates it at bootstrap or by a `SplitFromEntry` split, whose logs begin
/// where their keys' versions stood; absent for a child of the first split format and for a
/// replica that arrived by snapshot (whose node cannot tell), which read each put's previous
/// value. A fact of the shard (every replica's data is the same at the same index), so it is
/// kept when the replica is removed: a later replica here may use it.
pub fn versions_follow_index_key(shard: ShardId) -> Vec<u8> {
    let mut key = VERSIONS_PREFIX.to_vec();
    key.extend_from_slice(&shard.get().to_be_bytes());
    key
}

/// Whether `store` holds `shard`'s [`versions_follow_index_key`] record.
///
/// # Errors
/// Store errors.
pub fn versions_follow_index<S: StateStore + ?Sized>(store: &S, shard: ShardId) -> Result<bool> {
    Ok(store.meta(&versions_follow_index_key(shard))?.is_some())
}

/// Encodes a descriptor for [`descriptor_key`].
///
/// # Errors
/// [`Error::Corrupt`] if serde fails (it does not for this type).
pub fn encode_descriptor(descriptor: &ShardDescriptor) -> Result<Vec<u8>> {
    postcard::to_stdvec(descriptor).map_err(|error| Error::Corrupt {
        what: "shard descriptor (encode)",
        reason: error.to_string(),
    })
}

/// Decodes a descriptor (from the store or from a snapshot stream).
///
/// # Errors
/// [`Error::Corrupt`] for bytes that are not a descriptor.
pub fn decode_descriptor(bytes: &[u8]) -> Result<ShardDescriptor> {
    postcard::from_bytes(bytes).map_err(|error| Error::Corrupt {
        what: "shard descriptor",
        reason: error.to_string(),
    })
}

fn shard_of(name: &[u8], prefix: &[u8]) -> Option<ShardId> {
    let bytes = name.get(prefix.len()..)?;
    let bytes = <[u8; 8]>::try_from(bytes).ok()?;
    Some(ShardId(u64::from_be_bytes(bytes)))
}

/// Every local descriptor, by shard.
///
/// # Errors
/// Storage errors; [`Error::Corrupt`] for a record that does not decode.
pub fn load_descriptors(store: &Store) -> Result<BTreeMap<ShardId, ShardDescriptor>> {
    let mut descriptors = BTreeMap::new();
    for (name, value) in store.meta_with_prefix(DESCRIPTOR_PREFIX)? {
        let Some(shard) = shard_of(&name, DESCRIPTOR_PREFIX) else {
            return Err(Error::Corrupt {
                what: "shard descriptor name",
                reason: format!("{} bytes", name.len()),
            });
        };
        let descriptor = decode_descriptor(&value)?;
        if descriptor.id != shard {
            return Err(Error::Corrupt {
                what: "shard descriptor",
                reason: format!("record of {shard} holds {}", descriptor.id),
            });
        }
        descriptors.insert(shard, descriptor);
    }
    Ok(descriptors)
}

/// Every tombstone: the highest removed member id per shard.
///
/// # Errors
/// Storage errors; [`Error::Corrupt`] for a record that does not decode.
pub fn load_tombstones(store: &Store) -> Result<BTreeMap<ShardId, NodeId>> {
    let mut tombstones = BTreeMap::new();
    for (name, value) in store.meta_with_prefix(TOMBSTONE_PREFIX)? {
        let shard = shard_of(&name, TOMBSTONE_PREFIX).ok_or_else(|| Error::Corrupt {
            what: "tombstone name",
            reason: format!("{} bytes", name.len()),
        })?;
        let member: NodeId = postcard::from_bytes(&value).map_err(|error| Error::Corrupt {
            what: "tombstone",
            reason: error.to_string(),
        })?;
        tombstones.insert(shard, member);
    }
    Ok(tombstones)
}

/// Saves a tombstone durably.
///
/// # Errors
/// Storage errors.
pub fn save_tombstone(store: &Store, shard: ShardId, member: NodeId) -> Result<()> {
    let bytes = postcard::to_stdvec(&member).map_err(|error| Error::Corrupt {
        what: "tombstone (encode)",
        reason: error.to_string(),
    })?;
    store.set_meta(&tombstone_key(shard), &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let shard = ShardId(0x0102_0304_0506_0708);
        assert_eq!(
            shard_of(&descriptor_key(shard), DESCRIPTOR_PREFIX),
            Some(shard)
        );
        assert_eq!(
            shard_of(&tombstone_key(shard), TOMBSTONE_PREFIX),
            Some(shard)
        );
        assert_eq!(shard_of(b"shard/abc", DESCRIPTOR_PREFIX), None);
    }
}
