//! Ready handling: routes messages, adds a Ready's writes to the turn's batch, ties its
//! `on_persisted` to the batch that makes it durable, and submits batches to the writer.

use super::requests::{fail_reads, serve_reads};
use super::{EventLoop, Internal, membership};
use crate::core::persist::Persisted;
use crate::error::{Error, Result};
use crate::replica_meta;
use ringkv_raft::{Ready, Role};
use ringkv_storage::Durable;
use ringkv_types::raft::Message;
use ringkv_types::{RaftBatch, ShardId};
use tracing::{debug, info};

impl EventLoop {
    /// Sends what the turn queued: one batch per peer.
    pub(super) fn flush_outbox(&mut self) {
        for (to, messages) in self.core.outbox.take() {
            let count = messages.len();
            match self.transport.send(to, RaftBatch::new(messages)) {
                ringkv_transport::SendOutcome::Queued => {}
                outcome => debug!(%to, count, ?outcome, "raft batch not queued"),
            }
        }
    }

    /// Queues `message` for its peer; a snapshot goes to `snapshots` (sent on a stream).
    pub(super) fn route(&mut self, message: Message, snapshots: &mut Vec<Message>) {
        if let Some(snapshot) = self.core.outbox.route(message) {
            snapshots.push(snapshot);
        }
    }

    pub(super) fn process_readies(&mut self, internal: &mut Internal) -> Result<()> {
        let dirty = std::mem::take(&mut self.core.dirty);
        for shard in dirty {
            self.core.note_polled(shard);
            let Some(group) = self.core.groups.get_mut(&shard) else {
                continue;
            };
            if !group.raw.has_ready() {
                continue;
            }
            let ready = group.raw.ready()?;
            self.handle_ready(shard, ready, internal)?;
            if self
                .core
                .groups
                .get(&shard)
                .is_some_and(|g| g.raw.has_ready())
            {
                self.core.dirty.insert(shard);
            }
        }
        Ok(())
    }

    pub(super) fn handle_ready(
        &mut self,
        shard: ShardId,
        ready: Ready,
        internal: &mut Internal,
    ) -> Result<()> {
        let Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        } = ready;
        if let Some(soft) = soft_state
            && let Some(group) = self.core.groups.get_mut(&shard)
        {
            if soft.role == Role::Leader && group.role != Role::Leader {
                info!(%shard, term = %group.raw.term(), "became leader");
            }
            if soft.leader != group.leader && soft.leader.is_some() {
                self.metrics.raft_leader_changes.inc();
            }
            if soft.role == Role::Candidate && group.role != Role::Candidate {
                self.metrics.raft_campaigns.inc();
            }
            group.leader = soft.leader;
            group.role = soft.role;
            self.watch.set_role(
                shard,
                soft.role == Role::Leader && group.initialized,
                group.leader_hint(),
                &group.descriptor,
                group.applied.0,
            );
            if soft.role != Role::Leader {
                fail_reads(&mut self.core.replies, group);
                membership::fail_change(&mut self.core.replies, group);
            }
            membership::answer_transfers(&mut self.core.replies, group);
        }
        let mut snapshots = Vec::new();
        for message in messages {
            self.route(message, &mut snapshots);
        }
        let needs_persist = snapshot.is_some() || !entries.is_empty() || hard_state.is_some();
        if let Some(snapshot) = snapshot {
            // IMPORTANT: the snapshot's data was validated when it arrived and installs in the
            // same atomic batch as the new compaction point; without it we refuse to go on.
            let prepared = self
                .core
                .groups
                .get_mut(&shard)
                .and_then(|g| g.pending_install.take());
            match prepared {
                Some(prepared) if prepared.meta().index == snapshot.meta.index => {
                    self.batch.install_snapshot(prepared);
                    // IMPORTANT: the descriptor the snapshot carries is saved in the same batch.
                    let descriptor = self
                        .core
                        .groups
                        .get_mut(&shard)
                        .and_then(|g| g.pending_descriptor.take());
                    if let Some(descriptor) = descriptor {
                        self.batch.set_meta(
                            shard,
                            &replica_meta::descriptor_key(shard),
                            replica_meta::encode_descriptor(&descriptor)?,
                        );
                        if let Some(group) = self.core.groups.get_mut(&shard) {
                            group.descriptor = descriptor;
                            group.initialized = true;
                        }
                    }
                    if let Some(group) = self.core.groups.get_mut(&shard)
                        && let Some(host) = group.machine.pd_mut()
                        && let Some(state) = host.pending_install.take()
                    {
                        // IMPORTANT: the PD state the snapshot carries is saved in the same
                        // batch as the install (it matches the snapshot's applied index).
                        let mut state = state;
                        for (name, value) in crate::pd_records::all_records(&mut state)? {
                            self.batch.set_meta(shard, &name, value);
                        }
                        self.map = state.shard_map.clone();
                        host.state = state;
                    }
                }
                _ => {
                    return Err(Error::Corrupt {
                        what: "snapshot install",
                        reason: format!(
                            "shard {shard}: Ready holds snapshot at {} without its data",
                            snapshot.meta.index
                        ),
                    });
                }
            }
            if let Some(group) = self.core.groups.get_mut(&shard) {
                // The data becomes readable when the batch is durable (see `on_durable`).
                group.installing = Some((number, snapshot.meta.index));
                group.conf_saved = true;
            }
        } else if let Some(group) = self.core.groups.get_mut(&shard) {
            // The core refused the snapshot we stepped (it was stale): nothing to install.
            group.pending_install = None;
            group.pending_descriptor = None;
            if let Some(host) = group.machine.pd_mut() {
                host.pending_install = None;
            }
        }
        // IMPORTANT: entries and hard state go into the batch whose durability gates
        // `on_persisted` and the persisted messages (votes, append acknowledgements).
        self.batch.append(shard, &entries)?;
        if let Some(hard_state) = hard_state {
            self.batch.set_hard_state(shard, hard_state);
        }
        self.attach(shard, number, persisted_messages, needs_persist)?;
        if !committed_entries.is_empty() {
            self.apply(shard, committed_entries, internal)?;
        }
        if let Some(group) = self.core.groups.get_mut(&shard) {
            for read in read_states {
                if let Some(reads) = group.reads_sent.remove(&read.context) {
                    group.reads_ready.push((read.index, reads));
                }
            }
            serve_reads(&mut self.core.replies, &self.store, group);
        }
        for message in snapshots {
            self.send_snapshot(message, internal.snapshot_events_tx.clone());
        }
        Ok(())
    }

    /// Ties a Ready's `on_persisted` and persisted messages to the batch that makes it durable.
    pub(super) fn attach(
        &mut self,
        shard: ShardId,
        number: u64,
        messages: Vec<Message>,
        needs_persist: bool,
    ) -> Result<()> {
        let ready = Persisted {
            shard,
            number,
            messages,
        };
        if let Some(Persisted { messages, .. }) =
            self.persist
                .attach(ready, needs_persist, self.batch.is_empty())
        {
            if let Some(group) = self.core.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
            }
            let mut snapshots = Vec::new();
            for message in messages {
                self.route(message, &mut snapshots);
            }
            self.core.dirty.insert(shard);
        }
        Ok(())
    }

    pub(super) fn maybe_submit(&mut self, internal: &mut Internal) -> Result<()> {
        if self.persist.is_full(self.config.storage.writer_queue_depth) {
            return Ok(());
        }
        self.submit_now(internal)
    }

    /// Submits the current batch whatever the queue depth (a split must order its own write
    /// after everything queued so far).
    pub(super) fn submit_now(&mut self, internal: &mut Internal) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.metrics
            .storage_group_commit_entries
            .observe(batch.entry_count() as f64);
        self.metrics
            .storage_group_commit_bytes
            .observe(batch.size_bytes() as f64);
        let ticket = self.store.submit(batch)?;
        self.persist.submitted();
        let sent = internal
            .tickets
            .as_ref()
            .map(|tickets| tickets.send(ticket).is_ok());
        if sent != Some(true) {
            return Err(Error::Storage(ringkv_storage::Error::WriterStopped));
        }
        Ok(())
    }

    pub(super) fn on_durable(&mut self, result: ringkv_storage::Result<Durable>) -> Result<()> {
        let durable = result?;
        self.metrics
            .storage_fsync_duration
            .observe(durable.commit_duration.as_secs_f64());
        let Some(readies) = self.persist.durable() else {
            return Ok(());
        };
        let mut snapshots = Vec::new();
        for Persisted {
            shard,
            number,
            messages,
        } in readies
        {
            if let Some(group) = self.core.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
                if let Some((ready, index)) = group.installing
                    && ready <= number
                {
                    group.installing = None;
                    group.applied = group.applied.max(index);
                    if let Some(data) = group.machine.data_mut() {
                        // The snapshot may have brought values with a TTL.
                        data.ttl.possible = true;
                    }
                    serve_reads(&mut self.core.replies, &self.store, group);
                }
                self.core.dirty.insert(shard);
            }
            for message in messages {
                self.route(message, &mut snapshots);
            }
        }
        // Persisted messages are never snapshots (only leaders send those, from `messages`).
        Ok(())
    }

    /// Stops cleanly: submits what is pending and waits until every batch is durable, then
    /// flushes the apply writes.
    pub(super) async fn finish(&mut self, internal: &mut Internal) -> Result<()> {
        loop {
            self.maybe_submit(internal)?;
            if self.persist.in_flight() == 0 {
                break;
            }
            match internal.durable.recv().await {
                Some(result) => self.on_durable(result)?,
                None => return Err(Error::Storage(ringkv_storage::Error::WriterStopped)),
            }
        }
        self.flush_outbox();
        // IMPORTANT: apply batches are written without their own fsync; make them durable so a
        // restart does not re-apply (harmless) or lose answered reads' basis.
        self.store.persist()?;
        info!("store flushed");
        Ok(())
    }
}
