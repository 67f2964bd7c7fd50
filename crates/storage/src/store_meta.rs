//! Node-level records of the store's `meta` keyspace: the node identity and small named records
//! (local shard descriptors and the like), each written durably on its own.

use crate::codec;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::Store;
use bytes::Bytes;
use fjall::PersistMode;
use ringkv_types::{NodeId, envelope};
use serde::{Deserialize, Serialize};

/// The node identity kept in the `meta` keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// This node's id.
    pub node: NodeId,
    /// The cluster this data dir belongs to; a node refuses to join another cluster.
    pub cluster: u64,
}

impl Store {
    /// Saves the node identity, durably.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; fjall errors (which poison the store).
    pub fn set_identity(&self, identity: NodeIdentity) -> Result<()> {
        let mut batch = self
            .shared
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        batch.insert(
            &self.shared.meta,
            keys::IDENTITY_KEY,
            codec::encode(&identity),
        );
        self.shared.commit(batch)
    }

    /// The node identity, if one was saved.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    pub fn identity(&self) -> Result<Option<NodeIdentity>> {
        match self.shared.meta.get(keys::IDENTITY_KEY)? {
            Some(bytes) => codec::decode(&bytes, self.shared.config.record_bytes_max)
                .map(Some)
                .map_err(|reason| Error::corrupt_record("identity", None, reason)),
            None => Ok(None),
        }
    }

    /// Saves a small node-level record (e.g. a local shard descriptor, encoded by the caller)
    /// under `name` in the `meta` keyspace, durably. Names live in their own namespace, apart
    /// from the identity and removal markers.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a name over 1 KiB or a value over `record_bytes_max`;
    /// [`Error::Poisoned`]; fjall errors (which poison the store).
    pub fn set_meta(&self, name: &[u8], value: &[u8]) -> Result<()> {
        self.check_meta_name(name)?;
        if value.len() as u64 > self.shared.config.record_bytes_max {
            return Err(Error::TooLarge {
                size: value.len() as u64,
                max: self.shared.config.record_bytes_max,
            });
        }
        let mut batch = self
            .shared
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        batch.insert(
            &self.shared.meta,
            keys::meta_key(name),
            envelope::encode(value),
        );
        self.shared.commit(batch)
    }

    /// Removes the record `name` saved with [`Store::set_meta`], durably.
    ///
    /// # Errors
    /// As [`Store::set_meta`].
    pub fn delete_meta(&self, name: &[u8]) -> Result<()> {
        self.check_meta_name(name)?;
        let mut batch = self
            .shared
            .db
            .batch()
            .durability(Some(PersistMode::SyncData));
        batch.remove(&self.shared.meta, keys::meta_key(name));
        self.shared.commit(batch)
    }

    /// The record `name` saved with [`Store::set_meta`].
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; [`Error::TooLarge`] for a name over 1 KiB; I/O.
    pub fn meta(&self, name: &[u8]) -> Result<Option<Bytes>> {
        self.check_meta_name(name)?;
        match self.shared.meta.get(keys::meta_key(name))? {
            Some(bytes) => envelope::decode(&bytes, self.shared.config.record_bytes_max)
                .map(|value| Some(Bytes::copy_from_slice(value)))
                .map_err(|reason| Error::corrupt_record("meta", None, reason)),
            None => Ok(None),
        }
    }

    /// Every record saved with [`Store::set_meta`] whose name starts with `prefix`, as
    /// `(name, value)` sorted by name.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`]; I/O.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>> {
        self.check_meta_name(prefix)?;
        let full = keys::meta_key(prefix);
        let strip = keys::meta_key(b"").len();
        let mut records = Vec::new();
        for guard in self.shared.meta.prefix(&full) {
            let (key, value) = guard.into_inner()?;
            let name = key.get(strip..).unwrap_or_default().to_vec();
            let value = envelope::decode(&value, self.shared.config.record_bytes_max)
                .map(Bytes::copy_from_slice)
                .map_err(|reason| Error::corrupt_record("meta", None, reason))?;
            records.push((name, value));
        }
        Ok(records)
    }

    fn check_meta_name(&self, name: &[u8]) -> Result<()> {
        if name.len() > 1024 {
            return Err(Error::TooLarge {
                size: name.len() as u64,
                max: 1024,
            });
        }
        Ok(())
    }
}
