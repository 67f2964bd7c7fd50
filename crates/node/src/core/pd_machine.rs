//! The placement driver replica a PD node hosts in group 0: the applied [`PdState`], the
//! callers waiting for their commands, and the leader's log-time and tick bookkeeping.

use super::replies::RequestId;
use super::time::Mono;
use crate::error::Result;
use crate::pd_records::{self, MetaRecords};
use ringkv_pd::{Apply, Command, LeaderStats, PdState};
use ringkv_types::{LogIndex, ShardId, Term};
use std::collections::{BTreeMap, BTreeSet};
use tracing::debug;

/// PD calls waiting for their entry to apply, at most: beyond it callers get `Busy`.
pub const PD_WAITERS_MAX: usize = 4096;

/// A PD command proposed for a caller, waiting for its entry to apply.
pub struct PdWaiter {
    /// The term it was proposed in: another term at its index means it was replaced.
    pub term: Term,
    /// The caller's request.
    pub reply: RequestId,
}

/// Results of the PD commands applied in one run: `(index, term, encoded answer)`.
pub type PdResults = Vec<(LogIndex, Term, Vec<u8>)>;

/// The PD replica hosted by this node (initial nodes only).
pub struct PdHost {
    /// The applied state, saved with every apply (see [`crate::pd_records`]).
    pub state: PdState,
    /// While leading: the statistics nodes heartbeat, kept in memory, not in the log (see
    /// [`ringkv_pd::leader_stats`]). Emptied when the leadership ends.
    pub stats: LeaderStats,
    /// Whether the next save writes every record (the first after a start, so a state loaded
    /// from the format-1 record is saved in format 2).
    pub save_all_due: bool,
    /// Callers waiting for their entry, by index.
    pub waiters: BTreeMap<LogIndex, PdWaiter>,
    /// The largest `now_ms` this node stamped, so its stamps never go backwards.
    pub last_stamp_ms: u64,
    /// While leading: the log time at an instant, read from the wall clock once when the
    /// leadership began; later stamps add the monotonic time elapsed since, so a wall clock
    /// that jumps during a term does not move log time.
    pub clock_base: Option<(Mono, u64)>,
    /// When this replica became PD leader (ticks wait a heartbeat timeout after it, so every
    /// node had a chance to heartbeat to the new leader before anyone is marked down).
    pub leading_since: Option<Mono>,
    /// When this replica last proposed a `Tick`.
    pub last_tick: Option<Mono>,
    /// A proposed `Tick` not yet applied: one at a time.
    pub tick_in_flight: Option<(LogIndex, Mono)>,
    /// The state a received snapshot carries, waiting for the Ready that installs it.
    pub pending_install: Option<PdState>,
}

impl PdHost {
    /// A host around the applied `state`.
    pub fn new(state: PdState) -> Self {
        Self {
            state,
            stats: LeaderStats::new(),
            save_all_due: true,
            waiters: BTreeMap::new(),
            last_stamp_ms: 0,
            clock_base: None,
            leading_since: None,
            last_tick: None,
            tick_in_flight: None,
            pending_install: None,
        }
    }

    /// Log time for a new command at monotonic instant `now`: the wall clock (`wall_ms`, read
    /// by the driver) taken when this leadership began plus the monotonic time since, never
    /// below what was applied or stamped.
    pub fn next_stamp(&mut self, now: Mono, wall_ms: u64) -> u64 {
        let floor = self.state.now_ms.max(self.last_stamp_ms);
        let (since, base_ms) = *self
            .clock_base
            .get_or_insert_with(|| (now, wall_ms.max(floor)));
        let elapsed = u64::try_from(now.since(since).as_millis()).unwrap_or(u64::MAX);
        let stamp = base_ms.saturating_add(elapsed).max(floor);
        self.last_stamp_ms = stamp;
        stamp
    }

    /// Applies committed PD commands to the state, in order. Returns each answer and the
    /// records to save with the applied index: the head and the records of the shards the
    /// commands touched (every record on the first save after a start or after a bootstrap),
    /// so the cost does not grow with the number of shards.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] if an answer or the state cannot be encoded.
    pub fn apply(
        &mut self,
        entries: Vec<(LogIndex, Term, Command)>,
    ) -> Result<(PdResults, MetaRecords)> {
        let mut results = Vec::with_capacity(entries.len());
        // Shards whose record changed, with a position each probably owns.
        let mut touched: BTreeSet<(ShardId, u64)> = BTreeSet::new();
        let mut save_all = std::mem::take(&mut self.save_all_due);
        for (index, term, command) in entries {
            let map_version = self.state.shard_map.version;
            let map_len = self.state.shard_map.shards.len();
            let result = self.state.apply(&command);
            let map_changed = self.state.shard_map.version != map_version
                || self.state.shard_map.shards.len() != map_len;
            match &command {
                Command::Bootstrap { .. } => save_all = true,
                Command::ShardReport(report) if result.is_ok() => {
                    let arc = report.descriptor.arc;
                    touched.insert((report.descriptor.id, arc.start));
                    if map_changed {
                        // A split changes the neighbour that gave or got the other part.
                        for position in [arc.start.checked_sub(1), arc.end].into_iter().flatten() {
                            if let Some(d) = self.state.shard_map.shard_for_position(position) {
                                touched.insert((d.id, position));
                            }
                        }
                    }
                }
                // No other command changes shards; if one ever does, save them all.
                _ => save_all |= map_changed,
            }
            if let Err(error) = &result {
                debug!(%index, %error, "placement driver refused a command");
            }
            let bytes = postcard::to_stdvec(&result).map_err(|error| crate::Error::Corrupt {
                what: "placement driver answer (encode)",
                reason: error.to_string(),
            })?;
            results.push((index, term, bytes));
        }
        #[cfg(debug_assertions)]
        self.state.check_invariants();
        if save_all {
            return Ok((results, pd_records::all_records(&mut self.state)?));
        }
        let mut records = vec![pd_records::head_record(&mut self.state)?];
        for (shard, position) in touched {
            records.extend(pd_records::shard_record(&self.state, shard, position)?);
        }
        Ok((results, records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_pd::{ShardReport, ShardStats};
    use std::time::Duration;

    /// A stats-only report of the middle shard of `state`.
    fn report(state: &PdState, size_bytes: u64) -> Command {
        let descriptor = state.shard_map.shards[state.shard_map.shards.len() / 2].clone();
        Command::ShardReport(ShardReport {
            leader: descriptor.replicas[0].node,
            descriptor,
            stats: ShardStats {
                size_bytes,
                ..ShardStats::default()
            },
            caught_up_learners: vec![],
            split_hint: None,
            now_ms: 1,
        })
    }

    /// Bytes of the records one applied shard report writes, after the first save.
    fn bytes_per_apply(shards: u64) -> (usize, usize) {
        let state = crate::pd_records::tests::state(shards);
        let mut host = PdHost::new(state);
        let first = report(&host.state, 1);
        let (_, all) = host.apply(vec![(LogIndex(1), Term(1), first)]).unwrap();
        let next = report(&host.state, 2);
        let (_, records) = host.apply(vec![(LogIndex(2), Term(1), next)]).unwrap();
        let size = |records: &MetaRecords| -> usize {
            records
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum()
        };
        (size(&all), size(&records))
    }

    /// Issue 16: a PD apply writes the head and the records it touched, so what it writes does
    /// not grow with the number of shards (format 1 rewrote the whole state every time). The
    /// first save after a start writes everything.
    #[test]
    fn an_apply_writes_as_much_for_100_as_for_10_000_shards() {
        let (first_small, small) = bytes_per_apply(100);
        let (first_large, large) = bytes_per_apply(10_000);
        // Equal but for the varint widths of the larger ids and counters.
        assert!(
            large.abs_diff(small) <= 8,
            "{small} vs {large} bytes per apply"
        );
        assert!(large < 1_000, "{large} bytes per apply");
        assert!(
            first_large > 50 * first_small / 2,
            "{first_small} vs {first_large}"
        );
    }

    /// A split rewrites the reported shard and the new one (and the head).
    #[test]
    fn a_split_saves_both_parts() {
        let state = crate::pd_records::tests::state(4);
        let mut host = PdHost::new(state);
        host.save_all_due = false;
        let parent = host.state.shard_map.shards[1].clone();
        let at = parent.arc.midpoint();
        let new_shard = ringkv_types::ShardId(host.state.ids.next_shard);
        host.state
            .apply(&Command::AddOperator {
                operator: ringkv_pd::AdminOperator::SplitShard {
                    shard: parent.id,
                    at: Some(at),
                },
                now_ms: 1,
            })
            .unwrap();
        let mut left = parent.clone();
        left.arc.end = Some(at);
        left.epoch.version += 1;
        let command = Command::ShardReport(ShardReport {
            leader: left.replicas[0].node,
            descriptor: left,
            stats: ShardStats::default(),
            caught_up_learners: vec![],
            split_hint: None,
            now_ms: 2,
        });
        let (results, records) = host.apply(vec![(LogIndex(1), Term(1), command)]).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(host.state.shard_map.shards.len(), 5);
        let names: Vec<&[u8]> = records.iter().map(|(name, _)| name.as_slice()).collect();
        assert!(names.contains(&crate::pd_records::META_PD_HEAD));
        assert!(names.contains(&crate::pd_records::shard_record_name(parent.id).as_slice()));
        assert!(names.contains(&crate::pd_records::shard_record_name(new_shard).as_slice()));
        // Saved records rebuild the state.
        let mut all = crate::pd_records::all_records(&mut host.state).unwrap();
        let (_, head) = all.remove(0);
        let loaded = crate::pd_records::decode_records(
            &head,
            all.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
        )
        .unwrap();
        assert_eq!(loaded, host.state);
    }

    #[test]
    fn stamps_never_go_backwards_nor_below_log_time() {
        let mut state = PdState::new();
        // Log time far in the future (a previous leader's clock was ahead).
        let wall = 1_000_000;
        state.now_ms = wall + 3_600_000;
        let mut host = PdHost::new(state);
        let start = Mono::default();
        let first = host.next_stamp(start, wall);
        assert!(first >= host.state.now_ms);
        let second = host.next_stamp(start.after(Duration::from_millis(5)), wall);
        assert_eq!(second, first + 5);
        // A new leadership reads the wall clock again but stays above the last stamp.
        host.clock_base = None;
        host.state.now_ms = 0;
        assert!(host.next_stamp(start.after(Duration::from_millis(6)), wall) >= second);
        // The wall clock jumping during a term does not move log time.
        let third = host.next_stamp(start.after(Duration::from_millis(7)), wall + 50_000_000);
        assert_eq!(third, host.last_stamp_ms);
        assert!(third < wall + 50_000_000);
    }
}
