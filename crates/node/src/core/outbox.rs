//! Messages of one turn, gathered per peer node so the driver sends one batch per peer.

use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{NodeId, member_node};
use std::collections::BTreeMap;

/// The turn's outgoing Raft messages by destination node.
#[derive(Debug, Default)]
pub struct Outbox {
    peers: BTreeMap<NodeId, Vec<Message>>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `message` for the node of its destination member. An `InstallSnapshot` comes
    /// back instead: its data goes on a snapshot stream, which the driver opens.
    pub fn route(&mut self, message: Message) -> Option<Message> {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            return Some(message);
        }
        // The Raft core addresses members; the transport addresses nodes.
        self.push(member_node(message.to), message);
        None
    }

    /// Queues `message` for `node`.
    pub fn push(&mut self, node: NodeId, message: Message) {
        self.peers.entry(node).or_default().push(message);
    }

    /// Takes everything queued: one list per node.
    pub fn take(&mut self) -> BTreeMap<NodeId, Vec<Message>> {
        std::mem::take(&mut self.peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::raft::{Snapshot, SnapshotMeta};
    use ringkv_types::{LogIndex, ShardId, Term, member_id};

    fn message(to: NodeId, body: MessageBody) -> Message {
        Message {
            group: ShardId(3),
            from: member_id(NodeId(1), 0),
            to,
            term: Term(2),
            body,
        }
    }

    #[test]
    fn messages_go_to_the_member_node_and_snapshots_come_back() {
        let mut outbox = Outbox::new();
        let to = member_id(NodeId(2), 5);
        assert!(
            outbox
                .route(message(to, MessageBody::ReplicaRemoved))
                .is_none()
        );
        let snapshot = MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(9),
                    term: Term(2),
                    conf: ringkv_types::raft::ConfState::default(),
                },
                data: bytes::Bytes::new(),
            },
        };
        assert!(outbox.route(message(to, snapshot)).is_some());
        outbox.push(NodeId(4), message(NodeId(4), MessageBody::ReplicaRemoved));
        let sent = outbox.take();
        assert_eq!(
            sent.keys().copied().collect::<Vec<_>>(),
            [NodeId(2), NodeId(4)]
        );
        assert_eq!(sent[&NodeId(2)].len(), 1);
        assert!(outbox.take().is_empty());
    }
}
