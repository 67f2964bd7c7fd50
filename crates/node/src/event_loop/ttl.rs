//! Removing expired keys through the log.
//!
//! A key's expiry is a log time (`expires_at_ms`, from the `now_ms` its leader stamped on the
//! put plus the TTL), so every replica agrees on it; reads leave a key out from that time on
//! (`kv_read.rs`). The key itself is removed by the shard's leader: a sweep walks the shard's
//! data a bounded step at a time and proposes `Operation::Expire` for the keys whose time is up,
//! in an entry stamped with the same log time it judged them by. `Expire` removes a key only if
//! it is still expired at the entry's log time, so a key written again after the sweep looked
//! stays. A replica never decides an expiry by its own clock at apply.

use super::EventLoop;
use crate::error::Result;
use crate::log_command::LogCommand;
use ringkv_storage::{Command, Operation};
use std::time::Duration;

/// The pause between two steps of a leader's sweep of one shard.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Most keys one step examines: bounds the time a step holds the event loop (a shard of N keys
/// is swept in N / 1000 seconds; reads hide expired keys meanwhile).
const SWEEP_EXAMINE_MAX: usize = 1_000;

/// Most keys one step removes (one entry).
const SWEEP_KEYS_MAX: usize = 256;

impl EventLoop {
    /// Runs one sweep step in every shard this node leads that may hold TTLs and has not had a
    /// step for [`SWEEP_INTERVAL`], proposing the removal of the expired keys it finds.
    pub(super) fn sweep_expired_keys(&mut self) -> Result<()> {
        let now = self.mono_now();
        for (shard, group) in &mut self.core.groups {
            if !group.initialized || !group.raw.is_leader() || group.installing.is_some() {
                continue;
            }
            let arc = group.descriptor.arc;
            let Some(data) = group.machine.data_mut() else {
                continue;
            };
            if !data.ttl.possible {
                continue;
            }
            if data
                .ttl
                .last_step
                .is_some_and(|at| now.since(at) < SWEEP_INTERVAL)
            {
                continue;
            }
            data.ttl.last_step = Some(now);
            let now_ms = data.next_stamp(crate::pd_host::wall_clock_ms());
            let step = self.store.expired_keys(
                arc,
                &data.ttl.cursor,
                now_ms,
                SWEEP_EXAMINE_MAX,
                SWEEP_KEYS_MAX,
            )?;
            data.ttl.seen_in_pass |= step.expiring_seen;
            match step.next {
                Some(next) => data.ttl.cursor = next,
                None => {
                    // A whole pass: with no TTL seen, stop until one is written.
                    data.ttl.cursor.clear();
                    data.ttl.possible = data.ttl.seen_in_pass;
                    data.ttl.seen_in_pass = false;
                }
            }
            if step.keys.is_empty() {
                continue;
            }
            let expired = step.keys.len() as u64;
            let payload = LogCommand::KvAt {
                now_ms,
                command: Command {
                    session: None,
                    operations: step
                        .keys
                        .into_iter()
                        .map(|key| Operation::Expire { key })
                        .collect(),
                },
            }
            .encode()?;
            // A refused proposal (a leadership change, a full log) is found again next pass.
            if group.raw.propose(payload).is_ok() {
                self.metrics.raft_proposals.inc();
                self.metrics.keys_expired.inc_by(expired);
                self.core.dirty.insert(*shard);
            }
        }
        Ok(())
    }
}
