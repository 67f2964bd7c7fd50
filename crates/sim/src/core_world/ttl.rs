//! TTLs in node-core runs: each node's own wall clock (an offset from the seed and clock steps
//! during the chaos phase), the leader's sweep run through the core
//! ([`NodeCore::sweep_expired_keys`]) with that clock, a workload of TTL keys (puts with a TTL,
//! plain puts, deletes, compare-and-swaps and reads), and the checks of what the design
//! guarantees under clock steps (docs/data-model.md, "Time to live"), judged against the
//! shard's committed log, which the simulator sees whole:
//!
//! - **Log-time linearizability** ("linearizability (log time)"): client writes take effect in
//!   log order, each at its entry's stamp (a TTL put expires at `stamp + ttl`; a
//!   compare-and-swap sees an expired value as absent); an acknowledged write is in the log,
//!   after every entry applied anywhere before it was invoked, applied somewhere before its
//!   answer came, at the index it answered, with the compare-and-swap result the log implies; a read answered at applied index `p` and read time `R` (the serving
//!   replica's log time, taken from the core as it serves) returns the state after `p` with
//!   expiry judged at `R`, and `p` is at least every index applied anywhere before the read
//!   was invoked. The sweep's entries remove a key in the model only if it is expired at their
//!   own stamp (what `Expire` promises), so a removal of a live key shows as a lost write.
//! - **No resurrection** ("ttl resurrection"): the reads one node serves in one shard, between
//!   two starts of the node, never go back in log time (its stamp floor), so a key it reported
//!   expired stays absent there until written again. Not promised, so not checked: another
//!   node, or the same node after a restart, whose clock is behind may show the key again
//!   before it has applied entries stamped past the expiry (docs/data-model.md, "Leader
//!   changes": for up to the clock difference). A leader's floor holds only the stamps it
//!   proposed or applied since it started, so stamps can go backwards within the log by that
//!   difference (a new leader proposing before it applied its predecessor's last entries, or a
//!   restarted node); the model takes each entry at its own stamp, as apply does.
//! - **Eventual removal** ("ttl removal"): after the heal phase no replica stores a value whose
//!   expiry is older than the clock bound plus a sweep interval and a margin.
//! - Every replica holding the same data after the heal (the existing convergence check)
//!   compares `expires_at_ms` too.
//!
//! Not checked: a read's instant between its invocation and answer beyond the index bound
//! (entries' commit times are known only as their first apply anywhere; a read's own real-time
//! order against the writes around it is checked only through indexes), and the versions reads
//! return (the plain-value workload's checker ignores them too).

use super::ttl_model::LogModel;
use super::{CoreWorld, EPOCH_MS};
use crate::checkers::Violation;
use crate::kv::{Key, Op};
use ringkv_node::core::node_core::NodeCore;
use ringkv_node::core::replies::RequestId;
use ringkv_node::core::time::Mono;
use ringkv_node::core::ttl_sweep::SWEEP_INTERVAL;
use ringkv_raft::SplitMix64;
use ringkv_storage::{MemoryLog, MemoryState};
use ringkv_types::raft::Entry;
use ringkv_types::{KvResult, NodeId, Response, ShardId, WriteSession};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest distance of a node's starting clock from true time (ms).
pub const CLOCK_OFFSET_MAX_MS: u64 = 200;
/// The name the log-time linearizability check reports.
pub const LOG_TIME_CHECK: &str = "linearizability (log time)";
/// Largest clock step (ms), forward or backward.
pub const CLOCK_STEP_MAX_MS: u64 = 1_000;
/// No clock is ever further than this from true time (ms): steps are clamped to it.
pub const CLOCK_DEVIATION_MAX_MS: i64 = 1_200;
/// Chance per node and tick of a clock step during the chaos phase (per mille).
const CLOCK_STEP_PER_MILLE: u64 = 3;
/// The TTL keys are `TTL_KEY_BASE..TTL_KEY_BASE + TTL_KEYS` (apart from the plain keys).
pub const TTL_KEY_BASE: Key = 100;
/// How many TTL keys the workload uses.
pub const TTL_KEYS: u64 = 2;
/// TTLs the workload puts (ms of simulated time).
const TTL_MIN_MS: u64 = 50;
const TTL_MAX_MS: u64 = 1_000;
/// The shortest pause between sweep steps a seed draws (ms).
const SWEEP_INTERVAL_MIN_MS: u64 = 50;
/// Slack on top of the lagging clock and a sweep interval before an expired key must be gone.
const REMOVAL_MARGIN_MS: u64 = 300;
/// Sweeps stop this long before the run ends, so that their last entries commit everywhere.
pub const SWEEP_QUIET_UNITS: u64 = 300;

/// What a simulated node reports for the TTL checks after each turn.
#[derive(Default)]
pub struct NodeTtlLog {
    /// Committed entries it applied, per shard.
    pub applied: Vec<(ShardId, Entry)>,
    /// The shard and log time of each read it answered, in the order served.
    pub read_ms: Vec<(RequestId, ShardId, u64)>,
}

/// [`NodeCore::serve_reads`], noting each answered read's log time (the replica's stamp floor
/// after serving, which is the time every read of the call was served at).
pub fn serve_reads_timed(
    core: &mut NodeCore<MemoryLog>,
    shard: ShardId,
    state: &MemoryState,
    now_ms: u64,
    log: &mut NodeTtlLog,
) {
    let before = core.replies.len();
    core.serve_reads(shard, state, now_ms);
    let Some(read_ms) = core
        .groups
        .get(&shard)
        .and_then(|group| group.machine.data())
        .map(|data| data.last_stamp_ms)
    else {
        return;
    };
    log.read_ms
        .extend(core.replies.ids_from(before).map(|id| (id, shard, read_ms)));
}

/// The TTL workload's side of one operation.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OpNote {
    pub(super) session: Option<(u64, u64)>,
    pub(super) request: u64,
    pub(super) invoked: u64,
    pub(super) answered: Option<u64>,
    /// A read's applied index, a write's index.
    pub(super) index: Option<u64>,
}

/// The TTL workload: which keys carry TTLs and what the history does not hold.
#[derive(Default)]
pub struct TtlWorkload {
    notes: BTreeMap<usize, OpNote>,
    /// Set when the chaos phase ends: from then on the TTL keys are only read, so that their
    /// last expiries pass while the sweeps still run (and the removal check has work).
    writes_over: bool,
}

impl TtlWorkload {
    /// The key of the next operation: a TTL key two times in five, else a plain one.
    pub fn pick_key(rng: &mut SplitMix64, keys: u8) -> Key {
        if rng.range(0, 5) < 2 {
            TTL_KEY_BASE + rng.range(0, TTL_KEYS) as Key
        } else {
            rng.range(0, u64::from(keys)) as Key
        }
    }

    /// Whether `key` is a TTL key.
    pub fn is_ttl_key(key: Key) -> bool {
        key >= TTL_KEY_BASE
    }

    /// The operation to run in place of `op`: on a TTL key, a compare-and-swap becomes a put
    /// (so that most writes carry a TTL and keys expire between writes), and after the chaos
    /// phase every write becomes a read.
    pub fn shape(&self, op: Op) -> Op {
        match op {
            Op::Get(_) => op,
            op if Self::is_ttl_key(op.key()) && self.writes_over => Op::Get(op.key()),
            Op::Cas { key, new, .. } if Self::is_ttl_key(key) => Op::Put(key, new),
            op => op,
        }
    }

    /// The TTL of a put of `op` (five puts in six to a TTL key carry one).
    pub fn draw_ttl(rng: &mut SplitMix64, op: &Op) -> Option<u64> {
        match op {
            Op::Put(key, _) if Self::is_ttl_key(*key) && rng.range(0, 6) > 0 => {
                Some(rng.range(TTL_MIN_MS, TTL_MAX_MS + 1))
            }
            _ => None,
        }
    }

    /// Notes the invocation of the operation at history `slot`.
    pub fn invoked(&mut self, slot: usize, session: Option<WriteSession>, request: u64, now: u64) {
        self.notes.insert(
            slot,
            OpNote {
                session: session.map(|s| (s.session_id, s.sequence)),
                request,
                invoked: now,
                ..OpNote::default()
            },
        );
    }

    /// The operation at `slot` was sent again as request `request` (its reads' log time is
    /// that request's).
    pub fn retried(&mut self, slot: usize, request: u64) {
        if let Some(note) = self.notes.get_mut(&slot) {
            note.request = request;
        }
    }

    /// The writes answered with the index of their effect: (slot, session and sequence,
    /// index).
    pub fn answered_writes(&self) -> impl Iterator<Item = (usize, (u64, u64), u64)> + '_ {
        self.notes.iter().filter_map(|(slot, note)| {
            Some((
                *slot,
                note.session?,
                note.index.filter(|_| note.answered.is_some())?,
            ))
        })
    }

    /// Notes the answer to the operation at `slot`.
    pub fn answered(&mut self, slot: usize, response: &Response, now: u64) {
        let Some(note) = self.notes.get_mut(&slot) else {
            return;
        };
        note.answered = Some(now);
        note.index = match response {
            Response::Kv(KvResult::Value { applied, .. }) => Some(applied.0),
            Response::Kv(KvResult::Written { index } | KvResult::Swapped { index, .. }) => {
                Some(index.0)
            }
            _ => None,
        };
    }
}

/// The world's TTL state: the clocks, the committed log as applied, the reads' log times.
#[derive(Default)]
pub struct TtlWorld {
    /// Each node's clock offset from true time (ms).
    offsets: BTreeMap<NodeId, i64>,
    rng: Option<SplitMix64>,
    /// Per shard: index -> (entry, first world time any replica applied it).
    pub(super) log: BTreeMap<ShardId, BTreeMap<u64, (Entry, u64)>>,
    /// The log time of each answered read, by request id.
    read_ms: BTreeMap<u64, u64>,
    /// Clock steps taken.
    pub clock_steps: u64,
    /// The pause between a leader's sweep steps (from the seed, at most ringkvd's).
    sweep_interval: Duration,
    /// The world time of the last sweep call.
    last_sweep_at: u64,
    /// Two replicas applied different entries at one index.
    log_conflict: Option<String>,
    /// Starts of each node after the first.
    incarnations: BTreeMap<NodeId, u64>,
    /// The last read time each node served in each shard, per incarnation.
    read_floor: BTreeMap<(NodeId, u64, ShardId), u64>,
    /// A node served a read at a log time below one it served before.
    read_time_regression: Option<String>,
    /// Splits applied: new shard -> (parent, the split entry's index) (`lineage.rs`).
    pub(super) splits: BTreeMap<ShardId, (ShardId, u64)>,
}

impl TtlWorld {
    /// The clocks of `nodes`, drawn from `seed`.
    pub fn new(seed: u64, nodes: impl Iterator<Item = NodeId>) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x7474_6c63_6c6f_636b);
        let offsets = nodes
            .map(|id| {
                let offset = rng.range(0, 2 * CLOCK_OFFSET_MAX_MS + 1) as i64;
                (id, offset - CLOCK_OFFSET_MAX_MS as i64)
            })
            .collect();
        let longest = SWEEP_INTERVAL.as_millis() as u64;
        let sweep_interval = Duration::from_millis(rng.range(SWEEP_INTERVAL_MIN_MS, longest + 1));
        Self {
            offsets,
            sweep_interval,
            rng: Some(rng),
            ..Self::default()
        }
    }

    /// Node `id`'s wall clock (ms since the Unix epoch) at world time `now`.
    pub fn wall_ms(&self, id: NodeId, now: u64) -> u64 {
        let offset = self.offsets.get(&id).copied().unwrap_or(0);
        (EPOCH_MS + now).saturating_add_signed(offset)
    }

    /// Notes that node `id` started again (its core's stamp floor starts afresh).
    pub fn restarted(&mut self, id: NodeId) {
        *self.incarnations.entry(id).or_insert(0) += 1;
    }

    /// Takes what node `id`'s turn reported, at world time `now`.
    pub fn record(&mut self, id: NodeId, now: u64, log: NodeTtlLog) {
        for (shard, entry) in log.applied {
            let at = self.log.entry(shard).or_default();
            match at.get(&entry.index.0) {
                Some((first, _)) if *first != entry && self.log_conflict.is_none() => {
                    self.log_conflict = Some(format!(
                        "shard {shard}: two entries applied at index {}",
                        entry.index
                    ));
                }
                Some(_) => {}
                None => {
                    at.insert(entry.index.0, (entry, now));
                }
            }
        }
        let incarnation = self.incarnations.get(&id).copied().unwrap_or(0);
        for (RequestId(request), shard, ms) in log.read_ms {
            self.read_ms.insert(request, ms);
            let floor = self.read_floor.entry((id, incarnation, shard)).or_insert(0);
            if ms < *floor && self.read_time_regression.is_none() {
                self.read_time_regression = Some(format!(
                    "node {id} served a read of shard {shard} at log time {ms} after one at {floor}"
                ));
            }
            *floor = (*floor).max(ms);
        }
    }
}

impl CoreWorld {
    /// The clocks' steps (in the chaos phase) and every node's sweep (while `sweeping`), once
    /// a tick.
    pub(super) fn ttl_tick(&mut self, chaos: bool, sweeping: bool) -> Result<(), Violation> {
        self.clients.ttl.writes_over |= !chaos;
        if chaos && let Some(rng) = self.ttl.rng.as_mut() {
            for (id, offset) in &mut self.ttl.offsets {
                if rng.range(0, 1000) >= CLOCK_STEP_PER_MILLE {
                    continue;
                }
                let step = rng.range(1, CLOCK_STEP_MAX_MS + 1) as i64;
                let step = if rng.range(0, 2) == 0 { step } else { -step };
                *offset = (*offset + step).clamp(-CLOCK_DEVIATION_MAX_MS, CLOCK_DEVIATION_MAX_MS);
                self.ttl.clock_steps += 1;
                self.trace.record(&[8, self.now, id.get()]);
            }
        }
        if !sweeping {
            return Ok(());
        }
        self.ttl.last_sweep_at = self.now;
        let mono = Mono(Duration::from_millis(self.now));
        for (id, node) in &mut self.nodes {
            let wall_ms = self.ttl.wall_ms(*id, self.now);
            if let Some(core) = node.core.as_mut() {
                core.sweep_expired_keys(mono, self.ttl.sweep_interval, wall_ms, &node.state)
                    .map_err(|e| super::fatal(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The TTL checks (see the module docs), after the run. Returns how many TTL-key
    /// operations were judged, how many reads found a value expired and how many removals the
    /// sweeps committed.
    pub(super) fn check_ttl(&self) -> Result<(u64, u64, u64), Violation> {
        if let Some(conflict) = &self.ttl.log_conflict {
            return Err(Violation {
                check: "state machine safety",
                detail: conflict.clone(),
            });
        }
        if let Some(regression) = &self.ttl.read_time_regression {
            return Err(Violation {
                check: "ttl resurrection",
                detail: regression.clone(),
            });
        }
        self.check_removal()?;
        let models: BTreeMap<ShardId, LogModel> = self
            .ttl
            .log
            .keys()
            .map(|shard| (*shard, LogModel::build(&self.ttl.lineage(*shard))))
            .collect();
        let empty = LogModel::default();
        let (mut checked, mut expired_reads) = (0, 0);
        for (slot, operation) in self.clients.history.operations.iter().enumerate() {
            if operation.discarded || !TtlWorkload::is_ttl_key(operation.op.key()) {
                continue;
            }
            let Some(note) = self.clients.ttl.notes.get(&slot) else {
                continue;
            };
            let model = models.get(&operation.group).unwrap_or(&empty);
            let read_ms = self.ttl.read_ms.get(&note.request).copied();
            expired_reads += u64::from(model.check(operation, note, read_ms)?);
            checked += 1;
        }
        let removals = models.values().map(|model| model.sweep_removals).sum();
        Ok((checked, expired_reads, removals))
    }

    /// After the heal: no replica still stores a value expired long enough ago.
    fn check_removal(&self) -> Result<(), Violation> {
        // A key is due once the most lagging clock (a leader's, after the heal) has passed its
        // expiry and a sweep interval has gone by.
        let lag = self
            .ttl
            .offsets
            .values()
            .map(|offset| offset.min(&0).unsigned_abs())
            .max()
            .unwrap_or(0);
        let late = lag + self.ttl.sweep_interval.as_millis() as u64 + REMOVAL_MARGIN_MS;
        let due = (EPOCH_MS + self.ttl.last_sweep_at).saturating_sub(late);
        for (id, node) in &self.nodes {
            for (key, value) in node.state.values() {
                if value.expires_at_ms != 0 && value.expires_at_ms <= due {
                    return Err(Violation {
                        check: "ttl removal",
                        detail: format!(
                            "node {id} still stores {} expired at {} (sweeps ended at {})",
                            String::from_utf8_lossy(key.get(8..).unwrap_or_default()),
                            value.expires_at_ms - EPOCH_MS,
                            self.ttl.last_sweep_at
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}
