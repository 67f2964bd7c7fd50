//! Client requests: key-value operations on one shard and admin calls.
//!
//! Every key-value request names the shard and epoch the client routed with, so a replica can
//! answer [`WireError::EpochMismatch`](crate::wire_error::WireError::EpochMismatch) when the
//! client's map is stale. Writes carry a session id and sequence number: the state machine
//! remembers the last applied sequence (and its result) per session and shard, so a retried write
//! is applied once (DESIGN.md section 7).
//!
//! Keys and values are [`Bytes`]: serde encodes them as one length-prefixed byte string (the same
//! bytes `serde_bytes` produces), and the node proposes them without copying.

use crate::ids::{NodeId, ShardId};
use crate::secret::Secret;
use crate::shard::Epoch;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// ReadIndex through the leader: sees every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Served by the leader under its lease (check-quorum), without a quorum round. Linearizable
    /// unless clocks drift more than the lease margin.
    Lease,
    /// Served by any replica from its applied state; the response reports the applied index.
    Stale,
}

/// Identifies a write for exactly-once application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WriteSession {
    /// The client session, allocated once per client process.
    pub session_id: u64,
    /// Sequence number within the session; a retry reuses it.
    pub sequence: u64,
}

/// One write inside an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: Bytes,
    },
}

/// A key-value operation on one shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOp {
    /// Read one key.
    Get {
        /// Key.
        key: Bytes,
        /// Freshness required.
        consistency: ReadConsistency,
    },
    /// Set a key.
    Put {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
    },
    /// Remove a key (succeeds whether or not it existed).
    Delete {
        /// Key.
        key: Bytes,
    },
    /// Set `key` to `new` (or delete it when `new` is `None`) only if its current value equals
    /// `expected` (`None` = the key is absent).
    CompareAndSwap {
        /// Key.
        key: Bytes,
        /// Required current value, `None` for "absent".
        expected: Option<Bytes>,
        /// Value to store, `None` to delete.
        new: Option<Bytes>,
    },
    /// Writes applied atomically; every key must belong to the shard.
    Batch {
        /// The writes, applied in order.
        ops: Vec<BatchOp>,
    },
    /// Whether one key exists (HAS): a read like `Get` whose answer,
    /// [`KvResult::Exists`](crate::response::KvResult::Exists), carries no value, so a large
    /// value is neither read into the answer nor sent.
    Exists {
        /// Key.
        key: Bytes,
        /// Freshness required.
        consistency: ReadConsistency,
    },
    /// Read several keys of the shard, with their versions, at one applied index: answered
    /// [`KvResult::Values`](crate::response::KvResult::Values) in the order asked. A
    /// versioned get is a `GetMany` of one key. Every key must belong to the shard.
    GetMany {
        /// Keys (at most `limits.max_batch_ops`).
        keys: Vec<Bytes>,
        /// Freshness required.
        consistency: ReadConsistency,
    },
    /// Set `key` to `new` (or delete it when `new` is `None`) only if its version (the log
    /// index of its last write) is `expected_version`; 0 means "absent", like etcd's
    /// `mod_revision == 0`. A value written before versions existed reads as version 0 and
    /// matches no expected version (compare it by value). Answered
    /// [`KvResult::VersionSwapped`](crate::response::KvResult::VersionSwapped).
    CompareVersionAndSwap {
        /// Key.
        key: Bytes,
        /// Required current version, 0 for "absent".
        expected_version: u64,
        /// Value to store, `None` to delete.
        new: Option<Bytes>,
    },
    /// One page of a scan of the shard's keys in storage order (ring position, then key),
    /// from `start`: answered [`KvResult::ScanPage`](crate::response::KvResult::ScanPage).
    Scan {
        /// Inclusive lower bound, a storage key (`position BE ‖ key`) inside the shard's arc;
        /// empty = the arc's start.
        start: Bytes,
        /// Only keys starting with these bytes. Callers that are not admins must name their
        /// namespace: the prefix must be a namespaced key prefix (`len ‖ namespace ‖ ...`).
        prefix: Bytes,
        /// Most keys in the page (the server may return fewer, and caps it).
        limit: u32,
        /// Leave values out.
        keys_only: bool,
        /// Freshness required.
        consistency: ReadConsistency,
    },
    /// Set a key that expires `ttl_ms` after the log time its shard's leader stamps on the
    /// write: from then on it is absent for every read, and the leader removes it through the
    /// log. Answered [`KvResult::Written`](crate::response::KvResult::Written). A later put
    /// without a TTL clears it; one with a TTL replaces it. Appended: postcard numbers variants.
    PutWithTtl {
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
        /// Time to live in milliseconds, 1 to [`TTL_MS_MAX`].
        ttl_ms: u64,
    },
    /// Clear a key's TTL, keeping its value (Redis `PERSIST`): answered
    /// [`KvResult::Persisted`](crate::response::KvResult::Persisted).
    Persist {
        /// Key.
        key: Bytes,
    },
    /// How long a key has left (Redis `PTTL`): a read answered
    /// [`KvResult::Ttl`](crate::response::KvResult::Ttl).
    Ttl {
        /// Key.
        key: Bytes,
        /// Freshness required.
        consistency: ReadConsistency,
    },
}

/// Longest time-to-live a put may ask for: ten years, in milliseconds.
pub const TTL_MS_MAX: u64 = 10 * 366 * 24 * 3600 * 1000;

impl KvOp {
    /// Whether the operation writes (and so needs a [`WriteSession`]); see [`KvOp::is_read`]
    /// for the reads, which authorization treats as reads.
    pub fn is_write(&self) -> bool {
        !self.is_read()
    }

    /// Whether the operation only reads: `Get`, `Exists`, `GetMany`, `Scan` or `Ttl`.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            KvOp::Get { .. }
                | KvOp::Exists { .. }
                | KvOp::GetMany { .. }
                | KvOp::Scan { .. }
                | KvOp::Ttl { .. }
        )
    }
}

/// A key-value request routed to one shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvRequest {
    /// The shard the client routed to.
    pub shard: ShardId,
    /// The epoch of the client's cached descriptor.
    pub epoch: Epoch,
    /// Exactly-once identity; required for writes, ignored for reads.
    pub session: Option<WriteSession>,
    /// How long the client will wait, in milliseconds; the server gives up (and answers
    /// `Timeout`) rather than working past it. 0 means the server default.
    pub timeout_ms: u32,
    /// The operation.
    pub op: KvOp,
}

/// Calls used by `ringctl` and by clients to refresh their routing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The shard map as known to the node (from PD when it hosts PD, else its cache).
    GetShardMap,
    /// The descriptor of one shard, if the node knows it.
    GetShard {
        /// Which shard.
        shard: ShardId,
    },
    /// The node's status: replicas, leaders, applied indexes.
    NodeStatus,
    /// Every node the answering node knows, with its address: how a client that was given a few
    /// seed endpoints finds the leader of a shard on another node.
    GetNodes,
    /// One membership change of a shard, executed by its leader: answered
    /// `AdminResult::ReplicaChanged` with the new descriptor once the configuration entry is
    /// applied on the leader. One change at a time per shard; a learner must be added (and
    /// caught up) before it is promoted; the leader refuses to remove itself (transfer the
    /// leadership first).
    ChangeReplica {
        /// The shard.
        shard: ShardId,
        /// The epoch the caller saw; must equal the leader's (else `EpochMismatch`).
        epoch: Epoch,
        /// The change.
        change: ReplicaChange,
    },
    /// Moves a shard's leadership to the replica on `to`, sent to the current leader: answered
    /// `AdminResult::LeaderTransferred` once the leader knows `to` leads, or `Timeout`.
    TransferLeader {
        /// The shard.
        shard: ShardId,
        /// The node that should lead (it must hold a voter replica).
        to: NodeId,
    },
    /// Splits a shard in two inside its Raft group, executed by its leader (no data is
    /// copied): the shard keeps `[start, at)` and `new_shard` gets `[at, end)` with the same
    /// replicas (and Raft member ids); both get `version + 1`. Answered
    /// `AdminResult::ShardSplit` once the split entry is applied on the leader.
    SplitShard {
        /// The shard to split.
        shard: ShardId,
        /// The epoch the caller saw; must equal the leader's (else `EpochMismatch`).
        epoch: Epoch,
        /// The id of the new shard (allocated by the caller: the placement driver).
        new_shard: ShardId,
        /// Ring position where the new shard starts, strictly inside the arc; `None` = the
        /// middle of the arc.
        at: Option<u64>,
    },
    /// A placement-driver command: `postcard(`[`pd::Command`](crate::pd::Command)`)`. Served by
    /// the PD leader (group 0), which stamps the command's `now_ms` with its own clock, proposes
    /// it, and answers [`AdminResult::Pd`] with `postcard(Result<pd::Response, pd::Error>)` once
    /// it is applied. Other nodes answer `NotLeader` with the PD leader hint. Opaque bytes (the
    /// PD types used to live above this crate; the encoding stays for old nodes and clients).
    Pd {
        /// `postcard(pd::Command)`.
        command: Bytes,
    },
    /// The PD state as applied on the PD leader: [`AdminResult::Pd`] holds
    /// `postcard(`[`pd::PdState`](crate::pd::PdState)`)`. Other nodes answer `NotLeader`.
    PdState,
    /// Test only: replaces the answering node's fault table. Raft traffic (batches and
    /// snapshots) from this node to every node in `cut` is dropped; an empty list heals. Client
    /// traffic is not affected. To cut a link both ways, send this to the nodes on both sides.
    /// Refused (`InvalidRequest`) unless the node's config sets `[debug] fault_injection`.
    SetFaults {
        /// Peers this node stops sending Raft traffic to.
        cut: Vec<NodeId>,
    },
    /// Exchanges a user's name and password for a token (`AdminResult::Token`). Needs no
    /// principal (any connection may log in); wrong credentials answer `Unauthenticated`
    /// after a delay that grows with repeated failures.
    Login {
        /// The user.
        user: String,
        /// The password (redacted in `Debug`).
        password: Secret,
    },
    /// The database inspector: reads the answering node's own store (log entries, hard
    /// states, descriptors, keys and values), answered [`AdminResult::Inspect`]. Admin only:
    /// it shows every key and value on the node.
    ///
    /// [`AdminResult::Inspect`]: crate::response::AdminResult::Inspect
    Inspect(crate::inspect::InspectRequest),
    /// Where the answering node is in its start and which bootstrap settings it holds
    /// ([`AdminResult::StartState`]). Answered at once, even while the node checks a new data
    /// dir with its peers (before its groups run): initial nodes compare their bootstrap
    /// settings this way before they create a cluster.
    ///
    /// [`AdminResult::StartState`]: crate::response::AdminResult::StartState
    StartState,
    /// The operators PD's schedulers would start now, computed by the PD leader from its
    /// applied state without changing it: [`AdminResult::Pd`] holds
    /// `postcard(Vec<`[`pd::Operator`](crate::pd::Operator)`>)`. `balancing`: plan as if both
    /// balance schedulers were on (`ringctl rebalance --dry-run`). Other nodes answer
    /// `NotLeader`; a node older than this variant answers `InvalidRequest` (undecodable).
    PdPlan {
        /// Turn both balance schedulers on for this plan.
        balancing: bool,
    },
}

/// One membership change of a shard ([`AdminRequest::ChangeReplica`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicaChange {
    /// Add a learner replica on `node` (which must not hold one): a NEW Raft member whose
    /// incarnation is the new descriptor's `conf_ver`. It is filled by a snapshot from the
    /// leader.
    AddLearner {
        /// The node.
        node: NodeId,
    },
    /// Make the learner on `node` a voter.
    Promote {
        /// The node.
        node: NodeId,
    },
    /// Remove the replica on `node` (voter or learner; not the leader itself). The node deletes
    /// the replica's log, state and data and keeps a tombstone.
    Remove {
        /// The node.
        node: NodeId,
    },
}

/// Everything a client sends to the client service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request {
    /// A key-value operation.
    Kv(KvRequest),
    /// An admin call.
    Admin(AdminRequest),
    /// `request` made on behalf of the user a bearer token names (a JWT from
    /// [`AdminRequest::Login`]). The token counts only on a connection without a client
    /// certificate; the wrapped request may not be another `WithToken`.
    WithToken {
        /// The token (redacted in `Debug`).
        token: Secret,
        /// The request.
        request: Box<Request>,
    },
    /// A watch of one shard's changes: a server-streaming request answered by
    /// [`WatchFrame`](crate::watch::WatchFrame)s (see [`crate::watch`]); a refusal is one
    /// `WatchFrame::Refused`. Appended: postcard numbers variants.
    Watch(crate::watch::WatchRequest),
}
