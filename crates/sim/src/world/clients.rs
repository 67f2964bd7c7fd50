//! The simulated clients: their operations, requests to replicas, and answers.

use super::*;

impl World {
    pub(super) fn run_clients(&mut self) {
        let now = self.now;
        for position in 0..self.clients.len() {
            // Timeouts.
            let timed_out = self.clients[position]
                .in_flight
                .as_ref()
                .is_some_and(|f| f.deadline <= now);
            if timed_out && let Some(flight) = self.clients[position].in_flight.take() {
                // Try elsewhere next time: the node may be down or cut off.
                if let Some(group) = self.history.operations.get(flight.slot).map(|o| o.group) {
                    self.clients[position].leader_hint.remove(&group);
                }
                if flight.is_read
                    && let Some(operation) = self.history.operations.get_mut(flight.slot)
                {
                    // A read with no answer had no effect.
                    operation.discarded = true;
                }
                self.clients[position].next_op_at = now + 1;
            }
            if self.clients[position].in_flight.is_some() || self.clients[position].next_op_at > now
            {
                continue;
            }
            self.issue_operation(position);
        }
    }

    pub(super) fn issue_operation(&mut self, position: usize) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        if self
            .quiet
            .as_ref()
            .is_some_and(|q| q.is_idle(group, self.now / TICK_UNITS))
        {
            // An idle window of this group: let it go quiet.
            self.clients[position].next_op_at = self.now + TICK_UNITS;
            return;
        }
        let key = self.rng.range(0, u64::from(self.params.keys)) as Key;
        let value = self.tick_clock();
        let op = match self.rng.range(0, 10) {
            0..=3 => Op::Get(key),
            4..=6 => Op::Put(key, value),
            7 => Op::Delete(key),
            _ => {
                let expected = self
                    .history
                    .operations
                    .iter()
                    .rev()
                    .find_map(|o| match o.op {
                        Op::Put(k, v) if k == key && o.group == group => Some(v),
                        _ => None,
                    });
                Op::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let mode = if self.chance(self.params.lease_reads_per_mille) {
            ReadMode::Lease
        } else {
            ReadMode::Safe
        };
        let hosts: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replicas.contains_key(&group))
            .map(|(id, _)| *id)
            .collect();
        let hinted = self.clients[position].leader_hint.get(&group).copied();
        let node = match hinted {
            Some(node) if node.is_some() && self.rng.range(0, 10) > 0 => node,
            _ => hosts[self.rng.range(0, hosts.len() as u64) as usize],
        };
        let at = self.tick_clock();
        let client = &mut self.clients[position];
        let op_id = client.next_op_id;
        client.next_op_id += 1;
        let id = client.id;
        let slot = self.history.invoke(id, group, op, at);
        self.clients[position].in_flight = Some(InFlight {
            op_id,
            slot,
            is_read: matches!(op, Op::Get(_)),
            deadline: self.now + CLIENT_TIMEOUT_TICKS * TICK_UNITS,
        });
        self.send(Packet::Request {
            client: id,
            node,
            group,
            op_id,
            op,
            mode,
        });
    }

    pub(super) fn handle_request(
        &mut self,
        client: u64,
        node: NodeId,
        group: ShardId,
        op_id: u64,
        op: Op,
        mode: ReadMode,
    ) {
        let context = self.next_read_context;
        let outcome = match self.live_replica(node, group) {
            None => return,
            Some(replica) => match replica.raw.as_mut() {
                None => return,
                Some(raw) if !raw.is_leader() => {
                    let leader = raw.status().leader;
                    Outcome::NotLeader(
                        self.member_node
                            .get(&leader)
                            .copied()
                            .unwrap_or(NodeId::NONE),
                    )
                }
                Some(raw) => match op {
                    Op::Get(key) => match raw.read_index(context, mode) {
                        Ok(()) => {
                            replica.pending_reads.insert(context, (client, op_id, key));
                            self.next_read_context += 1;
                            return;
                        }
                        Err(_) => Outcome::Failed,
                    },
                    _ => {
                        let term = raw.term();
                        match raw.propose(Command { client, op_id, op }.encode()) {
                            Ok(index) => {
                                replica.pending_writes.insert(index, (client, op_id, term));
                                return;
                            }
                            Err(_) => Outcome::Failed,
                        }
                    }
                },
            },
        };
        self.send(Packet::Response {
            client,
            op_id,
            outcome,
        });
    }

    pub(super) fn handle_response(&mut self, client: u64, op_id: u64, outcome: Outcome) {
        let Some(position) = self.clients.iter().position(|c| c.id == client) else {
            return;
        };
        let matches = self.clients[position]
            .in_flight
            .as_ref()
            .is_some_and(|f| f.op_id == op_id);
        if !matches {
            return;
        }
        let Some(flight) = self.clients[position].in_flight.take() else {
            return;
        };
        let at = self.tick_clock();
        let group = self.history.operations.get(flight.slot).map(|o| o.group);
        if let Some(operation) = self.history.operations.get_mut(flight.slot) {
            match outcome {
                Outcome::Ok(result) => operation.completed = Some((at, result)),
                // Refused or lost for sure: it never took effect.
                Outcome::NotLeader(_) | Outcome::Failed => operation.discarded = true,
            }
        }
        if let (Outcome::NotLeader(hint), Some(group)) = (outcome, group) {
            self.clients[position].leader_hint.insert(group, hint);
        }
        self.clients[position].next_op_at = self.now + self.rng.range(0, 3 * TICK_UNITS);
    }
}
