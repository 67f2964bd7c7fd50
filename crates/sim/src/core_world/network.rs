//! The network of a node-core run: packets between nodes (Raft messages, snapshots) and
//! between clients and nodes (requests, answers), with the seed's drop, duplicate, delay and
//! partition faults between nodes and answers to clients lost now and then (more around a
//! split, `split.rs`); and their delivery into the nodes and the clients.

use super::{CoreWorld, fatal};
use crate::checkers::Violation;
use crate::params::TICK_UNITS;
use ringkv_node::core::replies::RequestId;
use ringkv_storage::MemorySnapshot;
use ringkv_types::raft::Message;
use ringkv_types::{KvRequest, NodeId, Response, ShardDescriptor};

/// What travels between nodes and to and from clients.
pub(super) enum Packet {
    /// A Raft message between nodes.
    Raft(Message),
    /// A snapshot with its data, from a leader.
    Snapshot {
        /// The sending node.
        from: NodeId,
        message: Message,
        snapshot: MemorySnapshot,
        descriptor: ShardDescriptor,
    },
    Request {
        request_id: u64,
        request: KvRequest,
    },
    Response {
        request_id: u64,
        response: Response,
    },
}

impl CoreWorld {
    /// Puts `packet` from node `from` on the network to `to` (a node, or `None` for the
    /// clients), with the seed's drop, duplicate and delay faults between nodes.
    pub(super) fn send(&mut self, from: NodeId, to: Option<NodeId>, packet: Packet) {
        let between_nodes = matches!(packet, Packet::Raft(_) | Packet::Snapshot { .. });
        if between_nodes {
            let cut = to.is_some_and(|to| {
                self.isolated.contains_key(&from) || self.isolated.contains_key(&to)
            });
            if cut || self.chance(self.knobs.drop_per_mille) {
                if let Packet::Snapshot { message, .. } = &packet {
                    self.report_snapshot(from, message, false);
                }
                return;
            }
            if let Packet::Raft(message) = &packet
                && self.chance(self.knobs.duplicate_per_mille)
            {
                let delay = self.rng.range(1, self.knobs.max_delay_units + 1);
                self.enqueue(delay, to, Packet::Raft(message.clone()));
            }
        }
        if matches!(packet, Packet::Response { .. }) {
            let tick = self.now / TICK_UNITS;
            let around_split = self.split.as_ref().map_or(0, |plan| plan.reply_loss(tick));
            if self.chance(self.knobs.reply_loss_per_mille + around_split) {
                return;
            }
        }
        let delay = self.rng.range(1, self.knobs.max_delay_units + 1);
        self.enqueue(delay, to, packet);
    }

    pub(super) fn enqueue(&mut self, delay: u64, to: Option<NodeId>, packet: Packet) {
        self.sequence += 1;
        self.network
            .insert((self.now + delay, self.sequence), (to, packet));
    }

    fn report_snapshot(&mut self, from: NodeId, message: &Message, delivered: bool) {
        if let Some(node) = self.nodes.get_mut(&from) {
            node.report_snapshot(message.group, message.to, delivered);
        }
    }

    pub(super) fn deliver(&mut self) -> Result<(), Violation> {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (to, packet) = entry.remove();
            match (to, packet) {
                (Some(to), Packet::Raft(message)) => {
                    self.trace
                        .record(&[1, self.now, to.get(), message.from.get()]);
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.receive(message).map_err(fatal)?;
                    }
                }
                (
                    Some(to),
                    Packet::Snapshot {
                        from,
                        message,
                        snapshot,
                        descriptor,
                    },
                ) => {
                    let index = snapshot.meta.index.0;
                    self.trace.record(&[2, self.now, to.get(), index]);
                    let taken = match self.nodes.get_mut(&to) {
                        Some(node) if node.is_up() => node
                            .receive_snapshot(message.clone(), snapshot, descriptor)
                            .map_err(fatal)?,
                        _ => false,
                    };
                    self.snapshots += u64::from(taken);
                    self.report_snapshot(from, &message, taken);
                }
                (
                    Some(to),
                    Packet::Request {
                        request_id,
                        request,
                    },
                ) => {
                    self.trace.record(&[3, self.now, to.get(), request_id]);
                    let now_ms = self.ttl.wall_ms(to, self.now);
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.request(request, RequestId(request_id), now_ms)
                            .map_err(fatal)?;
                    }
                }
                (
                    None,
                    Packet::Response {
                        request_id,
                        response,
                    },
                ) => {
                    let code = match &response {
                        Response::Kv(_) => 1,
                        _ => 2,
                    };
                    self.trace.record(&[4, self.now, request_id, code]);
                    let pause = self.rng.range(0, 3 * TICK_UNITS);
                    self.clients
                        .answer(request_id, response, self.now, &mut self.clock, pause);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
