//! Errors of the client library.
//!
//! [`Error::is_retryable`] tells conditions that may pass (a leader election, an unreachable node,
//! a busy server) from fatal ones (bad configuration, a request the server refuses). The client
//! already retries retryable conditions within its budget; a retryable error reaching the caller
//! means the budget ran out. A write that failed that way may or may not have been applied.

use ringkv_types::{NodeId, ShardId, WireError};
use thiserror::Error;

/// What went wrong in a client call.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is invalid.
    #[error("invalid client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// An endpoint string is not `<node id>@<ip:port>` (nor, where allowed, `host:port`).
    #[error("invalid endpoint {endpoint:?}: expected host:port or <node id>@<ip:port>")]
    InvalidEndpoint {
        /// The offending string.
        endpoint: String,
    },
    /// Setting up TLS or the local endpoint failed (unreadable certificate files, bind failure).
    #[error("client setup: {source}")]
    Setup {
        /// The transport's error.
        source: ringkv_transport::Error,
    },
    /// No endpoint answered with a usable shard map.
    #[error("no shard map available: {reason}")]
    NoShardMap {
        /// The last failure seen.
        reason: String,
    },
    /// The shard map names a node the client has no address for.
    #[error("no address known for node {node}; add it to the endpoints")]
    UnknownNode {
        /// The node.
        node: NodeId,
    },
    /// A batch touched keys of more than one shard; batches are atomic within one shard only.
    #[error("batch spans shards {first} and {other}; batches are atomic within one shard")]
    CrossShardBatch {
        /// The shard of the first key.
        first: ShardId,
        /// The shard of another key.
        other: ShardId,
    },
    /// A batch without operations.
    #[error("empty batch")]
    EmptyBatch,
    /// A time-to-live outside 1 ms to ten years (`ringkv_types::TTL_MS_MAX`).
    #[error("invalid ttl of {ttl_ms} ms: a TTL is 1 ms to ten years")]
    InvalidTtl {
        /// The TTL asked for, in milliseconds.
        ttl_ms: u128,
    },
    /// The server refused the request for a reason retrying cannot fix (too large, invalid).
    #[error("server refused the request: {0}")]
    Server(WireError),
    /// Talking to a node failed.
    #[error("node {node}: {source}")]
    Transport {
        /// The node called.
        node: NodeId,
        /// The transport's error.
        source: ringkv_transport::Error,
    },
    /// A node failed a liveness probe (see [`ringkv_transport::probe`]): its port is closed
    /// or it stayed silent, so the call went elsewhere. Retryable.
    #[error("node {node} is down: {evidence}")]
    NodeDown {
        /// The node.
        node: NodeId,
        /// What the probe found ("refused", "silent").
        evidence: &'static str,
    },
    /// The server answered with a response of the wrong kind (a protocol bug).
    #[error("unexpected response to {request}")]
    UnexpectedResponse {
        /// The request kind.
        request: &'static str,
    },
    /// No node answered a placement-driver call as PD's leader (an election, or every node
    /// unreachable). Retryable.
    #[error("no placement-driver leader found: {reason}")]
    NoPdLeader {
        /// What the last round of nodes answered.
        reason: String,
    },
    /// The placement driver refused the command (nothing was changed): an unknown shard or
    /// node, an operator that cannot be carried out, an invalid setting.
    #[error("placement driver: {0}")]
    Pd(ringkv_types::pd::Error),
    /// A payload could not be encoded or decoded (a version mismatch between client and node).
    #[error("cannot {action} {what}: {reason}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being encoded or decoded.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
    /// The cluster does not know who the client is: no valid token or certificate (expired,
    /// revoked, forged), or a wrong user name or password at login.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why.
        reason: String,
    },
    /// The client's user lacks a grant the call needs.
    #[error("permission denied: needs {missing}")]
    PermissionDenied {
        /// The missing grant (`admin`, `read:alice`, ...).
        missing: String,
    },
    /// A watch cannot resume without a gap: the node's history no longer holds the changes
    /// after the resume point (etcd's `compacted`). Read the current state and watch again
    /// from now (or from `oldest`).
    #[error("watch history compacted: shard {shard} keeps changes after index {oldest} only")]
    Compacted {
        /// The shard.
        shard: ringkv_types::ShardId,
        /// The smallest resume point the node can serve.
        oldest: u64,
    },
    /// The node cancelled the watch: the watcher did not read its events fast enough.
    #[error("watch cancelled by shard {shard}'s node: the watcher fell behind (slow watcher)")]
    SlowWatcher {
        /// The shard.
        shard: ringkv_types::ShardId,
    },
    /// The call did not succeed within its time budget or its attempts; `last` is the last
    /// failure. A write may or may not have been applied; it is never applied twice.
    #[error("gave up after {attempts} attempts in {elapsed_ms} ms: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed_ms: u64,
        /// The last failure.
        last: Box<Error>,
    },
}

impl Error {
    /// The typed error for a server's refusal: authentication and authorization failures get
    /// their own variants, the rest is [`Error::Server`].
    pub fn from_wire(wire: WireError) -> Self {
        match wire {
            WireError::Unauthenticated { reason } => Error::Unauthenticated { reason },
            WireError::PermissionDenied { missing } => Error::PermissionDenied { missing },
            other => Error::Server(other),
        }
    }

    /// Whether the error is an authentication or authorization failure (directly or as the
    /// last failure of an exhausted call).
    pub fn is_auth(&self) -> bool {
        match self {
            Error::Unauthenticated { .. } | Error::PermissionDenied { .. } => true,
            Error::Exhausted { last, .. } => last.is_auth(),
            _ => false,
        }
    }

    /// Whether a later call may succeed (the cluster was unavailable, overloaded or changing).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Server(wire) => wire.is_retryable(),
            Error::Transport { source, .. } => source.is_retryable(),
            Error::NoShardMap { .. } | Error::NoPdLeader { .. } | Error::NodeDown { .. } => true,
            Error::Exhausted { last, .. } => last.is_retryable(),
            _ => false,
        }
    }
}

/// Result with the client's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
