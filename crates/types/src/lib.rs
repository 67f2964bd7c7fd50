//! Types shared by every ringkv crate: ids and Raft counters, Raft log and message types, the ring
//! (key positions and shard arcs), shard descriptors, the client and admin wire messages, the
//! placement driver's commands and state ([`pd`]), errors that cross the wire, and the codec
//! (postcard inside the record envelope). No I/O.

pub mod codec;
pub mod envelope;
pub mod error;
pub mod identity;
pub mod ids;
pub mod inspect;
pub mod namespace;
pub mod pd;
pub mod raft;
pub mod raft_batch;
pub mod request;
pub mod response;
pub mod ring;
pub mod secret;
pub mod shard;
pub mod shard_map;
pub mod watch;
pub mod wire_error;

#[cfg(test)]
mod codec_test;

pub use error::{Error, Result};
pub use identity::PeerIdentity;
pub use ids::{LogIndex, NODE_ID_LIMIT, NodeId, ShardId, Term, member_id, member_node};
pub use raft_batch::RaftBatch;
pub use request::{
    AdminRequest, BatchOp, KvOp, KvRequest, ReadConsistency, ReplicaChange, Request, TTL_MS_MAX,
    WriteSession,
};
pub use response::{
    AdminResult, KvResult, NodeAddress, NodeStatus, ReplicaStatus, Response, ScanItem, SpaceAlarm,
    StartState, VersionedValue,
};
pub use secret::Secret;
pub use shard::{Epoch, Replica, ReplicaRole, ShardDescriptor};
pub use shard_map::ShardMap;
pub use watch::{
    FROM_CREATION, WatchEnd, WatchEvent, WatchEventKind, WatchFrame, WatchRequest, WatchTarget,
};
pub use wire_error::WireError;
