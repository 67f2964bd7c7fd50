//! Each group's state machine: a data shard's, or the placement driver's (group 0).
//!
//! The kind is fixed when the group is created ([`StateMachine::for_shard`]); every path that
//! differs between the two (apply, snapshots, client requests, splits, membership) asks the
//! group's machine instead of comparing its shard id with [`ShardId::PD`].

use super::pd_machine::PdHost;
use super::time::Mono;
use ringkv_types::ShardId;

/// Which state machine a group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineKind {
    /// A data shard: KV commands, session expiry, splits.
    Data,
    /// The placement driver: `LogCommand::Pd` commands applied to a `PdState`.
    Pd,
}

impl MachineKind {
    /// The kind of `shard`'s group: group 0 runs the placement driver, every other a shard.
    /// The one place the PD's shard id decides it.
    pub fn of(shard: ShardId) -> Self {
        if shard == ShardId::PD {
            Self::Pd
        } else {
            Self::Data
        }
    }
}

/// A data shard's state besides the store: log time and the session-expiry bookkeeping.
#[derive(Debug)]
pub struct DataMachine {
    /// The largest log time (`now_ms`) this replica proposed or applied, so a leader's stamps
    /// never go backwards across leaders with skewed clocks.
    pub last_stamp_ms: u64,
    /// Whether the session table may hold sessions (unknown at start, so true; false after an
    /// expiry pass left none, true again after a write with a session).
    pub sessions_live: bool,
    /// When this replica, as leader, last proposed a session expiry pass.
    pub expiry_proposed: Option<Mono>,
    /// The TTL sweep of this replica as leader (`core/ttl_sweep.rs`).
    pub ttl: TtlSweep,
    /// Whether the shard's keys' versions never exceed its log index, so a put's apply need
    /// not read the previous value (`replica_meta::versions_follow_index_key`; false when
    /// unknown).
    pub versions_follow_index: bool,
}

/// Where a leader's sweep for expired keys stands.
#[derive(Debug)]
pub struct TtlSweep {
    /// Whether the shard may hold values with a TTL: unknown at start, so true; false after a
    /// whole pass saw none; true again when a TTL put is applied or a snapshot installed.
    pub possible: bool,
    /// Where the next step starts (a storage key; empty = the arc's start).
    pub cursor: Vec<u8>,
    /// Whether the current pass has seen a value with a TTL.
    pub seen_in_pass: bool,
    /// When the last step ran.
    pub last_step: Option<Mono>,
}

impl DataMachine {
    fn new() -> Self {
        Self {
            last_stamp_ms: 0,
            sessions_live: true,
            expiry_proposed: None,
            ttl: TtlSweep {
                possible: true,
                cursor: Vec::new(),
                seen_in_pass: false,
                last_step: None,
            },
            versions_follow_index: false,
        }
    }

    /// Log time for a new entry: `now_ms` (the driver's wall clock), never below a stamp seen
    /// before.
    pub fn next_stamp(&mut self, now_ms: u64) -> u64 {
        let now = now_ms.max(self.last_stamp_ms);
        self.last_stamp_ms = now;
        now
    }
}

/// The state machine a group owns.
pub enum StateMachine {
    /// A data shard.
    Data(DataMachine),
    /// Group 0: the placement driver's replicated state, when this node hosts it (`None`
    /// until the driver hands the state over at start).
    Pd(Option<Box<PdHost>>),
}

impl StateMachine {
    /// A new machine for `shard`'s group (see [`MachineKind::of`]).
    pub fn for_shard(shard: ShardId) -> Self {
        match MachineKind::of(shard) {
            MachineKind::Data => Self::Data(DataMachine::new()),
            MachineKind::Pd => Self::Pd(None),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> MachineKind {
        match self {
            Self::Data(_) => MachineKind::Data,
            Self::Pd(_) => MachineKind::Pd,
        }
    }

    /// Whether it is a data shard's.
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Data(_))
    }

    /// The data shard's state.
    pub fn data(&self) -> Option<&DataMachine> {
        match self {
            Self::Data(data) => Some(data),
            Self::Pd(_) => None,
        }
    }

    /// The data shard's state, to change.
    pub fn data_mut(&mut self) -> Option<&mut DataMachine> {
        match self {
            Self::Data(data) => Some(data),
            Self::Pd(_) => None,
        }
    }

    /// The hosted placement driver.
    pub fn pd(&self) -> Option<&PdHost> {
        match self {
            Self::Pd(host) => host.as_deref(),
            Self::Data(_) => None,
        }
    }

    /// The hosted placement driver, to change.
    pub fn pd_mut(&mut self) -> Option<&mut PdHost> {
        match self {
            Self::Pd(host) => host.as_deref_mut(),
            Self::Data(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_zero_runs_the_placement_driver_and_others_a_shard() {
        assert_eq!(StateMachine::for_shard(ShardId::PD).kind(), MachineKind::Pd);
        assert!(StateMachine::for_shard(ShardId::PD).pd().is_none());
        let mut data = StateMachine::for_shard(ShardId(4));
        assert!(data.is_data());
        let machine = data.data_mut().unwrap();
        assert_eq!(machine.next_stamp(100), 100);
        // Never backwards, whatever the clock says.
        assert_eq!(machine.next_stamp(40), 100);
        assert_eq!(machine.next_stamp(120), 120);
    }
}
