//! Apply, the driver's part: the core applies committed entries through the store
//! (`core/apply.rs`); the driver cuts them into steps, runs splits (which create a group),
//! answers PD waiters, has the core compact logs and removes replicas.

use super::{EventLoop, Internal};
use crate::core::apply_plan::{self, Step};
use crate::core::machine::MachineKind;
use crate::error::Result;
use ringkv_types::ShardId;
use ringkv_types::raft::Entry;

impl EventLoop {
    /// Applies one Ready's committed entries of `shard` in the steps of
    /// [`apply_plan::steps`]: runs of ordinary entries in one store batch each, cut at
    /// session expiries and splits, which apply on their own (see `split.rs`).
    pub(super) fn apply(
        &mut self,
        shard: ShardId,
        entries: Vec<Entry>,
        internal: &mut Internal,
    ) -> Result<()> {
        let kind = self
            .core
            .groups
            .get(&shard)
            .map_or(MachineKind::of(shard), |group| group.machine.kind());
        for step in apply_plan::steps(kind, entries) {
            match step {
                Step::Run(run) => {
                    let from = run.first().map_or(0, |entry| entry.index.0);
                    let to = run.last().map_or(0, |entry| entry.index.0);
                    let events = self.apply_run(shard, run)?;
                    if from > 0 {
                        self.watch.record(shard, from, to, &events);
                    }
                }
                Step::Expiry {
                    index,
                    term,
                    now_ms,
                    idle_ms,
                } => {
                    let outcome = self.core.apply_expiry(
                        &mut self.store,
                        shard,
                        (index, term),
                        now_ms,
                        idle_ms,
                    )?;
                    self.metrics.sessions_expired.inc_by(outcome.dropped);
                    self.watch.record(shard, index.0, index.0, &[]);
                }
                Step::Split { index, term, split } => {
                    self.apply_split(shard, index, term, split, internal)?;
                }
            }
        }
        Ok(())
    }

    /// Applies ordinary committed entries of `shard` through the core
    /// ([`crate::core::node_core::NodeCore::apply_run`]), then does what needs the driver: PD
    /// answers, log compaction, replica removal. Returns the run's changes (for watches).
    pub(super) fn apply_run(
        &mut self,
        shard: ShardId,
        entries: Vec<Entry>,
    ) -> Result<Vec<ringkv_types::WatchEvent>> {
        let Some(mut applied) = self.core.apply_run(&mut self.store, shard, entries)? else {
            return Ok(Vec::new());
        };
        let events = std::mem::take(&mut applied.events);
        if let Some(results) = applied.pd_results {
            self.pd_answer(results, applied.last);
        }
        self.core
            .maybe_compact(shard, applied.last, self.config.raft.log_compaction_entries);
        if applied.removed {
            self.remove_group(shard)?;
        }
        Ok(events)
    }
}
