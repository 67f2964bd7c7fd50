//! One shard's recent changes and its watchers, as a replica applied them.

use super::feed::Queue;
use ringkv_types::{NodeId, ShardDescriptor, WatchEnd, WatchEvent, WatchTarget};
use std::collections::VecDeque;
use std::sync::Arc;

/// A registered watcher of the shard.
#[derive(Debug)]
pub(super) struct Subscriber {
    pub id: u64,
    pub target: WatchTarget,
    pub queue: Arc<Queue>,
}

/// The history of one shard on this replica.
#[derive(Debug)]
pub(super) struct ShardHistory {
    /// The last index recorded; `None` until the first (a split's new shard).
    pub applied: Option<u64>,
    /// Every change at an index above this one is in `events` (as far as `applied`).
    pub complete_after: u64,
    /// Changes in log order.
    events: VecDeque<WatchEvent>,
    bytes: usize,
    /// The log index of the shard's last split here (0: none seen).
    pub last_split: u64,
    /// For a shard made by a split here: the split's index in the parent (its log starts
    /// there); a resume from [`ringkv_types::FROM_CREATION`] starts after it. 0 otherwise.
    pub created_at: u64,
    /// Whether this replica leads the shard (watches are served by leaders only).
    pub leader: bool,
    pub leader_hint: Option<NodeId>,
    pub descriptor: Option<ShardDescriptor>,
    pub subscribers: Vec<Subscriber>,
}

impl ShardHistory {
    /// A history that is complete after `complete_after`, with nothing recorded yet.
    pub fn new(applied: Option<u64>, complete_after: u64) -> Self {
        Self {
            applied,
            complete_after,
            events: VecDeque::new(),
            bytes: 0,
            last_split: 0,
            created_at: 0,
            leader: false,
            leader_hint: None,
            descriptor: None,
            subscribers: Vec::new(),
        }
    }

    /// Records the changes of indexes `from..=to` (in order), hands them to the matching
    /// watchers, and keeps at most `limit_bytes` of history. Returns how many watchers were
    /// dropped because they fell behind (`SlowWatcher`).
    ///
    /// Indexes at or below the last recorded one are skipped (already recorded). A gap (the
    /// replica installed a snapshot) restarts the history after `from - 1` and ends every
    /// watcher with `Compacted`: they would miss changes.
    pub fn record(&mut self, from: u64, to: u64, events: &[WatchEvent], limit_bytes: usize) -> u64 {
        let after = match self.applied {
            Some(applied) if from > applied.saturating_add(1) => {
                self.restart(from - 1);
                from - 1
            }
            Some(applied) => applied,
            None => from.saturating_sub(1),
        };
        if to <= after && self.applied.is_some() {
            return 0;
        }
        self.applied = Some(to.max(after));
        let mut slow = 0;
        for event in events.iter().filter(|event| event.index > after) {
            let before = self.subscribers.len();
            self.subscribers.retain(|subscriber| {
                !subscriber.target.covers(&event.key) || subscriber.queue.push(event)
            });
            slow += (before - self.subscribers.len()) as u64;
            self.bytes += event.size();
            self.events.push_back(event.clone());
        }
        self.trim(limit_bytes);
        slow
    }

    /// The history of a shard made by splitting this one at `index` (after every change up to
    /// it was recorded here): the changes kept here of the keys `child` now owns, complete
    /// after the same point as this one, so a resume from a version the key had before the
    /// split finds the changes since; the new shard's own changes follow from `index + 1`.
    pub fn split_off(&self, index: u64, child: &ShardDescriptor, limit_bytes: usize) -> Self {
        let mut history = Self::new(Some(index), self.complete_after.min(index));
        history.created_at = index;
        history.descriptor = Some(child.clone());
        for event in self
            .events
            .iter()
            .filter(|event| event.index <= index && child.contains_key(&event.key))
        {
            history.bytes += event.size();
            history.events.push_back(event.clone());
        }
        history.trim(limit_bytes);
        history
    }

    /// Drops the oldest changes until at most `limit_bytes` remain; all changes of an index
    /// go together (a resume point is an index).
    fn trim(&mut self, limit_bytes: usize) {
        while self.bytes > limit_bytes {
            let Some(event) = self.events.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(event.size());
            self.complete_after = self.complete_after.max(event.index);
        }
        while self
            .events
            .front()
            .is_some_and(|event| event.index <= self.complete_after)
        {
            if let Some(event) = self.events.pop_front() {
                self.bytes = self.bytes.saturating_sub(event.size());
            }
        }
    }

    /// Forgets the history: complete only after `after` from now on; every watcher ends
    /// `Compacted`.
    fn restart(&mut self, after: u64) {
        self.events.clear();
        self.bytes = 0;
        self.complete_after = after;
        self.end_all(WatchEnd::Compacted { oldest: after });
    }

    /// Ends and drops every watcher. Returns how many there were.
    pub fn end_all(&mut self, reason: WatchEnd) -> usize {
        let count = self.subscribers.len();
        for subscriber in self.subscribers.drain(..) {
            subscriber.queue.end(reason.clone());
        }
        count
    }

    /// Queues the recorded changes after `after` (and at most `until`) that `target` covers.
    /// `false` when the queue overflowed.
    pub fn catch_up(&self, target: &WatchTarget, after: u64, until: u64, queue: &Queue) -> bool {
        self.events
            .iter()
            .filter(|event| event.index > after && event.index <= until)
            .filter(|event| target.covers(&event.key))
            .all(|event| queue.push(event))
    }

    /// Bytes of history held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
