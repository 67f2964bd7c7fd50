//! Removing expired keys through the log: the leader's sweep, decided in the core so that
//! `ringkvd` (`event_loop/ttl.rs`, with the real clocks) and the simulator (with simulated
//! ones) run the same rule.
//!
//! A key's expiry is a log time (`expires_at_ms`, from the `now_ms` its leader stamped on the
//! put plus the TTL), so every replica agrees on it; reads leave a key out from that time on
//! (`kv_read.rs`). The key itself is removed by the shard's leader: a sweep walks the shard's
//! data a bounded step at a time and proposes `Operation::Expire` for the keys whose time is up,
//! in an entry stamped with the same log time it judged them by. `Expire` removes a key only if
//! it is still expired at the entry's log time, so a key written again after the sweep looked
//! stays. A replica never decides an expiry by its own clock at apply.

use super::node_core::NodeCore;
use super::time::Mono;
use crate::error::Result;
use crate::log_command::LogCommand;
use ringkv_storage::{Command, Operation, StateStore};
use std::time::Duration;

/// The pause between two steps of a leader's sweep of one shard in `ringkvd` (the simulator
/// also sweeps more often, to make races with writes common).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Most keys one step examines: bounds the time a step holds the event loop (a shard of N keys
/// is swept in N / 1000 seconds; reads hide expired keys meanwhile).
pub const SWEEP_EXAMINE_MAX: usize = 1_000;

/// Most keys one step removes (one entry).
pub const SWEEP_KEYS_MAX: usize = 256;

/// What one sweep call proposed, for the driver's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Entries proposed (one per swept shard with expired keys).
    pub entries: u64,
    /// Keys those entries remove.
    pub keys: u64,
}

impl<L: ringkv_raft::Storage> NodeCore<L> {
    /// Runs one sweep step in every shard this node leads that may hold TTLs and has not had a
    /// step for `interval` ([`SWEEP_INTERVAL`] in `ringkvd`; by the monotonic time `now`),
    /// judging expiry at the log
    /// time stamped from the wall clock `wall_ms` and reading the applied state `store`; it
    /// proposes the removal of the expired keys it finds (the proposing groups become dirty).
    /// Returns what it proposed.
    ///
    /// # Errors
    /// A storage read failure or an entry that cannot be encoded.
    pub fn sweep_expired_keys<S: StateStore + ?Sized>(
        &mut self,
        now: Mono,
        interval: Duration,
        wall_ms: u64,
        store: &S,
    ) -> Result<SweepOutcome> {
        let mut proposed = SweepOutcome::default();
        for (shard, group) in &mut self.groups {
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
                .is_some_and(|at| now.since(at) < interval)
            {
                continue;
            }
            data.ttl.last_step = Some(now);
            let now_ms = data.next_stamp(wall_ms);
            let step = store.expired_keys(
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
            #[cfg(feature = "planted-bugs")]
            let unchecked = self.planted.expire_without_recheck;
            #[cfg(not(feature = "planted-bugs"))]
            let unchecked = false;
            let payload = LogCommand::KvAt {
                now_ms,
                command: Command {
                    session: None,
                    operations: step
                        .keys
                        .into_iter()
                        .map(|key| {
                            if unchecked {
                                // PLANTED BUG: removes the key whatever it holds by then.
                                Operation::Delete { key }
                            } else {
                                Operation::Expire { key }
                            }
                        })
                        .collect(),
                },
            }
            .encode()?;
            // A refused proposal (a leadership change, a full log) is found again next pass.
            if group.raw.propose(payload).is_ok() {
                proposed.entries += 1;
                proposed.keys += expired;
                self.dirty.insert(*shard);
            }
        }
        Ok(proposed)
    }
}
