//! Nodes and disks: starting and crashing nodes, the simulated disk's durability points,
//! ticks, and the driver's Ready handling over bare Raft cores.

use super::*;

impl World {
    pub(super) fn start_node(&mut self, id: NodeId) {
        if self.verbose {
            eprintln!("{} start {id}", self.now);
        }
        let seed = self.seed;
        let tuning = self.tuning;
        let groups: Vec<(ShardId, NodeId)> = match self.nodes.get_mut(&id) {
            Some(node) => {
                node.up = true;
                node.restart_at = None;
                for replica in node.replicas.values_mut() {
                    // Storage built by this simulator always decodes; a failure is a sim bug.
                    if let Err(e) = replica.start(seed, &tuning) {
                        panic!("replica {id} failed to start: {e}");
                    }
                }
                node.replicas
                    .iter()
                    .map(|(group, r)| (*group, r.member))
                    .collect()
            }
            None => Vec::new(),
        };
        for (group, member) in groups {
            self.commits.restarted(group, member);
        }
    }

    pub(super) fn crash_node(&mut self, id: NodeId, restart_at: u64) {
        if self.verbose {
            eprintln!("{} crash {id}", self.now);
        }
        self.trace.record(&[self.now, 4, id.get()]);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.up = false;
            node.restart_at = Some(restart_at);
            for replica in node.replicas.values_mut() {
                replica.crash();
            }
        }
    }

    pub(super) fn complete_disk_writes(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut outgoing = Vec::new();
        let mut installed = 0;
        for node in self.nodes.values_mut().filter(|n| n.up) {
            for replica in node.replicas.values_mut() {
                while replica.disk.front().is_some_and(|w| w.done_at <= now) {
                    let Some(write) = replica.disk.pop_front() else {
                        break;
                    };
                    if let Some(snapshot) = write.snapshot {
                        // IMPORTANT: the snapshot replaces state machine and log together.
                        replica.kv = crate::kv::KvState::decode(&snapshot.data)
                            .ok_or_else(|| raft_error("undecodable snapshot".into()))?;
                        replica.applied = snapshot.meta.index;
                        replica.conf_applied = snapshot.meta.conf.clone();
                        replica.storage.apply_snapshot(snapshot);
                        installed += 1;
                    }
                    replica.storage.append(&write.entries);
                    if let Some(hard_state) = write.hard_state {
                        replica.storage.set_hard_state(hard_state);
                    }
                    if let Some(raw) = replica.raw.as_mut() {
                        raw.on_persisted(write.number)
                            .map_err(|e| raft_error(e.to_string()))?;
                    }
                    outgoing.extend(write.messages);
                }
            }
        }
        self.snapshots += installed;
        for message in outgoing {
            self.send(Packet::Raft(message));
        }
        Ok(())
    }

    pub(super) fn tick_nodes(&mut self) -> Result<(), Violation> {
        let now = self.now;
        for node in self.nodes.values_mut().filter(|n| n.up) {
            if !(now + node.phase).is_multiple_of(TICK_UNITS) {
                continue;
            }
            for replica in node.replicas.values_mut() {
                if let Some(raw) = replica.raw.as_mut() {
                    // A quiescent replica's tick does nothing: ringkvd skips it, so do we.
                    if raw.is_quiescent() {
                        self.ticks_skipped += 1;
                        continue;
                    }
                    self.ticks_run += 1;
                    raw.tick().map_err(|e| raft_error(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn process_readies(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let groups: Vec<ShardId> = match self.nodes.get(&id) {
                Some(node) if node.up => node.replicas.keys().copied().collect(),
                _ => continue,
            };
            for group in groups {
                for _ in 0..16 {
                    let has_ready = self
                        .live_replica(id, group)
                        .and_then(|r| r.raw.as_ref())
                        .is_some_and(|raw| raw.has_ready());
                    if !has_ready {
                        break;
                    }
                    self.handle_ready(id, group)?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn handle_ready(&mut self, id: NodeId, group: ShardId) -> Result<(), Violation> {
        let now = self.now;
        let fsync = self.rng.range(1, self.params.max_fsync_units + 1);
        let snapshot_every = self.params.snapshot_every;
        let verbose = self.verbose;
        let Some(replica) = self.live_replica(id, group) else {
            return Ok(());
        };
        let Some(raw) = replica.raw.as_mut() else {
            return Ok(());
        };
        let ready = raw.ready().map_err(|e| raft_error(e.to_string()))?;
        let status = raw.status();
        if verbose {
            eprintln!(
                "{now} ready {group} {id}: {:?} t{} commit {} last {} persisted {} entries {:?} hs {:?} snap {:?} committed {:?}",
                status.role,
                status.term.get(),
                status.committed,
                status.last_index,
                status.persisted,
                ready
                    .entries
                    .iter()
                    .map(|e| (e.index.get(), e.term.get()))
                    .collect::<Vec<_>>(),
                ready.hard_state,
                ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
                ready
                    .committed_entries
                    .iter()
                    .map(|e| (e.index.get(), e.term.get()))
                    .collect::<Vec<_>>()
            );
        }
        let mut responses: Vec<(u64, u64, Outcome)> = Vec::new();
        let mut applied_entries = Vec::new();

        // Disk: after the previous write, in order. A Ready with nothing to write still goes
        // through the queue, because `on_persisted(n)` vouches for every Ready up to `n`.
        let has_write = ready.snapshot.is_some()
            || !ready.entries.is_empty()
            || ready.hard_state.is_some()
            || !ready.persisted_messages.is_empty();
        // Group commit: a write that arrives while an fsync is running joins the next batch,
        // which starts when the running one ends; one fsync covers the whole batch.
        let (started_at, done_at) = match replica.disk.back() {
            Some(last) if last.started_at > now => (last.started_at, last.done_at),
            Some(last) => {
                let start = last.done_at.max(now);
                (start, start + if has_write { fsync } else { 0 })
            }
            None => (now, now + if has_write { fsync } else { 0 }),
        };
        replica.disk.push_back(DiskWrite {
            started_at,
            done_at,
            number: ready.number,
            snapshot: ready.snapshot.clone(),
            entries: ready.entries.clone(),
            hard_state: ready.hard_state,
            messages: ready.persisted_messages,
        });

        // Apply committed entries (already durable locally).
        for entry in &ready.committed_entries {
            applied_entries.push((
                replica.applied,
                entry.index,
                entry.term,
                payload_hash(&entry.payload),
            ));
            match &entry.payload {
                EntryPayload::Noop => {}
                EntryPayload::Config(conf) => replica.conf_applied = conf.clone(),
                EntryPayload::Normal(data) => {
                    let command = Command::decode(data).ok_or_else(|| {
                        raft_error(format!("undecodable command at {}", entry.index))
                    })?;
                    let result = replica.kv.apply(&command.op);
                    if let Some((client, op_id, term)) = replica.pending_writes.remove(&entry.index)
                    {
                        let outcome = if (client, op_id, term)
                            == (command.client, command.op_id, entry.term)
                        {
                            Outcome::Ok(result)
                        } else {
                            Outcome::Failed
                        };
                        responses.push((client, op_id, outcome));
                    }
                }
            }
            replica.applied = entry.index;
        }
        if let Some(last) = ready.committed_entries.last()
            && let Some(raw) = replica.raw.as_mut()
        {
            raw.on_applied(last.index);
        }
        // Reads confirmed and now applied far enough are answered.
        for read in ready.read_states {
            replica.ready_reads.push((read.index, read.context));
        }
        let applied = replica.applied;
        let mut still_waiting = Vec::new();
        for (index, context) in std::mem::take(&mut replica.ready_reads) {
            if index <= applied {
                if let Some((client, op_id, key)) = replica.pending_reads.remove(&context) {
                    let value = replica.kv.values.get(&key).copied();
                    responses.push((client, op_id, Outcome::Ok(OpResult::Value(value))));
                }
            } else {
                still_waiting.push((index, context));
            }
        }
        replica.ready_reads = still_waiting;
        let first_index = replica
            .raw
            .as_ref()
            .map_or(LogIndex::ZERO, |r| r.status().first_index);

        // Checkers. Election safety first: a second leader of a term shows in this Ready's
        // soft state, together with its first entry (which would clash with the other
        // leader's). Then log matching, whenever a replica's log took new entries: a bad append
        // can commit (and so apply) a mismatched entry in the same Ready.
        if ready
            .soft_state
            .as_ref()
            .is_some_and(|soft| soft.role == Role::Leader)
        {
            self.election_safety
                .became_leader(group, status.term, status.id)?;
        }
        if !ready.entries.is_empty() {
            self.check_group_log_matching(group)?;
        }
        self.trace.record(&[
            now,
            5,
            group.get(),
            id.get(),
            ready.number,
            status.term.get(),
            status.committed.get(),
            ready.entries.len() as u64,
            ready.messages.len() as u64,
        ]);
        self.commits.observe(group, status.id, status.committed)?;
        for (previous, index, term, hash) in applied_entries {
            self.state_machine
                .applied(group, status.id, previous, index, term, hash)?;
            if hash == payload_hash(&EntryPayload::Noop) {
                continue;
            }
            if let Some(replica) = self.live_replica(id, group)
                && let Some(entry) = replica
                    .raw
                    .as_ref()
                    .and_then(|r| r.entries(index, index.next(), u64::MAX).ok())
                    .and_then(|e| e.into_iter().next())
                && let EntryPayload::Config(_) = entry.payload
            {
                self.conf_changes.insert((group, index));
            }
        }
        if let Some(soft) = ready.soft_state {
            match soft.role {
                Role::Candidate => self.elections += 1,
                Role::Leader => {
                    if !self.healed
                        && self.pending_isolation.is_none()
                        && self.chance(self.params.isolate_new_leader_per_mille)
                    {
                        let start = now + self.rng.range(0, 4) * TICK_UNITS;
                        let ticks = self.rng.range(5, 40);
                        self.pending_isolation = Some((start, id, ticks));
                    }
                    if let Some(replica) = self.nodes.get(&id).and_then(|n| n.replicas.get(&group))
                    {
                        self.leader_completeness.became_leader(
                            group,
                            id,
                            status.term,
                            first_index,
                            |i| replica.term_at(i),
                        )?;
                    }
                }
                _ => {}
            }
        }
        if status.role == Role::Leader
            && let Some(replica) = self.nodes.get(&id).and_then(|n| n.replicas.get(&group))
        {
            self.commits.observe_leader(
                group,
                status.id,
                status.term,
                status.committed,
                replica.term_at(status.committed),
            )?;
            self.leader_completeness
                .leader_committed(group, status.term, status.committed, |i| replica.term_at(i));
        }
        // Snapshot and compact every few entries, after the checkers read the log: compacting
        // first would drop entries this Ready committed before leader completeness records
        // them.
        if let Some(replica) = self.live_replica(id, group)
            && applied.distance_from(replica.storage.current_snapshot().meta.index)
                >= snapshot_every
        {
            replica
                .storage
                .compact(applied, replica.conf_applied.clone(), replica.kv.encode());
        }
        for message in ready.messages {
            self.send(Packet::Raft(message));
        }
        for (client, op_id, outcome) in responses {
            if client == PROBE_CLIENT {
                if matches!(outcome, Outcome::Ok(_)) {
                    self.live_groups.insert(ShardId(op_id));
                }
                continue;
            }
            self.send(Packet::Response {
                client,
                op_id,
                outcome,
            });
        }
        Ok(())
    }
}
