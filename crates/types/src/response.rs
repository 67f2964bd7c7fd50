//! Answers from the client service.

use crate::ids::{LogIndex, NodeId, ShardId, Term};
use crate::shard::{ReplicaRole, ShardDescriptor};
use crate::shard_map::ShardMap;
use crate::wire_error::WireError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The result of a successful key-value operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResult {
    /// Answer to `Get`: the value, if the key exists.
    Value {
        /// The value, `None` when absent.
        value: Option<Bytes>,
        /// Applied index the read was served at (meaningful for `Stale` reads).
        applied: LogIndex,
    },
    /// Answer to `Put`, `Delete` and `Batch`: the write is applied.
    Written {
        /// Log index of the write.
        index: LogIndex,
    },
    /// Answer to `CompareAndSwap`.
    Swapped {
        /// Whether the swap happened.
        succeeded: bool,
        /// The value before the operation (`None` when absent): on failure, what the caller
        /// should compare against next.
        previous: Option<Bytes>,
        /// Log index of the operation.
        index: LogIndex,
    },
    /// Answer to `Exists`: whether the key exists, without its value.
    Exists {
        /// The key has a value.
        exists: bool,
        /// Applied index the read was served at (meaningful for `Stale` reads).
        applied: LogIndex,
    },
    /// Answer to `GetMany`: one entry per key asked, in order.
    Values {
        /// The values and versions.
        values: Vec<VersionedValue>,
        /// Applied index the read was served at.
        applied: LogIndex,
    },
    /// Answer to `CompareVersionAndSwap`.
    VersionSwapped {
        /// Whether the swap happened.
        succeeded: bool,
        /// The value before the operation (`None` when absent).
        previous: Option<Bytes>,
        /// Its version (0 when absent or written before versions); on failure, what the
        /// caller should compare against next.
        previous_version: LogIndex,
        /// Log index of the operation: the key's version when the swap stored a value.
        index: LogIndex,
    },
    /// Answer to `Scan`: one page.
    ScanPage {
        /// The matching keys, in storage order.
        items: Vec<ScanItem>,
        /// The inclusive storage-key bound where the next page starts (route it by its first
        /// 8 bytes, the ring position); `None` when the scan has reached the top of the ring.
        next: Option<Bytes>,
        /// Applied index the page was read at.
        applied: LogIndex,
    },
    /// Answer to `Ttl`. Appended: postcard numbers variants.
    Ttl {
        /// The key has a value.
        exists: bool,
        /// Milliseconds left before it expires; `None` when it has no TTL (or is absent).
        remaining_ms: Option<u64>,
        /// Applied index the read was served at.
        applied: LogIndex,
    },
    /// Answer to `Persist`.
    Persisted {
        /// The key existed with a TTL, now cleared (`false`: absent, or had no TTL; nothing
        /// was changed).
        had_ttl: bool,
        /// Log index of the operation.
        index: LogIndex,
    },
}

/// A key's value and version in [`KvResult::Values`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedValue {
    /// The value, `None` when absent.
    pub value: Option<Bytes>,
    /// Log index of the key's last write in its shard; 0 when absent or written before
    /// versions existed.
    pub version: LogIndex,
}

/// One key of a [`KvResult::ScanPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanItem {
    /// The key (namespaced, as stored).
    pub key: Bytes,
    /// Its version.
    pub version: LogIndex,
    /// Its value, `None` for a keys-only scan.
    pub value: Option<Bytes>,
}

/// One local replica in a node status report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The shard.
    pub shard: ShardId,
    /// This replica's role.
    pub role: ReplicaRole,
    /// Whether this replica is currently the leader.
    pub is_leader: bool,
    /// The leader this replica knows of (itself when `is_leader`), `None` while unknown (an
    /// election is running or the replica is cut off).
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: Term,
    /// Commit index.
    pub commit: LogIndex,
    /// Applied index.
    pub applied: LogIndex,
}

/// Answer to [`AdminRequest::NodeStatus`](crate::request::AdminRequest::NodeStatus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// The cluster name.
    pub cluster: String,
    /// Seconds since the process started.
    pub uptime_secs: u64,
    /// Local replicas, sorted by shard.
    pub replicas: Vec<ReplicaStatus>,
    /// The low-disk-space alarm: `Some` while it is up (client writes adding data are refused
    /// with `NoSpace`), with the free bytes and the reserve.
    pub space_alarm: Option<SpaceAlarm>,
}

/// A node's low-disk-space alarm (see [`NodeStatus::space_alarm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceAlarm {
    /// Free bytes on the data dir's filesystem.
    pub free_bytes: u64,
    /// The configured reserve.
    pub reserve_bytes: u64,
}

/// A node and the address of its one QUIC endpoint (peers and clients).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// The node.
    pub node: NodeId,
    /// Its advertised address, `ip:port` or `host:port` (a DNS name, resolved by the dialer).
    pub addr: String,
}

/// The result of a successful admin call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResult {
    /// Answer to `GetShardMap`.
    ShardMap(ShardMap),
    /// Answer to `GetShard`.
    Shard(Option<ShardDescriptor>),
    /// Answer to `NodeStatus`.
    NodeStatus(NodeStatus),
    /// Answer to `GetNodes`: sorted by node id.
    Nodes(Vec<NodeAddress>),
    /// Answer to `ChangeReplica`: the shard's descriptor once the change is applied.
    ReplicaChanged(ShardDescriptor),
    /// Answer to `TransferLeader`: the leader of `shard` is now the replica on `leader`.
    LeaderTransferred {
        /// The shard.
        shard: ShardId,
        /// The node now leading.
        leader: NodeId,
    },
    /// Answer to `SplitShard`: both descriptors after the split.
    ShardSplit {
        /// The split shard, now `[start, at)`.
        left: ShardDescriptor,
        /// The new shard, `[at, end)`.
        right: ShardDescriptor,
    },
    /// Answer to `Pd`, `PdState` and `PdPlan`: postcard bytes, see
    /// [`AdminRequest::Pd`](crate::request::AdminRequest::Pd).
    Pd(Bytes),
    /// Answer to `SetFaults`: the peers this node now cuts, sorted by node id.
    Faults {
        /// Peers this node sends no Raft traffic to.
        cut: Vec<NodeId>,
    },
    /// Answer to `Login`: a bearer token.
    Token {
        /// The token (redacted in `Debug`).
        token: crate::secret::Secret,
        /// When it expires, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
    /// Answer to `Inspect`.
    Inspect(crate::inspect::InspectResult),
    /// Answer to `StartState`.
    StartState(StartState),
}

/// Answer to [`AdminRequest::StartState`](crate::request::AdminRequest::StartState).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartState {
    /// The node's data dir is new and it is still checking with its peers whether it may
    /// create the cluster (or join it): it has not created any group yet.
    pub checking: bool,
    /// The settings that shape the cluster at its creation, as `(field, value)` sorted by
    /// field: the values the node recorded when it created its groups, else its config's.
    pub bootstrap: Vec<(String, String)>,
}

/// Everything the client service answers: one response per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A key-value operation succeeded.
    Kv(KvResult),
    /// An admin call succeeded.
    Admin(AdminResult),
    /// The request failed.
    Error(WireError),
}
