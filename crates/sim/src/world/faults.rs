//! Faults and operator actions of the chaos phase (crashes, partitions, membership
//! changes, leader transfers), the heal, and the liveness probes after it.

use super::*;

impl World {
    pub(super) fn inject_faults(&mut self) {
        let now = self.now;
        // Restarts due.
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.restart_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.trace.record(&[now, 6, id.get()]);
            self.start_node(id);
        }
        // Crashes: keep at least a majority of nodes up so the run stays interesting.
        let down = self.nodes.values().filter(|n| !n.up).count() as u64;
        if down < (self.params.nodes - 1) / 2 && self.chance(self.params.crash_per_mille) {
            let victim = NodeId(self.rng.range(1, self.params.nodes + 1));
            if self.nodes.get(&victim).is_some_and(|n| n.up) {
                let restart_at = now + self.rng.range(5, 60) * TICK_UNITS;
                self.crash_node(victim, restart_at);
            }
        }
        // Partitions.
        if self.partition_until.is_some_and(|t| t <= now) {
            self.cut.clear();
            self.partition_until = None;
            self.trace.record(&[now, 7]);
        }
        if self.partition_until.is_none() && self.chance(self.params.partition_per_mille) {
            self.start_partition();
        }
        if let Some((start, node, ticks)) = self.pending_isolation
            && start <= now
        {
            self.pending_isolation = None;
            if self.partition_until.is_none() {
                for &other in self.nodes.keys() {
                    if other != node {
                        self.cut.insert((node, other));
                        self.cut.insert((other, node));
                    }
                }
                self.partition_until = Some(now + ticks * TICK_UNITS);
                self.trace.record(&[now, 12, node.get()]);
                if self.verbose {
                    eprintln!("{now} isolate new leader {node}");
                }
            }
        }
        self.maybe_kill_quiet_leader();
        if self.placement.is_some() {
            self.drive_placement();
        } else if self.chance(self.params.conf_change_per_mille) {
            self.change_membership();
        }
        if self.chance(self.params.transfer_per_mille) {
            self.transfer_leadership();
        }
    }

    pub(super) fn start_partition(&mut self) {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let side: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|_| self.rng.range(0, 2) == 0)
            .collect();
        let one_way = self.rng.range(0, 3) == 0;
        for &a in &side {
            for &b in &nodes {
                if side.contains(&b) {
                    continue;
                }
                self.cut.insert((a, b));
                if !one_way {
                    self.cut.insert((b, a));
                }
            }
        }
        let until = self.now + self.rng.range(10, 80) * TICK_UNITS;
        if self.verbose {
            eprintln!("{} partition {:?} one_way {one_way}", self.now, side);
        }
        self.partition_until = Some(until);
        self.trace
            .record(&[self.now, 8, side.len() as u64, u64::from(one_way)]);
    }

    pub(super) fn leader_of(&self, group: ShardId) -> Option<NodeId> {
        self.nodes.iter().find_map(|(id, node)| {
            let raw = node.replicas.get(&group)?.raw.as_ref()?;
            (node.up && raw.is_leader()).then_some(*id)
        })
    }

    pub(super) fn change_membership(&mut self) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        let Some(leader) = self.leader_of(group) else {
            return;
        };
        let Some(status) = self
            .nodes
            .get(&leader)
            .and_then(|n| n.replicas.get(&group))
            .and_then(|r| r.raw.as_ref())
            .map(|r| r.status())
        else {
            return;
        };
        if status.conf_index > status.committed {
            return;
        }
        let conf = status.conf.clone();
        let change = if let Some(&learner) = conf.learners.first() {
            ConfChange::PromoteLearner(learner)
        } else if conf.voters.len() >= 4 && self.rng.range(0, 2) == 0 {
            let victim = conf.voters[self.rng.range(0, conf.voters.len() as u64) as usize];
            ConfChange::Remove(victim)
        } else if conf.voters.len() < 5 {
            let hosting: BTreeSet<NodeId> = conf
                .members()
                .filter_map(|m| self.member_node.get(&m).copied())
                .collect();
            let candidates: Vec<NodeId> = self
                .nodes
                .keys()
                .copied()
                .filter(|id| !hosting.contains(id))
                .collect();
            if candidates.is_empty() {
                return;
            }
            let target = candidates[self.rng.range(0, candidates.len() as u64) as usize];
            // A fresh, empty replica under a new member id (see `Replica::member`); whatever
            // replica the node kept from an earlier membership is obsolete.
            let member = NodeId(self.next_member);
            self.next_member += 1;
            self.member_node.insert(member, target);
            let seed = self.seed;
            let tuning = self.tuning;
            if let Some(node) = self.nodes.get_mut(&target) {
                let mut replica = Replica::new(group, target, member, MemStorage::new());
                if node.up
                    && let Err(e) = replica.start(seed, &tuning)
                {
                    panic!("new replica failed to start: {e}");
                }
                node.replicas.insert(group, replica);
            }
            ConfChange::AddLearner(member)
        } else {
            return;
        };
        self.trace.record(&[self.now, 9, group.get(), leader.get()]);
        if let Some(raw) = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_mut())
        {
            let _ = raw.propose_conf_change(change);
        }
    }

    pub(super) fn transfer_leadership(&mut self) {
        let group = self.groups[self.rng.range(0, self.groups.len() as u64) as usize];
        let Some(leader) = self.leader_of(group) else {
            return;
        };
        let voters = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_ref())
            .map(|r| r.conf_state().voters.clone())
            .unwrap_or_default();
        if voters.is_empty() {
            return;
        }
        let target = voters[self.rng.range(0, voters.len() as u64) as usize];
        self.trace
            .record(&[self.now, 10, group.get(), target.get()]);
        if let Some(raw) = self
            .live_replica(leader, group)
            .and_then(|r| r.raw.as_mut())
        {
            let _ = raw.transfer_leader(target);
        }
    }

    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        self.partition_until = None;
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.up)
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start_node(id);
        }
        self.trace.record(&[self.now, 11]);
    }

    /// Heal phase: ask each group's current leader to commit a marker; a group is live once
    /// its marker is applied by the leader that proposed it.
    pub(super) fn probe_liveness(&mut self) {
        for group in self.groups.clone() {
            if self.live_groups.contains(&group) {
                continue;
            }
            let Some(leader) = self.leader_of(group) else {
                continue;
            };
            let Some(replica) = self.live_replica(leader, group) else {
                continue;
            };
            let Some(raw) = replica.raw.as_mut() else {
                continue;
            };
            if replica
                .pending_writes
                .values()
                .any(|(client, _, _)| *client == PROBE_CLIENT)
            {
                continue;
            }
            let command = Command {
                client: PROBE_CLIENT,
                op_id: group.get(),
                op: Op::Put(PROBE_KEY, 0),
            };
            let term = raw.term();
            if let Ok(index) = raw.propose(command.encode()) {
                replica
                    .pending_writes
                    .insert(index, (PROBE_CLIENT, group.get(), term));
            }
        }
    }
}
