//! Per-group configuration of the Raft core.

use crate::error::{Error, Result};
use ringkv_types::{LogIndex, NodeId, ShardId};

/// Configuration of one Raft group replica. All durations are in ticks; the driver decides how
/// long a tick is. ringkvd sets every field from its `[raft]` table (100 ms ticks, election
/// timeout 5 ticks, heartbeat 1 tick, lease margin 1 tick by default).
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's node id. Must not be `NodeId::NONE`.
    pub id: NodeId,
    /// The group (shard) this replica belongs to; stamped on every message.
    pub group: ShardId,
    /// Minimum election timeout. The actual timeout is drawn from `[election, 2 * election)`
    /// after every reset (Raft §5.2). It is also the leader lease length and the check-quorum
    /// period. Larger values ride out slow disks and networks; smaller values fail over faster.
    pub election_timeout_ticks: u64,
    /// Heartbeat interval. Must be well below the election timeout (a follower should see
    /// several heartbeats per timeout); each heartbeat renews the leader lease.
    pub heartbeat_ticks: u64,
    /// Ticks subtracted from the lease to allow for tick-rate drift between nodes. Lease reads
    /// are safe while drift over one election timeout stays below this margin.
    pub lease_margin_ticks: u64,
    /// Maximum in-flight append messages per follower in the replicate state. With one turn per
    /// few hundred microseconds, 256 covers a fast pipeline; memory is bounded by this times
    /// `max_message_bytes` per follower.
    pub max_inflight_messages: usize,
    /// Soft limit on the entry bytes in one append message (one entry always fits).
    pub max_message_bytes: u64,
    /// Limit on bytes appended by the leader but not yet committed; proposals beyond it are
    /// refused with `ProposalDropped` so a stalled group cannot eat memory.
    pub max_uncommitted_bytes: u64,
    /// Soft limit on committed-entry bytes handed out in one `Ready`.
    pub max_apply_bytes: u64,
    /// Limit on reads waiting for a ReadIndex round; more are refused.
    pub max_pending_reads: usize,
    /// Pre-vote (thesis §9.6): a node first asks whether it could win before bumping its term,
    /// so a rejoining partitioned node does not disrupt a healthy leader.
    pub pre_vote: bool,
    /// Check-quorum (thesis §6.2): a leader that has not heard from a quorum within an election
    /// timeout steps down, and followers ignore vote requests while they hear from a leader.
    /// Required for lease reads.
    pub check_quorum: bool,
    /// The driver reports the outcome of every snapshot it is handed with
    /// [`RawNode::report_snapshot`](crate::RawNode::report_snapshot) (ringkvd does, once the
    /// transfer ends, however long it takes). The leader then waits for that report or the
    /// follower's answer before sending the follower another snapshot. Off (the default), a
    /// snapshot with neither after two election timeouts is taken as lost and sent again, even
    /// if it is still on its way: right for a driver that may drop it silently, wrong for a
    /// transfer longer than that (a large shard).
    pub snapshot_reports: bool,
    /// Quiescence (docs/raft.md): a leader with nothing to replicate and every member caught
    /// up sends a final `Quiesce` heartbeat and stops ticking; followers with the same log stop
    /// their election timers. A proposal, a read, any message, [`RawNode::wake`] or
    /// [`RawNode::report_peer_down`] wakes the group; a driver skips the ticks of a quiescent
    /// group ([`RawNode::is_quiescent`]) and must report dead peers, or a follower whose leader
    /// died while quiescent waits for it forever. Lease reads fall back to ReadIndex while
    /// quiescent. Off by default.
    ///
    /// [`RawNode::wake`]: crate::RawNode::wake
    /// [`RawNode::report_peer_down`]: crate::RawNode::report_peer_down
    /// [`RawNode::is_quiescent`]: crate::RawNode::is_quiescent
    pub quiesce: bool,
    /// Index already applied by the state machine (0 for a new group). Entries up to it are not
    /// handed out again after a restart.
    pub applied: LogIndex,
    /// Seed for election-timeout jitter. Any value; mixed with `id` so replicas differ.
    pub seed: u64,
    /// Known bugs that can be switched on to prove the simulator finds them. Test only: the
    /// switches act only in a build with the `planted-bugs` feature ([`PlantedBugs::COMPILED`]);
    /// [`Config::validate`] refuses a switch that is on in any other build.
    pub planted_bugs: PlantedBugs,
}

/// Deliberate protocol bugs, switched on only by the simulator's self-tests to show that its
/// checkers catch them. The code that plants them is compiled only with the `planted-bugs`
/// feature, which only the simulator's tests (a dev-dependency) and `ringkv-sim --features
/// planted-bugs` turn on; `.ci/check-planted-bugs` fails if a release binary would get it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Count entries of previous terms toward commit (violates Raft §5.4.2, Figure 8).
    pub commit_previous_term_entries: bool,
    /// Grant votes without checking that the candidate's log is up to date (violates §5.4.1).
    pub vote_without_log_check: bool,
    /// Acknowledge appended entries before they are persisted.
    pub ack_before_persist: bool,
    /// Serve lease reads whenever leader, trusting a lease that check-quorum would back (the
    /// simulator also turns check-quorum off with this switch).
    pub lease_read_without_quorum: bool,
    /// Grant a real vote even after voting for another candidate in the same term (violates
    /// Raft §5.2: one vote per term), so two candidates can win one term.
    pub vote_twice_in_a_term: bool,
    /// Append entries whenever the log has an entry at `prev_index`, without comparing its term
    /// with `prev_term` (violates the AppendEntries consistency check, Raft §5.3).
    pub append_without_prev_term_check: bool,
    /// Hand the last handed-out committed entry to the state machine again with the next batch
    /// (an off-by-one in the apply cursor: one entry applied twice).
    pub apply_entry_twice: bool,
    /// A quiescent follower ignores the driver's report that its leader is down and stays
    /// quiescent: the group has no leader until something else wakes it.
    pub quiescent_follower_ignores_liveness: bool,
}

impl PlantedBugs {
    /// Whether this build can plant the bugs (the `planted-bugs` feature).
    pub const COMPILED: bool = cfg!(feature = "planted-bugs");

    /// Whether any switch is on.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

impl Config {
    /// A configuration with the core's defaults (election timeout 10 ticks, heartbeat 2, lease
    /// margin 2: the same ratios as ringkvd's 5/1/1, at which the simulator and the chaos tests
    /// run), for replica `id` of `group`.
    pub fn new(id: NodeId, group: ShardId) -> Self {
        Self {
            id,
            group,
            election_timeout_ticks: 10,
            heartbeat_ticks: 2,
            lease_margin_ticks: 2,
            max_inflight_messages: 256,
            max_message_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_apply_bytes: 4 << 20,
            max_pending_reads: 4096,
            pre_vote: true,
            check_quorum: true,
            snapshot_reports: false,
            quiesce: false,
            applied: LogIndex::ZERO,
            seed: 0,
            planted_bugs: PlantedBugs::default(),
        }
    }

    /// Checks the relations between fields.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if !self.id.is_some() {
            return Err(Error::InvalidConfig("id must not be 0"));
        }
        if self.heartbeat_ticks == 0 {
            return Err(Error::InvalidConfig("heartbeat_ticks must be at least 1"));
        }
        if self.election_timeout_ticks <= self.heartbeat_ticks {
            return Err(Error::InvalidConfig(
                "election_timeout_ticks must exceed heartbeat_ticks",
            ));
        }
        if self.lease_margin_ticks >= self.election_timeout_ticks {
            return Err(Error::InvalidConfig(
                "lease_margin_ticks must be below election_timeout_ticks",
            ));
        }
        if self.max_inflight_messages == 0 {
            return Err(Error::InvalidConfig(
                "max_inflight_messages must be at least 1",
            ));
        }
        if self.max_message_bytes == 0 || self.max_apply_bytes == 0 {
            return Err(Error::InvalidConfig("byte limits must be positive"));
        }
        if self.max_uncommitted_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_uncommitted_bytes must be positive",
            ));
        }
        if self.planted_bugs.any() && !PlantedBugs::COMPILED {
            return Err(Error::InvalidConfig(
                "planted_bugs needs a build with the planted-bugs feature",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        let config = Config::new(NodeId(1), ShardId(1));
        config.validate().unwrap();
        let mut bad = config.clone();
        bad.election_timeout_ticks = 2;
        assert!(matches!(bad.validate(), Err(Error::InvalidConfig(m)) if m.contains("election")));
        let mut bad = config;
        bad.id = NodeId::NONE;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn planted_bugs_are_refused_unless_compiled_in() {
        let mut config = Config::new(NodeId(1), ShardId(1));
        config.planted_bugs.ack_before_persist = true;
        if PlantedBugs::COMPILED {
            config.validate().unwrap();
        } else {
            assert!(matches!(
                config.validate(),
                Err(Error::InvalidConfig(m)) if m.contains("planted-bugs")
            ));
        }
    }
}
