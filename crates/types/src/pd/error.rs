//! Why the placement driver refused a command.
//!
//! Every error is an answer to a bad or untimely command, never a broken invariant: the state is
//! unchanged when a command returns an error, so the same log replays to the same state on every
//! PD replica. Errors cross the wire (the PD leader answers the node or `ringctl` that proposed
//! the command), so they are serde types with structured context.

use super::operator::OperatorId;
use crate::{Epoch, NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use thiserror::Error;

/// A refused command. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The cluster has not been bootstrapped yet; only `Bootstrap` is accepted.
    #[error("the cluster is not bootstrapped")]
    NotBootstrapped,
    /// `Bootstrap` on a cluster that already has a shard map.
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// The node id is not registered.
    #[error("unknown node {node}")]
    UnknownNode {
        /// The node named by the command.
        node: NodeId,
    },
    /// The node was removed from the cluster; it must not come back under the same id.
    #[error("node {node} was removed from the cluster")]
    NodeRemoved {
        /// The removed node.
        node: NodeId,
    },
    /// The shard id is not in the shard map.
    #[error("unknown shard {shard}")]
    UnknownShard {
        /// The shard named by the command.
        shard: ShardId,
    },
    /// A shard map or descriptor that does not describe a valid layout.
    #[error("invalid shard map: {reason:?}")]
    InvalidShardMap {
        /// What is wrong.
        reason: InvalidReason,
    },
    /// The reported descriptor is older than the one PD knows; it was ignored.
    #[error("stale descriptor for {shard}: reported {reported:?}, known {known:?}")]
    StaleDescriptor {
        /// The shard.
        shard: ShardId,
        /// The epoch in the report.
        reported: Epoch,
        /// The epoch PD has.
        known: Epoch,
    },
    /// The report comes from a node that does not hold a voter of the reported descriptor.
    #[error("node {leader} is not a voter of {shard}")]
    LeaderNotVoter {
        /// The shard.
        shard: ShardId,
        /// The reporting leader.
        leader: NodeId,
    },
    /// The shard already has an operator in flight (at most one per shard).
    #[error("shard {shard} already has operator {operator} in flight")]
    ShardBusy {
        /// The shard.
        shard: ShardId,
        /// The operator in flight.
        operator: OperatorId,
    },
    /// The admin operator cannot be carried out on the current layout.
    #[error("operator rejected for {shard}: {reason:?}")]
    OperatorRejected {
        /// The shard.
        shard: ShardId,
        /// Why.
        reason: RejectReason,
    },
    /// No operator for that shard.
    #[error("no operator in flight for {shard}")]
    NoOperator {
        /// The shard.
        shard: ShardId,
    },
    /// The requested state change is not allowed (e.g. a removed node back to `Up`).
    #[error("node {node} cannot go from {from:?} to {to:?}")]
    InvalidNodeTransition {
        /// The node.
        node: NodeId,
        /// Its current state.
        from: super::node::NodeState,
        /// The requested state.
        to: super::node::NodeState,
    },
    /// A setting is outside its allowed range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// The setting.
        name: Cow<'static, str>,
        /// The allowed range.
        reason: Cow<'static, str>,
    },
    /// An id counter would overflow, or a request asked for too many ids at once.
    #[error("cannot allocate {count} ids")]
    IdsExhausted {
        /// How many were asked for.
        count: u64,
    },
    /// A string or list in the command is larger than the limit.
    #[error("{what} is too large ({size} > {max})")]
    TooLarge {
        /// The field.
        what: Cow<'static, str>,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// `RegisterNodeAs` with an id or address that belongs to another node.
    #[error("cannot register node {id} at {addr}: {reason}")]
    RegistrationConflict {
        /// The id asked for.
        id: NodeId,
        /// The address given.
        addr: String,
        /// What it conflicts with.
        reason: Cow<'static, str>,
    },
    /// A user or key command with an invalid name, hash, key or role.
    #[error("invalid {what}: {reason}")]
    InvalidAuth {
        /// The field.
        what: Cow<'static, str>,
        /// What is wrong.
        reason: Cow<'static, str>,
    },
    /// No user of that name.
    #[error("unknown user {name}")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// `SetNodeState Removed` for a node that still holds replicas in the shard map, or that an
    /// operator in flight is moving a replica onto: removing it would strand those replicas.
    #[error(
        "node {node} still holds {replicas} replica(s) and is the target of {operators} \
         operator(s) in flight; drain it first (`ringctl drain-node {node_id}`)",
        node_id = .node.get()
    )]
    NodeHoldsReplicas {
        /// The node.
        node: NodeId,
        /// Replicas (voters and learners) on it in PD's shard map.
        replicas: u64,
        /// Operators in flight that add a replica on it.
        operators: u64,
    },
    /// `ReportStore` from a data dir that is not the one PD recorded for the node: the node
    /// lost its data (or runs on another node's disk) and must not rejoin as its old member.
    #[error(
        "node {node} reported store incarnation {reported:016x} but the placement driver \
         recorded store incarnation {recorded:016x} for it: this data dir is not the node's \
         own (it was emptied, replaced or copied)"
    )]
    StoreMismatch {
        /// The node.
        node: NodeId,
        /// The incarnation PD recorded at the node's first report.
        recorded: u64,
        /// The incarnation the node reported now.
        reported: u64,
    },
}

/// Why a shard map or descriptor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The arcs are not sorted, contiguous and covering the ring exactly once.
    DoesNotCoverRing,
    /// Two shards share an id, or a shard uses the PD's group id 0.
    DuplicateOrReservedShardId,
    /// A replica names an unregistered node, or the same node twice, or the shard has no voter.
    BadReplicas,
    /// The reported arc does not fit the known map (not the same arc, nor a split of it).
    ArcMismatch,
    /// Same epoch as the known descriptor but different contents.
    EpochConflict,
}

/// Why an admin operator was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The source node holds no replica of the shard.
    SourceHasNoReplica,
    /// The target node already holds a replica of the shard.
    TargetHasReplica,
    /// The target node is not `Up`.
    TargetNotUp,
    /// The target of a leader transfer is not a voter.
    TargetNotVoter,
    /// The split position is not strictly inside the shard's arc.
    SplitOutsideArc,
    /// The operator would do nothing.
    NoChange,
    /// The cluster-wide operator limit is reached.
    TooManyOperators,
    /// The replica to move is a learner: learners exist only while an operator adds them.
    SourceIsLearner,
}

/// Result with the PD's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
