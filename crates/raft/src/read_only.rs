//! Linearizable reads without writing to the log (thesis §6.4): ReadIndex rounds and the leader
//! lease.
//!
//! ReadIndex: the leader records its commit index, confirms it is still leader by hearing from a
//! quorum in a heartbeat round sent after the read arrived, and then the read may be served once
//! the state machine has applied that index. Several reads share one round.
//!
//! Lease (thesis §6.4.1): with check-quorum, followers refuse to vote for anyone within an
//! election timeout of hearing from the leader, and never campaign earlier either. So when a
//! quorum acknowledged a heartbeat sent at tick `t`, no other leader can exist before
//! `t + election_timeout`; until then (minus a drift margin) the leader serves reads at its
//! commit index with no round trip.

use ringkv_types::LogIndex;
use std::collections::VecDeque;

/// How a read is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// A ReadIndex round: one heartbeat round trip to a quorum.
    Safe,
    /// The leader lease when it is valid; otherwise falls back to a ReadIndex round.
    Lease,
}

/// A read that may be served once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context for the read.
    pub context: u64,
    /// Apply at least this far, then read.
    pub index: LogIndex,
}

/// A read waiting for its heartbeat round.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub context: u64,
    pub index: LogIndex,
    pub round: u64,
}

/// The leader's read bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    /// Reads waiting for a quorum to acknowledge `round`, in round order.
    pub pending: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term: the commit index is
    /// not yet known to be current (thesis §6.4 step 1).
    pub waiting_for_commit: Vec<(u64, ReadMode)>,
    /// Reads ready to be served, drained into the next `Ready`.
    pub ready: Vec<ReadState>,
    /// The latest heartbeat round number sent.
    pub round: u64,
    /// When each recent round was sent: `(round, tick)`, oldest first.
    pub round_ticks: VecDeque<(u64, u64)>,
    /// A new round must be broadcast at the next flush (reads are waiting on it).
    pub broadcast_pending: bool,
}

/// How many round send times to remember; older rounds simply cannot back a lease.
pub(crate) const ROUND_HISTORY_MAX: usize = 256;

impl ReadOnly {
    /// Records that round `round` was sent at `tick`.
    pub fn sent_round(&mut self, tick: u64) -> u64 {
        self.round += 1;
        self.round_ticks.push_back((self.round, tick));
        while self.round_ticks.len() > ROUND_HISTORY_MAX {
            self.round_ticks.pop_front();
        }
        self.round
    }

    /// The tick at which `round` was sent, if remembered.
    pub fn tick_of_round(&self, round: u64) -> Option<u64> {
        self.round_ticks
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, t)| *t)
    }

    /// Moves pending reads confirmed by `quorum_round` to `ready`, and forgets send times of
    /// rounds older than it.
    pub fn advance(&mut self, quorum_round: u64) {
        while self
            .pending
            .front()
            .is_some_and(|read| read.round <= quorum_round)
        {
            if let Some(read) = self.pending.pop_front() {
                self.ready.push(ReadState {
                    context: read.context,
                    index: read.index,
                });
            }
        }
        while self
            .round_ticks
            .front()
            .is_some_and(|(round, _)| *round < quorum_round)
        {
            self.round_ticks.pop_front();
        }
    }

    /// Number of reads not yet served.
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }

    /// Forgets everything (leadership lost; callers time their reads out).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.waiting_for_commit.clear();
        self.round_ticks.clear();
        self.broadcast_pending = false;
    }
}
