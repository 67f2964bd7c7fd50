//! Which nodes the client believes are down, and the evidence behind it.
//!
//! A node is *marked down* on fast evidence: a liveness probe refused or unanswered (see
//! [`ringkv_transport::probe`]), or a transport failure of a call. Routing avoids marked nodes
//! (see [`Routing::route`](crate::routing::Routing::route)). The owner re-probes a marked node
//! in the background ([`Health::start_reprobe`] says when to start a task) until it answers;
//! an answered probe or any successful call clears the mark, and a mark nobody renewed expires
//! after `down_mark_ttl`, so a node is never avoided forever on old evidence.
//!
//! Pure bookkeeping with an injected clock (`now` arguments): no I/O, no tasks.

use ringkv_types::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Most nodes tracked; beyond it the oldest mark is forgotten (a bound on a hostile map).
const TRACKED_MAX: usize = 4096;

/// One node's mark.
#[derive(Clone, Copy, Debug)]
struct Mark {
    /// When the last evidence that the node is down arrived.
    renewed: Instant,
    /// Whether a background re-probe task runs for the node.
    reprobing: bool,
    /// Evidence of life arrived after the mark (kept only while a re-probe task runs).
    cleared: bool,
}

impl Mark {
    fn holds(&self, now: Instant, ttl: Duration) -> bool {
        !self.cleared && now.saturating_duration_since(self.renewed) < ttl
    }
}

/// The down marks of the nodes the client talks to.
#[derive(Debug)]
pub(crate) struct Health {
    marks: Mutex<HashMap<NodeId, Mark>>,
    /// Entries in `marks`, so the hot path (no node down) takes no lock.
    entries: AtomicUsize,
    ttl: Duration,
}

impl Health {
    /// Marks last `ttl` unless renewed.
    pub fn new(ttl: Duration) -> Self {
        Self {
            marks: Mutex::new(HashMap::new()),
            entries: AtomicUsize::new(0),
            ttl,
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Mark>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `node` is marked down at `now`.
    pub fn is_down(&self, node: NodeId, now: Instant) -> bool {
        if self.entries.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.marks()
            .get(&node)
            .is_some_and(|mark| mark.holds(now, self.ttl))
    }

    /// Records evidence that `node` is down at `now`. Returns `true` when the caller should
    /// start a background re-probe of the node (none runs yet); the caller then owes a
    /// [`Health::reprobe_ended`] when the task ends.
    pub fn mark_down(&self, node: NodeId, now: Instant) -> bool {
        let mut marks = self.marks();
        if marks.len() >= TRACKED_MAX && !marks.contains_key(&node) {
            let oldest = marks
                .iter()
                .filter(|(_, mark)| !mark.reprobing)
                .min_by_key(|(_, mark)| mark.renewed)
                .map(|(node, _)| *node);
            match oldest {
                Some(oldest) => {
                    marks.remove(&oldest);
                }
                None => return false,
            }
        }
        let mark = marks.entry(node).or_insert(Mark {
            renewed: now,
            reprobing: false,
            cleared: false,
        });
        mark.renewed = now;
        mark.cleared = false;
        let start = !mark.reprobing;
        mark.reprobing = true;
        self.entries.store(marks.len(), Ordering::Release);
        start
    }

    /// Records evidence that `node` is up (an answered probe, a completed call): clears its
    /// mark. A running re-probe task sees this through [`Health::keep_reprobing`].
    pub fn mark_up(&self, node: NodeId) {
        if self.entries.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut marks = self.marks();
        if let Some(mark) = marks.get_mut(&node) {
            if mark.reprobing {
                // The task removes the entry when it ends; until then the mark is void.
                mark.cleared = true;
            } else {
                marks.remove(&node);
            }
        }
        self.entries.store(marks.len(), Ordering::Release);
    }

    /// Whether the background re-probe of `node` should go on at `now` (the node is still
    /// marked down). When it returns `false` the task must end and call
    /// [`Health::reprobe_ended`].
    pub fn keep_reprobing(&self, node: NodeId, now: Instant) -> bool {
        self.is_down(node, now)
    }

    /// The re-probe task of `node` ended.
    pub fn reprobe_ended(&self, node: NodeId, now: Instant) {
        let mut marks = self.marks();
        if let Some(mark) = marks.get_mut(&node) {
            mark.reprobing = false;
            if !mark.holds(now, self.ttl) {
                marks.remove(&node);
            }
        }
        self.entries.store(marks.len(), Ordering::Release);
    }

    /// The nodes marked down at `now`, for reports.
    #[cfg(test)]
    pub fn down_nodes(&self, now: Instant) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .marks()
            .iter()
            .filter(|(_, mark)| mark.holds(now, self.ttl))
            .map(|(node, _)| *node)
            .collect();
        nodes.sort();
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_holds_until_cleared_or_expired_and_one_reprobe_runs_per_node() {
        let health = Health::new(Duration::from_secs(10));
        let start = Instant::now();
        let (one, two) = (NodeId(1), NodeId(2));
        assert!(!health.is_down(one, start));
        // The first evidence asks for a re-probe task; more evidence only renews the mark.
        assert!(health.mark_down(one, start));
        assert!(!health.mark_down(one, start + Duration::from_secs(5)));
        assert!(health.is_down(one, start + Duration::from_secs(14)));
        assert!(!health.is_down(one, start + Duration::from_secs(15)));
        assert!(health.keep_reprobing(one, start + Duration::from_secs(14)));
        // An answer clears it; the task then stops and the entry goes.
        health.mark_up(one);
        assert!(!health.is_down(one, Instant::now()));
        assert!(!health.keep_reprobing(one, Instant::now()));
        health.reprobe_ended(one, Instant::now());
        assert!(
            health.mark_down(one, Instant::now()),
            "a new task after the old one ended"
        );
        // Marks are per node.
        assert!(health.mark_down(two, start));
        assert_eq!(
            health.down_nodes(start + Duration::from_secs(1)),
            [one, two]
        );
        health.mark_up(two);
        assert_eq!(health.down_nodes(Instant::now()), [one]);
    }
}
