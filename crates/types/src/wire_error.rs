//! Errors that cross the wire from a node to a client.

use crate::ids::{NodeId, ShardId};
use crate::shard::ShardDescriptor;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a node refused or failed a client request.
///
/// [`WireError::is_retryable`] separates "retry or reroute" answers from ones the caller must
/// surface. Variants are only ever appended: postcard encodes the variant index.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WireError {
    /// This replica is not the leader. Reroute to `leader_hint` if known.
    #[error("not leader of the shard (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader_hint: Option<NodeId>,
        /// This replica's descriptor of the shard, when it has one.
        descriptor: Option<ShardDescriptor>,
    },
    /// The client's epoch differs from the replica's: refresh the routing entry and retry.
    #[error("epoch mismatch (replica has {:?})", descriptor.epoch)]
    EpochMismatch {
        /// The replica's descriptor.
        descriptor: ShardDescriptor,
    },
    /// This node has no replica of the shard: refresh the shard map and retry.
    #[error("shard {shard} not found on this node")]
    ShardNotFound {
        /// The requested shard.
        shard: ShardId,
    },
    /// A key of the request is outside the shard's arc: refresh the shard map and retry.
    #[error("key does not belong to shard {shard}")]
    KeyNotInShard {
        /// The requested shard.
        shard: ShardId,
    },
    /// The node is overloaded (a queue is full). Back off and retry.
    #[error("server busy")]
    Busy,
    /// The request did not finish within its timeout. The write may or may not have been applied;
    /// retrying with the same session sequence is safe.
    #[error("request timed out")]
    Timeout,
    /// The shard has no quorum right now (leader election, partition). Retry later.
    #[error("shard unavailable")]
    Unavailable,
    /// Key larger than the configured limit. Not retryable.
    #[error("key of {size} bytes exceeds the limit of {max}")]
    KeyTooLarge {
        /// Key size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Value larger than the configured limit. Not retryable.
    #[error("value of {size} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Value size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// Batch with more operations than allowed. Not retryable.
    #[error("batch of {count} operations exceeds the limit of {max}")]
    BatchTooLarge {
        /// Operations in the batch.
        count: u64,
        /// Limit.
        max: u64,
    },
    /// The request was malformed (e.g. a write without a session). Not retryable.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong.
        reason: String,
    },
    /// The session's state was discarded (too old); the client must open a new session.
    #[error("session {session_id} expired")]
    SessionExpired {
        /// The session.
        session_id: u64,
    },
    /// The node failed (storage error, stopping). Try another replica.
    #[error("internal error: {reason}")]
    Internal {
        /// Description for logs.
        reason: String,
    },
    /// The request's keys and values together exceed the configured limit. Not retryable.
    #[error("request of {size} bytes exceeds the limit of {max}")]
    RequestTooLarge {
        /// Sum of key and value bytes in the request.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// The caller could not be identified: no client certificate and no valid token (missing,
    /// expired, forged, revoked, or a wrong password at login). Not retryable with the same
    /// credentials.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why (never the token or the password).
        reason: String,
    },
    /// The caller is known but lacks a grant this request needs. Not retryable.
    #[error("permission denied: needs {missing}")]
    PermissionDenied {
        /// The grant, role or identity the request needs (`admin`, `read:alice`,
        /// `node certificate of node 3`).
        missing: String,
    },
    /// The node leading the shard is low on disk space (its free space fell under
    /// `storage.space_reserve_mib`): writes that add data are refused; reads and deletes still
    /// work. Retrying is useless until space was freed (the alarm then clears by itself).
    #[error(
        "no space: node {node} has {free_bytes} bytes free, under its reserve of {reserve_bytes}; writes are refused until space is freed (reads and deletes still work)"
    )]
    NoSpace {
        /// The node whose disk is low.
        node: NodeId,
        /// Its free bytes when the write was refused.
        free_bytes: u64,
        /// Its configured reserve.
        reserve_bytes: u64,
    },
}

impl WireError {
    /// Whether the client may retry (possibly after rerouting or refreshing its map) with the
    /// same request and session sequence.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WireError::NotLeader { .. }
                | WireError::EpochMismatch { .. }
                | WireError::ShardNotFound { .. }
                | WireError::KeyNotInShard { .. }
                | WireError::Busy
                | WireError::Timeout
                | WireError::Unavailable
                | WireError::Internal { .. }
        )
    }
}
