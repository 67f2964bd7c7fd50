//! Keys with a time-to-live: a put that expires, what is left of a key's time, and clearing it.
//!
//! The TTL counts from the log time the shard's leader stamps on the write (its clock, carried
//! in the Raft entry), not from the client's clock; a key whose time is up is absent for every
//! read, and its shard's leader removes it through the log (docs/data-model.md, "TTL").

use super::*;
use ringkv_types::{TTL_MS_MAX, ring};
use std::time::Duration;

/// What [`Client::ttl`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyTtl {
    /// The key does not exist (or has expired).
    Absent,
    /// The key exists without a TTL.
    Persistent,
    /// The key exists and expires after this long (as the serving replica's clock says).
    Expires(Duration),
}

impl Client {
    /// Sets `key` to `value`, expiring `ttl` after its shard's leader applies it (the leader's
    /// log time), and returns the new version. A later put without a TTL clears it; a put with
    /// one replaces it.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL under 1 ms or over ten years; else as [`Client::put`].
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<u64> {
        let ttl_ms = ttl.as_millis();
        let ttl_ms = match u64::try_from(ttl_ms) {
            Ok(ms) if (1..=TTL_MS_MAX).contains(&ms) => ms,
            _ => return Err(Error::InvalidTtl { ttl_ms }),
        };
        let key = self.wire_key(key.into())?;
        let op = KvOp::PutWithTtl {
            key: key.clone(),
            value: value.into(),
            ttl_ms,
        };
        match self.write(&key, op, "put with ttl").await? {
            KvResult::Written { index } => Ok(index.0),
            _ => Err(Error::UnexpectedResponse {
                request: "put with ttl",
            }),
        }
    }

    /// What is left of `key`'s time to live, read with linearizable consistency.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ttl(&self, key: impl Into<Bytes>) -> Result<KeyTtl> {
        self.ttl_with(key, ReadConsistency::Linearizable).await
    }

    /// [`Client::ttl`] with the given consistency.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn ttl_with(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<KeyTtl> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Ttl {
            key: key.clone(),
            consistency,
        };
        match self.execute(ring::position(&key), op, None).await? {
            KvResult::Ttl {
                exists,
                remaining_ms,
                ..
            } => Ok(match (exists, remaining_ms) {
                (false, _) => KeyTtl::Absent,
                (true, None) => KeyTtl::Persistent,
                (true, Some(ms)) => KeyTtl::Expires(Duration::from_millis(ms)),
            }),
            _ => Err(Error::UnexpectedResponse { request: "ttl" }),
        }
    }

    /// Clears `key`'s TTL, keeping its value (Redis `PERSIST`). Returns whether the key had a
    /// TTL (`false`: absent or without one; nothing changed).
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn persist(&self, key: impl Into<Bytes>) -> Result<bool> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Persist { key: key.clone() };
        match self.write(&key, op, "persist").await? {
            KvResult::Persisted { had_ttl, .. } => Ok(had_ttl),
            _ => Err(Error::UnexpectedResponse { request: "persist" }),
        }
    }
}
