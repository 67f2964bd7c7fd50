//! The placement driver replica a PD node hosts in group 0: the applied [`PdState`], the
//! callers waiting for their commands, and the leader's log-time and tick bookkeeping.

use super::replies::RequestId;
use super::time::Mono;
use crate::error::Result;
use crate::pd_host;
use ringkv_pd::{Apply, Command, PdState};
use ringkv_types::{LogIndex, Term};
use std::collections::BTreeMap;
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
    /// The applied state, saved with every apply (`pd/state`).
    pub state: PdState,
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
    /// encoded state to save with the applied index.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] if an answer or the state cannot be encoded.
    pub fn apply(
        &mut self,
        entries: Vec<(LogIndex, Term, Command)>,
    ) -> Result<(PdResults, Vec<u8>)> {
        let mut results = Vec::with_capacity(entries.len());
        for (index, term, command) in entries {
            let result = self.state.apply(&command);
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
        Ok((results, pd_host::encode_state(&self.state)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
