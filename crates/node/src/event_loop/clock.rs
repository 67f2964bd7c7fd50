//! The Raft clock: ticks given to the groups follow the monotonic clock, not the timer.
//!
//! The Raft core measures time in ticks: election timeouts, check-quorum and the leader lease
//! (`now < sent_tick + lease_ticks`). If ticks only came from a timer that skips missed
//! firings, a process that was paused (SIGSTOP, a VM or container freeze, a long GC-like stall
//! of the runtime) would resume believing almost no time had passed, and a leader could serve
//! a lease read while another node, elected during the pause, has already acknowledged newer
//! writes. So the loop counts the ticks that fell due on the monotonic clock and gives every
//! owed tick to the groups before it serves a client call or handles a timer wake-up. After a
//! pause longer than the lease, the leader's lease is therefore expired before any read is
//! judged against it.

use tokio::time::{Duration, Instant};

/// Counts the ticks due since `origin`.
#[derive(Debug)]
pub(super) struct TickClock {
    origin: Instant,
    tick: Duration,
    /// Ticks accounted for so far (given, or skipped by the cap).
    done: u64,
    /// Most ticks handed out at once: enough for every election timer and lease to run out
    /// (the randomized election timeout is below twice the configured one), so ticking more
    /// changes nothing but costs CPU with many groups.
    cap: u64,
}

impl TickClock {
    /// A clock starting at `origin`, ticking every `tick` (at least 1 ms).
    pub(super) fn new(origin: Instant, tick: Duration, election_timeout_ticks: u64) -> Self {
        Self {
            origin,
            tick: tick.max(Duration::from_millis(1)),
            done: 0,
            cap: election_timeout_ticks.saturating_mul(2).saturating_add(1),
        }
    }

    /// The ticks that fell due by `now` and were not handed out yet (at most the cap); they
    /// are accounted for once returned.
    pub(super) fn take_due(&mut self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        let due = u64::try_from(elapsed / self.tick.as_nanos()).unwrap_or(u64::MAX);
        let owed = due.saturating_sub(self.done);
        self.done = self.done.max(due);
        owed.min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tick_is_handed_out_once() {
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let mut clock = TickClock::new(start, tick, 10);
        assert_eq!(clock.take_due(start), 0);
        assert_eq!(clock.take_due(start + Duration::from_millis(99)), 0);
        assert_eq!(clock.take_due(start + Duration::from_millis(100)), 1);
        assert_eq!(clock.take_due(start + Duration::from_millis(150)), 0);
        assert_eq!(clock.take_due(start + Duration::from_millis(350)), 2);
        // A reading older than the last one (another caller's) owes nothing.
        assert_eq!(clock.take_due(start + Duration::from_millis(200)), 0);
        assert_eq!(clock.take_due(start + Duration::from_millis(400)), 1);
    }

    #[test]
    fn a_pause_longer_than_the_lease_hands_out_enough_ticks_to_end_it() {
        // 10 s frozen with a 100 ms tick and an election timeout of 10 ticks: a timer that
        // skips missed firings would give 1 tick; the clock gives enough for any lease (at
        // most the election timeout) and any randomized election timeout (below twice it) to
        // run out, and no more.
        let start = Instant::now();
        let tick = Duration::from_millis(100);
        let mut clock = TickClock::new(start, tick, 10);
        assert_eq!(clock.take_due(start + Duration::from_millis(100)), 1);
        let owed = clock.take_due(start + Duration::from_secs(10) + Duration::from_millis(100));
        assert_eq!(owed, 21);
        // The skipped ticks are not owed again later.
        assert_eq!(clock.take_due(start + Duration::from_millis(10_250)), 1);
    }
}
