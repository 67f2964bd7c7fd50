//! The simulated network: packets between nodes and clients, with the seed's drop,
//! duplicate, delay and partition faults, and their delivery.

use super::*;

impl World {
    pub(super) fn send(&mut self, packet: Packet) {
        if matches!(packet, Packet::Raft(_)) {
            self.raft_messages += 1;
        }
        if !self.healed && self.chance(self.params.drop_per_mille) {
            return;
        }
        // Raft must cope with duplicates; client requests are not duplicated, because without
        // sessions (ringkvd has them, this model does not) a duplicated write would apply twice.
        let duplicable = matches!(packet, Packet::Raft(_));
        let copies = if duplicable && !self.healed && self.chance(self.params.duplicate_per_mille) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.range(1, self.params.max_delay_units + 1);
            self.sequence += 1;
            self.network
                .insert((self.now + delay, self.sequence), packet.clone());
        }
    }

    pub(super) fn deliver_packets(&mut self) -> Result<(), Violation> {
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let packet = entry.remove();
            match packet {
                Packet::Raft(message) => {
                    let (Some(&from), Some(&to)) = (
                        self.member_node.get(&message.from),
                        self.member_node.get(&message.to),
                    ) else {
                        continue;
                    };
                    if self.cut.contains(&(from, to)) {
                        continue;
                    }
                    self.trace.record(&[
                        self.now,
                        1,
                        message.group.get(),
                        message.from.get(),
                        message.to.get(),
                        message.term.get(),
                        message.body.kind().len() as u64,
                    ]);
                    if self.verbose {
                        eprintln!(
                            "{} deliver {} {}->{} {:?} t{}",
                            self.now,
                            message.group,
                            message.from,
                            message.to,
                            message.body,
                            message.term.get()
                        );
                    }
                    let Some(replica) = self.live_replica(to, message.group) else {
                        continue;
                    };
                    if replica.member != message.to {
                        // For an earlier incarnation of this node's replica.
                        continue;
                    }
                    let Some(raw) = replica.raw.as_mut() else {
                        continue;
                    };
                    raw.step(message).map_err(|e| raft_error(e.to_string()))?;
                    raw.check_invariants();
                }
                Packet::Request {
                    client,
                    node,
                    group,
                    op_id,
                    op,
                    mode,
                } => {
                    self.trace.record(&[self.now, 2, client, node.get(), op_id]);
                    self.handle_request(client, node, group, op_id, op, mode);
                }
                Packet::Response {
                    client,
                    op_id,
                    outcome,
                } => {
                    self.trace.record(&[self.now, 3, client, op_id]);
                    self.handle_response(client, op_id, outcome);
                }
            }
        }
        Ok(())
    }

    pub(super) fn live_replica(&mut self, node: NodeId, group: ShardId) -> Option<&mut Replica> {
        let node = self.nodes.get_mut(&node)?;
        if !node.up {
            return None;
        }
        node.replicas.get_mut(&group)
    }
}
