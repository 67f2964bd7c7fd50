//! Deliberate node-core bugs, for proving that the simulator's node-core runs
//! (`ringkv-sim --node-core`) catch what they claim to: each switch breaks one rule of the
//! core. The switches always exist (so the simulator compiles either way), but the code that
//! plants a bug is compiled only with the `planted-bugs` feature, which only the simulator's
//! tests (and `ringkv-sim --features planted-bugs`) turn on; `.ci/check-planted-bugs` fails if
//! a release binary would get it. Like [`ringkv_raft::PlantedBugs`] for the Raft core.

/// The node-core bug switches (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedNodeBugs {
    /// Answer a write `Written` as soon as it is proposed, before its entry is committed and
    /// applied (breaks "answer a write once it is applied").
    pub answer_before_apply: bool,
    /// Take "batch N is durable" ([`super::node_core::NodeCore::batch_durable`]) as "every
    /// submitted batch is durable": the Readies of the batches still in flight are reported
    /// persisted to their Raft cores too (their held-back messages still wait for their own
    /// batch). Breaks "apply only durable entries": the Raft core hands out, and the core
    /// applies and answers, entries that are committed but not durable here, and a leader
    /// counts its own unsynced entries toward the commit quorum. A group installing a
    /// snapshot is left alone.
    pub apply_before_durable: bool,
    /// A snapshot install keeps the replica's old values that the snapshot does not hold
    /// (the range is not cleared before the snapshot's data is written): keys deleted while
    /// the replica lagged come back. Planted in the memory install the simulator runs
    /// ([`super::writes::GroupWrites::apply_to_state`]).
    pub install_keeps_stale_data: bool,
    /// The TTL sweep proposes `Delete` for the keys it found expired, not `Expire`: the entry
    /// removes a key without re-checking its expiry at the entry's log time, so a key written
    /// again between the sweep's look and the entry's apply is lost (breaks "`Expire` removes
    /// a key only if still expired at its entry's log time").
    pub expire_without_recheck: bool,
    /// A split's new shard starts with an empty session table instead of a copy of its
    /// parent's ([`super::node_core::NodeCore::begin_split`]): a write applied in the parent whose
    /// client heard no answer, retried with the same session and sequence against the new
    /// shard after the split, is applied a second time (breaks exactly-once across a split).
    pub split_forgets_sessions: bool,
}

impl PlantedNodeBugs {
    /// Whether this build can plant the bugs (the `planted-bugs` feature).
    pub const COMPILED: bool = cfg!(feature = "planted-bugs");

    /// Whether any switch is on.
    pub fn any(&self) -> bool {
        self.answer_before_apply
            || self.apply_before_durable
            || self.install_keeps_stale_data
            || self.expire_without_recheck
            || self.split_forgets_sessions
    }

    /// Whether the planted [`PlantedNodeBugs::split_forgets_sessions`] acts (switched on, in
    /// a build with the `planted-bugs` feature).
    pub fn forgets_split_sessions(&self) -> bool {
        Self::COMPILED && self.split_forgets_sessions
    }
}

/// The planted [`PlantedNodeBugs::install_keeps_stale_data`]: `snapshot` with the values the
/// replica holds now in the snapshot's arc that the snapshot does not hold added to it, so
/// the install writes them back instead of clearing them.
#[cfg(feature = "planted-bugs")]
pub(crate) fn with_stale_values(
    state: &ringkv_storage::MemoryState,
    mut snapshot: ringkv_storage::MemorySnapshot,
) -> ringkv_storage::MemorySnapshot {
    let (lower, upper) = snapshot.arc.storage_bounds();
    let fresh: std::collections::BTreeSet<Vec<u8>> =
        snapshot.values.iter().map(|(key, _)| key.clone()).collect();
    let stale: Vec<_> = state
        .values()
        .into_iter()
        .filter(|(key, _)| *key >= lower && upper.as_ref().is_none_or(|upper| key < upper))
        .filter(|(key, _)| !fresh.contains(key))
        .collect();
    snapshot.values.extend(stale);
    snapshot.values.sort_by(|a, b| a.0.cmp(&b.0));
    snapshot
}
