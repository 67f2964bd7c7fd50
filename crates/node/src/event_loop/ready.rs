//! Ready handling, the driver's part: the core handles each Ready (`core/ready.rs`: messages,
//! the turn's writes, persist-before-acknowledge); the driver counts metrics, applies, serves
//! reads, streams snapshots, turns the turn's writes into one fjall batch for the group-commit
//! writer and reports each batch's durability back to the core.

use super::{EventLoop, Internal};
use crate::error::{Error, Result};
use ringkv_raft::{Ready, Role};
use ringkv_storage::Durable;
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

    /// Handles a Ready in the core ([`crate::core::node_core::NodeCore::handle_ready`]), then
    /// does the driver's part: metrics, apply, reads, snapshot streams.
    pub(super) fn handle_ready(
        &mut self,
        shard: ShardId,
        ready: Ready,
        internal: &mut Internal,
    ) -> Result<()> {
        let output = self.core.handle_ready(shard, ready)?;
        if output.leader_changed {
            self.metrics.raft_leader_changes.inc();
        }
        if output.soft_state_changed
            && let Some(group) = self.core.groups.get(&shard)
        {
            self.watch.set_role(
                shard,
                group.role == Role::Leader && group.initialized,
                group.leader_hint(),
                &group.descriptor,
                group.applied.0,
            );
        }
        if output.campaigned {
            self.metrics.raft_campaigns.inc();
        }
        if let Some(map) = output.pd_map {
            self.map = map;
        }
        if !output.committed.is_empty() {
            self.apply(shard, output.committed, internal)?;
        }
        self.core
            .serve_reads(shard, &self.store, crate::pd_host::wall_clock_ms());
        for message in output.snapshots {
            self.send_snapshot(message, internal.snapshot_events_tx.clone());
        }
        Ok(())
    }

    pub(super) fn maybe_submit(&mut self, internal: &mut Internal) -> Result<()> {
        if self
            .core
            .persist
            .is_full(self.config.storage.writer_queue_depth)
        {
            return Ok(());
        }
        self.submit_now(internal)
    }

    /// Submits the current batch whatever the queue depth (a split must order its own write
    /// after everything queued so far).
    pub(super) fn submit_now(&mut self, internal: &mut Internal) -> Result<()> {
        let Some(writes) = self.core.take_writes() else {
            return Ok(());
        };
        let batch = writes.into_batch()?;
        self.metrics
            .storage_group_commit_entries
            .observe(batch.entry_count() as f64);
        self.metrics
            .storage_group_commit_bytes
            .observe(batch.size_bytes() as f64);
        let ticket = self.store.submit(batch)?;
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
        for shard in self.core.batch_durable()? {
            self.core
                .serve_reads(shard, &self.store, crate::pd_host::wall_clock_ms());
        }
        Ok(())
    }

    /// Stops cleanly: submits what is pending and waits until every batch is durable, then
    /// flushes the apply writes.
    pub(super) async fn finish(&mut self, internal: &mut Internal) -> Result<()> {
        loop {
            self.maybe_submit(internal)?;
            if self.core.persist.in_flight() == 0 {
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
