//! The simulated disk of a node (see `node.rs`): a turn's batch is readable when submitted,
//! enters the journal at a random time before it is durable, and is durable after a delay, in
//! order; a crash keeps a prefix of the journal.

use super::node::{SimNode, sync_applied};
use ringkv_node::core::node_core::NodeCore;
use ringkv_node::core::writes::TurnWrites;
use ringkv_storage::{MemoryLog, StateStore};

/// A batch submitted to the simulated disk.
pub(super) struct Submitted {
    writes: TurnWrites,
    /// The state store's journal mark at submission: the apply batches committed before it
    /// become durable with this batch.
    mark: u64,
    /// When the writer commits the batch into the journal (world time units).
    journal_at: u64,
    /// The batch's place in the journal once committed there: the apply batches with a
    /// sequence number below it come before it.
    journal: Option<u64>,
    /// When the batch is durable (world time units).
    durable_at: u64,
}

impl SimNode {
    /// A crash: the core is gone, and the disk keeps a prefix of its journal. Of the apply
    /// batches not yet durable, the oldest `survivors` reached the disk anyway, and with them
    /// every submitted turn batch written before one of them (the one journal orders them);
    /// everything after is lost, and the logs go back to what is durable. Returns how many
    /// apply batches were lost.
    ///
    /// # Errors
    /// A kept batch that cannot be written, as text.
    pub fn crash(&mut self, survivors: usize) -> Result<usize, String> {
        self.core = None;
        self.durable_unreported = 0;
        let unsynced = self.state.unsynced_count();
        // Apply batches below `cut` (by journal sequence) survive.
        let cut = self.state.journal_mark() - unsynced as u64 + survivors.min(unsynced) as u64;
        let lost = self.state.crash(survivors);
        while self
            .disk
            .front()
            .is_some_and(|batch| batch.journal.is_some_and(|place| place < cut))
        {
            let Some(batch) = self.disk.pop_front() else {
                break;
            };
            self.make_durable(batch)?;
            self.batches_kept_by_crashes += 1;
        }
        self.disk.clear();
        for (shard, durable) in &self.durable_logs {
            self.logs.insert(*shard, durable.fork());
            sync_applied(&self.logs, &self.state, *shard);
        }
        Ok(lost)
    }

    /// Writes `batch` into the durable logs and the state store (its log part was written
    /// into the logs the core reads when it was submitted).
    pub(super) fn make_durable(&mut self, batch: Submitted) -> Result<(), String> {
        let Submitted {
            writes,
            mark,
            journal,
            ..
        } = batch;
        // The apply batches before it in the journal are durable with it.
        self.state.batches_durable(journal.unwrap_or(mark));
        for (shard, mut group) in writes.into_groups() {
            if let Some(log) = self.durable_logs.get(&shard) {
                group.apply_to_log(log).map_err(|e| e.to_string())?;
            }
            group
                .apply_to_state(&mut self.state)
                .map_err(|e| e.to_string())?;
            sync_applied(&self.logs, &self.state, shard);
        }
        Ok(())
    }

    /// Makes the batches due by `now` durable, in order: their log part into the durable
    /// logs, their state part (snapshot installs, meta) into the state store, the apply
    /// batches before their mark durable, and the core told.
    ///
    /// # Errors
    /// A core error, as text.
    pub fn complete_disk_writes(&mut self, now: u64, now_ms: u64) -> Result<(), String> {
        for _ in 0..std::mem::take(&mut self.durable_unreported) {
            self.report_durable(now_ms)?;
        }
        let mark = self.state.journal_mark();
        for batch in &mut self.disk {
            if batch.journal.is_none() && batch.journal_at <= now {
                batch.journal = Some(mark);
            }
        }
        while self
            .disk
            .front()
            .is_some_and(|batch| batch.durable_at <= now)
        {
            let Some(batch) = self.disk.pop_front() else {
                break;
            };
            self.make_durable(batch)?;
            self.report_durable(now_ms)?;
        }
        Ok(())
    }

    /// Tells the core that its oldest batch in flight is durable; serves the reads of the
    /// groups whose install it completed and records their states.
    fn report_durable(&mut self, now_ms: u64) -> Result<(), String> {
        let Some(core) = self.core.as_mut() else {
            return Ok(());
        };
        let installed = core.batch_durable().map_err(|e| e.to_string())?;
        for shard in &installed {
            super::ttl::serve_reads_timed(core, *shard, &self.state, now_ms, &mut self.ttl_log);
        }
        for shard in installed {
            let observation = self.observe(shard)?;
            self.observed.push(observation);
        }
        Ok(())
    }

    /// Submits the turn's writes built so far (if any) to the simulated disk: the writer's
    /// commit makes their log part readable now; they enter the journal at `journal_at` and
    /// are durable at `durable_at` (neither before the previous batch's).
    pub(super) fn submit(
        &mut self,
        core: &mut NodeCore<MemoryLog>,
        (journal_at, durable_at): (u64, u64),
    ) -> Result<(), String> {
        let Some(writes) = core.take_writes() else {
            return Ok(());
        };
        for (shard, group) in writes.groups() {
            if let Some(log) = self.logs.get(shard) {
                group.apply_to_log(log).map_err(|e| e.to_string())?;
            }
        }
        let durable_at = durable_at.max(self.disk.back().map_or(0, |b| b.durable_at));
        self.disk.push_back(Submitted {
            writes,
            mark: self.state.journal_mark(),
            journal_at: journal_at
                .max(self.disk.back().map_or(0, |b| b.journal_at))
                .min(durable_at),
            journal: None,
            durable_at,
        });
        Ok(())
    }
}
