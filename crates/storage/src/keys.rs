//! Key layouts of the five keyspaces.
//!
//! ```text
//! raft_log    shard BE (8) ‖ index BE (8)                  -> envelope(postcard(Entry))
//! raft_state  shard BE (8) ‖ kind (1)                      -> envelope(postcard(record))
//!             shard BE (8) ‖ KIND_SESSION ‖ session BE (8) -> envelope(postcard(SessionRecord))
//! data        position BE (8) ‖ user key                   -> value format 2: version ‖ value
//!                                                             (format 1: envelope(value), see
//!                                                             `value.rs`)
//! meta        "identity"                                   -> envelope(postcard(NodeIdentity))
//!             "removing/" ‖ shard BE (8)                   -> envelope(postcard(Arc))
//!             "user/" ‖ name                               -> envelope(caller's bytes)
//!             "commit_seq"                                 -> envelope(postcard(u64))
//! snapshot_staging
//!             0x00 ‖ shard BE (8)                          -> envelope(postcard(InstallMarker))
//!             0x01 ‖ staging id BE (8) ‖ 0x00 ‖ storage key -> value format 2 (as `data`)
//!             0x01 ‖ staging id BE (8) ‖ 0x01 ‖ session BE (8) -> envelope(postcard(SessionRecord))
//! ```
//! The staging keyspace holds snapshots being installed (see `snapshot_install`): staged data
//! and, while the data moves into `data`, an "install pending" marker per shard.
//! Big-endian integers sort numerically, so one shard's log and state are contiguous prefixes and
//! one arc's data is a contiguous range.

use crate::error::{Error, Result};
use ringkv_types::{LogIndex, ShardId};

/// Name of the keyspace holding every group's Raft log.
pub const KEYSPACE_RAFT_LOG: &str = "raft_log";
/// Name of the keyspace holding hard states, snapshot metas, applied states and sessions.
pub const KEYSPACE_RAFT_STATE: &str = "raft_state";
/// Name of the keyspace holding shard data.
pub const KEYSPACE_DATA: &str = "data";
/// Name of the keyspace holding node identity and pending replica removals.
pub const KEYSPACE_META: &str = "meta";
/// Name of the keyspace holding snapshots being installed and their markers.
pub const KEYSPACE_STAGING: &str = "snapshot_staging";

/// Staging keyspace: prefix of the install markers.
pub(crate) const MARKER_PREFIX: [u8; 1] = [0];
/// Staging keyspace: prefix of the staged data.
pub(crate) const STAGED_PREFIX: [u8; 1] = [1];

/// Staging keyspace: the install marker of `shard`.
pub(crate) fn marker_key(shard: ShardId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[1..].copy_from_slice(&shard.get().to_be_bytes());
    key
}

/// Staging keyspace: everything staged under `staging`.
pub(crate) fn staging_prefix(staging: u64) -> [u8; 9] {
    let mut key = [1u8; 9];
    key[1..].copy_from_slice(&staging.to_be_bytes());
    key
}

/// Staging keyspace: the staged data pairs of `staging`.
pub(crate) fn staged_data_prefix(staging: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..9].copy_from_slice(&staging_prefix(staging));
    key
}

/// Staging keyspace: a staged data pair (`storage_key` is the `data` keyspace key).
pub(crate) fn staged_data_key(staging: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + storage_key.len());
    key.extend_from_slice(&staged_data_prefix(staging));
    key.extend_from_slice(storage_key);
    key
}

/// Staging keyspace: the staged sessions of `staging`.
pub(crate) fn staged_session_prefix(staging: u64) -> [u8; 10] {
    let mut key = [1u8; 10];
    key[..9].copy_from_slice(&staging_prefix(staging));
    key
}

/// Staging keyspace: a staged session record.
pub(crate) fn staged_session_key(staging: u64, session: u64) -> [u8; 18] {
    let mut key = [0u8; 18];
    key[..10].copy_from_slice(&staged_session_prefix(staging));
    key[10..].copy_from_slice(&session.to_be_bytes());
    key
}

/// Splits a staged session key into its session id.
pub(crate) fn parse_staged_session_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] =
        key.get(10..)
            .and_then(|rest| rest.try_into().ok())
            .ok_or(Error::MalformedKey {
                keyspace: KEYSPACE_STAGING,
                len: key.len(),
            })?;
    Ok(u64::from_be_bytes(bytes))
}

/// `raft_state` record kind: the Raft hard state.
pub(crate) const KIND_HARD_STATE: u8 = 1;
/// `raft_state` record kind: the log's compaction point (snapshot meta).
pub(crate) const KIND_SNAPSHOT_META: u8 = 2;
/// `raft_state` record kind: applied index and term of the state machine.
pub(crate) const KIND_APPLIED: u8 = 3;
/// `raft_state` record kind: configuration as of the applied index.
pub(crate) const KIND_CONF: u8 = 4;
/// `raft_state` record kind: one client session (followed by the session id).
pub(crate) const KIND_SESSION: u8 = 16;

/// Checks a keyspace name the way fjall would, but returning an error instead of panicking.
pub fn validate_keyspace_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 {
        return Err(Error::InvalidConfig(
            "keyspace names must be 1 to 255 bytes",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.#$".contains(&b))
    {
        return Err(Error::InvalidConfig(
            "keyspace names use [A-Za-z0-9_.#$-] only",
        ));
    }
    Ok(())
}

/// `raft_log` key of `index` in `shard`.
pub(crate) fn log_key(shard: ShardId, index: LogIndex) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&shard.get().to_be_bytes());
    key[8..].copy_from_slice(&index.get().to_be_bytes());
    key
}

/// Splits a `raft_log` key.
pub(crate) fn parse_log_key(key: &[u8]) -> Result<(ShardId, LogIndex)> {
    let malformed = || Error::MalformedKey {
        keyspace: KEYSPACE_RAFT_LOG,
        len: key.len(),
    };
    let bytes: [u8; 16] = key.try_into().map_err(|_| malformed())?;
    let (shard, index) = bytes.split_at(8);
    let shard = u64::from_be_bytes(shard.try_into().map_err(|_| malformed())?);
    let index = u64::from_be_bytes(index.try_into().map_err(|_| malformed())?);
    Ok((ShardId(shard), LogIndex(index)))
}

/// Prefix of every key of `shard` (in `raft_log` and `raft_state`).
pub(crate) fn shard_prefix(shard: ShardId) -> [u8; 8] {
    shard.get().to_be_bytes()
}

/// `raft_state` key of the record `kind` of `shard`.
pub(crate) fn state_key(shard: ShardId, kind: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&shard.get().to_be_bytes());
    key[8] = kind;
    key
}

/// `raft_state` key of a client session of `shard`.
pub(crate) fn session_key(shard: ShardId, session: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&state_key(shard, KIND_SESSION));
    key[9..].copy_from_slice(&session.to_be_bytes());
    key
}

/// Prefix of the session keys of `shard`.
pub(crate) fn session_prefix(shard: ShardId) -> [u8; 9] {
    state_key(shard, KIND_SESSION)
}

/// Splits a session key into its session id.
pub(crate) fn parse_session_key(key: &[u8]) -> Result<u64> {
    let malformed = || Error::MalformedKey {
        keyspace: KEYSPACE_RAFT_STATE,
        len: key.len(),
    };
    let bytes: [u8; 17] = key.try_into().map_err(|_| malformed())?;
    let (_, session) = bytes.split_at(9);
    Ok(u64::from_be_bytes(
        session.try_into().map_err(|_| malformed())?,
    ))
}

/// `meta` key recording that the removal of `shard`'s replica is in progress.
pub(crate) fn removal_key(shard: ShardId) -> Vec<u8> {
    let mut key = b"removing/".to_vec();
    key.extend_from_slice(&shard.get().to_be_bytes());
    key
}

/// Prefix of the removal markers in `meta`.
pub(crate) const REMOVAL_PREFIX: &[u8] = b"removing/";

/// `meta` key of a caller-named record: `user/` ‖ name.
pub(crate) fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = b"user/".to_vec();
    key.extend_from_slice(name);
    key
}

/// `meta` key of the sequence number of the last group commit (written in every group commit;
/// compared with the durable mark at open, see [`crate::MARK_FILE`]).
pub(crate) const COMMIT_SEQ_KEY: &[u8] = b"commit_seq";

/// `meta` key of the node identity.
pub(crate) const IDENTITY_KEY: &[u8] = b"identity";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_shard_then_index() {
        let cases = [
            (
                log_key(ShardId(1), LogIndex(255)),
                log_key(ShardId(1), LogIndex(256)),
            ),
            (
                log_key(ShardId(1), LogIndex(u64::MAX)),
                log_key(ShardId(2), LogIndex(0)),
            ),
        ];
        for (low, high) in cases {
            assert!(low < high);
        }
        let key = log_key(ShardId(7), LogIndex(9));
        assert_eq!(parse_log_key(&key).unwrap(), (ShardId(7), LogIndex(9)));
        assert!(parse_log_key(&key[..15]).is_err());
    }

    #[test]
    fn keyspace_names_are_checked() {
        for name in [
            KEYSPACE_RAFT_LOG,
            KEYSPACE_RAFT_STATE,
            KEYSPACE_DATA,
            KEYSPACE_META,
            KEYSPACE_STAGING,
        ] {
            validate_keyspace_name(name).unwrap();
        }
        let long = "x".repeat(256);
        for bad in ["", long.as_str(), "a/b", "sp ace"] {
            assert!(validate_keyspace_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_keys_round_trip() {
        let key = session_key(ShardId(3), 42);
        assert!(key.starts_with(&session_prefix(ShardId(3))));
        assert_eq!(parse_session_key(&key).unwrap(), 42);
    }
}
