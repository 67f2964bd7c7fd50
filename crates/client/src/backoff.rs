//! Jittered exponential backoff and the client's random numbers (session ids, jitter).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A random `u64` from the OS-seeded hasher keys, the clock and the process id. Good enough for
/// session ids and jitter; not for cryptography.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A lock-free SplitMix64 generator shared by the client's calls (jitter only).
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next random value.
    pub fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `[ceiling / 2, ceiling]` ("equal jitter").
    pub fn jittered(&self, ceiling: Duration) -> Duration {
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let spread = half.saturating_add(1);
        Duration::from_nanos(half.saturating_add(self.next_u64() % spread))
    }
}

/// The delay ceiling for one call: doubles per backoff from `min` up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    ceiling: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { ceiling: min, max }
    }

    /// The next delay, jittered.
    pub fn next_delay(&mut self, jitter: &Jitter) -> Duration {
        let delay = jitter.jittered(self.ceiling);
        self.ceiling = self.ceiling.saturating_mul(2).min(self.max);
        delay
    }
}

/// Paces one call's retries. A retry that has a better target (a leader hint, the next
/// replica after an unreachable one) goes at once, but at most `burst` times in a row; then,
/// and after every retry that has no better target, the call sleeps its next backoff delay.
/// So a call whose reroutes lead nowhere (replicas naming a leader that is restarting, or
/// disagreeing while an election runs) spends its budget over time, not in a burst of
/// attempts within milliseconds.
#[derive(Debug)]
pub(crate) struct Pacing {
    immediate_in_a_row: u32,
}

impl Pacing {
    pub fn new() -> Self {
        Self {
            immediate_in_a_row: 0,
        }
    }

    /// Whether to sleep before the next attempt. `asked`: the failed attempt asked for a
    /// pause; `burst`: immediate retries allowed in a row (the shard's replica count).
    pub fn pause(&mut self, asked: bool, burst: usize) -> bool {
        let burst = u32::try_from(burst.max(1)).unwrap_or(u32::MAX);
        if asked || self.immediate_in_a_row >= burst {
            self.immediate_in_a_row = 0;
            return true;
        }
        self.immediate_in_a_row += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_range() {
        let jitter = Jitter::new(7);
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let ceilings = [10, 20, 40, 50, 50];
        for ceiling in ceilings {
            let delay = backoff.next_delay(&jitter);
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    /// The rolling-restart bug ("gave up after 64 attempts in 478 ms"): every attempt was a
    /// reroute to a hinted node, retried at once. With pacing, 64 reroute-only attempts over
    /// three replicas sleep at least 15 backoff delays, which with the default policy (10 ms
    /// doubling to 500 ms) add up to several seconds: the budget is spent over time.
    #[test]
    fn reroutes_that_lead_nowhere_are_paced() {
        let jitter = Jitter::new(3);
        let mut pacing = Pacing::new();
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500));
        let mut pauses = 0;
        let mut slept = Duration::ZERO;
        for _ in 0..64 {
            if pacing.pause(false, 3) {
                pauses += 1;
                slept += backoff.next_delay(&jitter);
            }
        }
        assert_eq!(pauses, 16, "one pause after every 3 immediate reroutes");
        // Lower bound of the jittered delays: half of each ceiling.
        assert!(
            slept >= Duration::from_millis(5 + 10 + 20 + 40 + 80 + 160 + 250 * 10),
            "{slept:?}"
        );
        // A retry that asks for a pause always gets one, and resets the run.
        let mut pacing = Pacing::new();
        assert!(!pacing.pause(false, 2));
        assert!(pacing.pause(true, 2));
        assert!(!pacing.pause(false, 2));
        assert!(!pacing.pause(false, 2));
        assert!(pacing.pause(false, 2));
    }

    #[test]
    fn random_values_differ() {
        assert_ne!(random_u64(), random_u64());
        let jitter = Jitter::new(1);
        assert_ne!(jitter.next_u64(), jitter.next_u64());
    }
}
