//! What a leader knows about each follower's log (Raft Figure 2: nextIndex, matchIndex), plus
//! the flow-control state that decides how aggressively to send.

use crate::inflights::Inflights;
use ringkv_types::LogIndex;

/// How the leader is currently replicating to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the point where the logs agree: one append at a time, waiting for each answer.
    Probe,
    /// Logs agree up to `match_index`: stream appends optimistically, up to the inflight window.
    Replicate,
    /// A snapshot up to `pending_index` was sent; wait for it to be acknowledged or retried.
    Snapshot {
        /// Index of the snapshot in flight.
        pending_index: LogIndex,
        /// Tick at which it was sent, for retrying lost snapshots.
        sent_at_tick: u64,
    },
}

/// The leader's view of one member's log.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated on the member.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Flow-control state.
    pub state: ProgressState,
    /// In probe state: an append was sent and its answer is awaited.
    pub probe_sent: bool,
    /// Appends sent and not yet acknowledged (replicate state).
    pub inflights: Inflights,
    /// Heard from in the current check-quorum period.
    pub recent_active: bool,
    /// Highest heartbeat round the member acknowledged (ReadIndex and lease).
    pub acked_round: u64,
    /// Set when new entries or a new commit index should be sent at the next flush.
    pub needs_send: bool,
}

impl Progress {
    /// Progress for a member of whom nothing is known yet: probe from `next_index`.
    pub fn new(next_index: LogIndex, inflight_capacity: usize) -> Self {
        Self {
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_capacity),
            recent_active: false,
            acked_round: 0,
            needs_send: true,
        }
    }

    /// Whether the leader must hold back appends to this member.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// Switches to probing from `match_index + 1` (or past a pending snapshot).
    pub fn become_probe(&mut self) {
        let from_snapshot = match self.state {
            ProgressState::Snapshot { pending_index, .. } => Some(pending_index),
            _ => None,
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = match from_snapshot {
            Some(pending) => self.match_index.max(pending).next(),
            None => self.match_index.next(),
        };
    }

    /// Switches to streaming from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.inflights.reset();
        self.next_index = self.match_index.next();
    }

    /// Records that a snapshot up to `pending_index` was sent at `tick`.
    pub fn become_snapshot(&mut self, pending_index: LogIndex, tick: u64) {
        self.state = ProgressState::Snapshot {
            pending_index,
            sent_at_tick: tick,
        };
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Records an acknowledgement that the member's log matches up to `index`. Returns whether
    /// `match_index` moved (stale acknowledgements change nothing).
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if index >= self.match_index {
            // Any acceptance answers the outstanding probe.
            self.probe_sent = false;
        }
        if updated {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// Records that an append ending at `last_index` was sent (`entries` of them).
    pub fn sent_append(&mut self, last_index: LogIndex, entries: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entries > 0 {
                    self.next_index = last_index.next();
                    self.inflights.add(last_index);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// Handles a rejection of an append at `rejected` with the follower's hint `probe_from`
    /// (the index the leader should try next, at most). Returns whether anything changed (stale
    /// rejections change nothing). Fast backtracking: the hint skips a whole conflicting term.
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, probe_from: LogIndex) -> bool {
        if let ProgressState::Replicate = self.state {
            // Rejections at or below match are stale: the member already matched there.
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index.next();
            return true;
        }
        // Probe (or snapshot): only the answer to the last probe counts.
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = rejected.min(probe_from.next()).max(self.match_index.next());
        self.probe_sent = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_backtracks_with_hint_but_not_below_match() {
        let mut progress = Progress::new(LogIndex(11), 4);
        progress.match_index = LogIndex(3);
        assert!(progress.maybe_decrease_to(LogIndex(10), LogIndex(5)));
        assert_eq!(progress.next_index, LogIndex(6));
        // A stale rejection (not for the last probe) is ignored.
        assert!(!progress.maybe_decrease_to(LogIndex(10), LogIndex(1)));
        // The hint never takes next below match + 1.
        assert!(progress.maybe_decrease_to(LogIndex(5), LogIndex(0)));
        assert_eq!(progress.next_index, LogIndex(4));
    }

    #[test]
    fn replicate_streams_and_pauses_when_window_full() {
        let mut progress = Progress::new(LogIndex(1), 2);
        progress.become_replicate();
        progress.sent_append(LogIndex(3), 3);
        progress.sent_append(LogIndex(5), 2);
        assert!(progress.is_paused());
        assert!(progress.maybe_update(LogIndex(3)));
        progress.inflights.free_up_to(LogIndex(3));
        assert!(!progress.is_paused());
        assert_eq!(progress.next_index, LogIndex(6));
        // Rejection above match in replicate falls back to match + 1.
        assert!(progress.maybe_decrease_to(LogIndex(5), LogIndex(4)));
        assert_eq!(progress.next_index, LogIndex(4));
    }
}
