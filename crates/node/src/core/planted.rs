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
    /// The TTL sweep proposes `Delete` for the keys it found expired, not `Expire`: the entry
    /// removes a key without re-checking its expiry at the entry's log time, so a key written
    /// again between the sweep's look and the entry's apply is lost (breaks "`Expire` removes
    /// a key only if still expired at its entry's log time").
    pub expire_without_recheck: bool,
}

impl PlantedNodeBugs {
    /// Whether this build can plant the bugs (the `planted-bugs` feature).
    pub const COMPILED: bool = cfg!(feature = "planted-bugs");

    /// Whether any switch is on.
    pub fn any(&self) -> bool {
        self.answer_before_apply || self.expire_without_recheck
    }
}
