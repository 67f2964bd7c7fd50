//! The unit of Raft traffic between two nodes.

use crate::ids::NodeId;
use crate::raft::Message;
use serde::{Deserialize, Serialize};

/// All Raft messages one node sends another in one event-loop turn, for any number of groups.
///
/// Batching per destination per turn is what makes multi-Raft cheap: one frame (one envelope,
/// one checksum, one stream write) carries heartbeats or appends of every group the two nodes
/// share.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftBatch {
    /// The messages, in the order the sender produced them.
    pub messages: Vec<Message>,
}

impl RaftBatch {
    /// A batch of `messages`.
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages }
    }

    /// Whether every message is addressed from node `from` to node `to`: receivers drop batches
    /// that are not, since a peer may only speak for itself. See [`Message::is_between`].
    pub fn is_between(&self, from: NodeId, to: NodeId) -> bool {
        self.messages.iter().all(|m| m.is_between(from, to))
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}
