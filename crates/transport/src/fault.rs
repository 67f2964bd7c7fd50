//! Fault injection for tests: drop, delay or cut traffic between chosen nodes.
//!
//! One [`FaultInjector`] is shared by every transport of a test (it is a cheap clone of one
//! table). Rules are keyed by direction `(from, to)` and applied where traffic is *sent*: Raft
//! batches and snapshots from `from` to `to`. Client calls are not affected.

use ringkv_types::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens to traffic in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing gets through (a partition).
    Cut,
    /// Every `one_in`-th batch is dropped (deterministic, so a failing test replays). `one_in` of
    /// 0 or 1 drops everything.
    Drop {
        /// Drop one batch out of this many.
        one_in: u32,
    },
    /// Every batch is held back this long before it is queued.
    Delay(Duration),
}

/// What to do with one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

/// A shared table of faults between node ids.
#[derive(Clone, Debug, Default)]
pub struct FaultInjector {
    rules: Arc<Mutex<HashMap<(NodeId, NodeId), Fault>>>,
    batches_seen: Arc<AtomicU64>,
}

impl FaultInjector {
    /// An empty table: all traffic passes.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_rules<R>(&self, f: impl FnOnce(&mut HashMap<(NodeId, NodeId), Fault>) -> R) -> R {
        // A poisoned lock only means a test panicked while holding it; the table is still usable.
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rules)
    }

    /// Applies `fault` to traffic from `from` to `to` only.
    pub fn set(&self, from: NodeId, to: NodeId, fault: Fault) {
        self.with_rules(|rules| rules.insert((from, to), fault));
    }

    /// Applies `fault` in both directions between `a` and `b`.
    pub fn set_both(&self, a: NodeId, b: NodeId, fault: Fault) {
        self.set(a, b, fault);
        self.set(b, a, fault);
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`, both ways.
    pub fn partition(&self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.set_both(a, b, Fault::Cut);
            }
        }
    }

    /// Removes the faults between `a` and `b`, both ways.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.with_rules(|rules| {
            rules.remove(&(a, b));
            rules.remove(&(b, a));
        });
    }

    /// Removes the fault from `from` to `to` only.
    pub fn heal_one_way(&self, from: NodeId, to: NodeId) {
        self.with_rules(|rules| rules.remove(&(from, to)));
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.with_rules(HashMap::clear);
    }

    /// The fault from `from` to `to`, if any.
    pub fn fault(&self, from: NodeId, to: NodeId) -> Option<Fault> {
        self.with_rules(|rules| rules.get(&(from, to)).copied())
    }

    pub(crate) fn verdict(&self, from: NodeId, to: NodeId) -> Verdict {
        match self.fault(from, to) {
            None => Verdict::Pass,
            Some(Fault::Cut) => Verdict::Drop,
            Some(Fault::Delay(delay)) => Verdict::Delay(delay),
            Some(Fault::Drop { one_in }) => {
                let seen = self.batches_seen.fetch_add(1, Ordering::Relaxed);
                if one_in <= 1 || seen.is_multiple_of(u64::from(one_in)) {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_per_direction_and_heal() {
        let faults = FaultInjector::new();
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        faults.set(a, b, Fault::Cut);
        assert_eq!(faults.verdict(a, b), Verdict::Drop);
        assert_eq!(faults.verdict(b, a), Verdict::Pass);
        faults.partition(&[a], &[b, c]);
        assert_eq!(faults.verdict(c, a), Verdict::Drop);
        faults.heal(a, c);
        assert_eq!(faults.verdict(c, a), Verdict::Pass);
        assert_eq!(faults.verdict(b, a), Verdict::Drop);
        faults.set(b, c, Fault::Delay(Duration::from_millis(5)));
        assert_eq!(
            faults.verdict(b, c),
            Verdict::Delay(Duration::from_millis(5))
        );
        faults.heal_all();
        assert_eq!(faults.verdict(a, b), Verdict::Pass);
    }

    #[test]
    fn drop_one_in_n_drops_that_share() {
        let faults = FaultInjector::new();
        faults.set(NodeId(1), NodeId(2), Fault::Drop { one_in: 4 });
        let dropped = (0..100)
            .filter(|_| faults.verdict(NodeId(1), NodeId(2)) == Verdict::Drop)
            .count();
        assert_eq!(dropped, 25);
    }
}
