//! The node's watch hub: the per-shard histories, fed by the event loop, and the registry of
//! watchers, fed by the client service.

use super::feed::{Feed, Queue};
use super::shard_history::{ShardHistory, Subscriber};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use ringkv_types::{
    FROM_CREATION, NodeId, ShardDescriptor, ShardId, WatchEnd, WatchEvent, WatchFrame,
    WatchRequest, WatchTarget, WireError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The bounds of the hub (from `[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// History bytes kept per shard (`watch_history_bytes`).
    pub history_bytes: usize,
    /// Bytes queued per watcher before `SlowWatcher` (`watch_buffer_bytes_max`).
    pub buffer_bytes_max: usize,
    /// Watchers on the node (`watchers_max`).
    pub watchers_max: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            history_bytes: 1 << 20,
            buffer_bytes_max: 4 << 20,
            watchers_max: 10_000,
        }
    }
}

#[derive(Debug, Default)]
struct HubState {
    shards: HashMap<ShardId, ShardHistory>,
    /// Registered watchers (feeds alive), over all shards.
    watchers: usize,
    next_id: u64,
}

/// Histories and watchers of every local shard. Shared by the event loop (which records) and
/// the client service (which registers); one lock, held briefly.
#[derive(Debug, Default)]
pub struct WatchHub {
    state: Mutex<HubState>,
    limits: WatchLimits,
    /// `ringkv_watchers`.
    pub watchers_gauge: Gauge,
    /// `ringkv_watchers_cancelled_total` (slow watchers).
    pub cancelled_slow: Counter,
}

impl WatchHub {
    /// An empty hub.
    pub fn new(limits: WatchLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the changes `shard` applied in the entries `from..=to` (log order).
    pub fn record(&self, shard: ShardId, from: u64, to: u64, events: &[WatchEvent]) {
        let mut state = self.lock();
        let history = state
            .shards
            .entry(shard)
            .or_insert_with(|| ShardHistory::new(None, from.saturating_sub(1)));
        let slow = history.record(from, to, events, self.limits.history_bytes);
        if slow > 0 {
            self.cancelled_slow.inc_by(slow);
        }
    }

    /// `shard` split at `index`: it keeps `left`, and `child` starts with its log at `index`
    /// (`from_entry`) and a history holding the parent's recorded changes of its keys
    /// ([`ShardHistory::split_off`]); or, for a split of the first format, with its own log
    /// from index 5 and an empty history complete from its creation. Every watcher of `shard`
    /// ends with `ShardSplit` after the changes up to `index`.
    pub fn split(
        &self,
        shard: ShardId,
        index: u64,
        left: ShardDescriptor,
        child: &ShardDescriptor,
        from_entry: bool,
    ) {
        let mut state = self.lock();
        let limit = self.limits.history_bytes;
        let parent = state.shards.get_mut(&shard).map(|history| {
            history.record(index, index, &[], limit);
            history.last_split = index;
            history.descriptor = Some(left);
            history.end_all(WatchEnd::ShardSplit { index });
            history.split_off(index, child, limit)
        });
        if !from_entry {
            state
                .shards
                .entry(child.id)
                .or_insert_with(|| ShardHistory::new(None, 0));
            return;
        }
        let history = parent.unwrap_or_else(|| {
            let mut history = ShardHistory::new(Some(index), index);
            history.created_at = index;
            history
        });
        // A replica of the child already here and past the split (filled by a snapshot) keeps
        // its own history; an uninitialized one's is replaced.
        let keep = state
            .shards
            .get(&child.id)
            .is_some_and(|existing| existing.applied.is_some_and(|applied| applied > index));
        if keep {
            return;
        }
        if let Some(mut old) = state.shards.insert(child.id, history) {
            old.end_all(WatchEnd::Unavailable);
        }
    }

    /// Whether this replica leads `shard` now, with the leader it knows, its descriptor and
    /// applied index (a shard first seen here has a history complete after `applied`). A
    /// leader that steps down ends its watchers with `NotLeader`.
    pub fn set_role(
        &self,
        shard: ShardId,
        leader: bool,
        leader_hint: Option<NodeId>,
        descriptor: &ShardDescriptor,
        applied: u64,
    ) {
        let mut state = self.lock();
        let history = state
            .shards
            .entry(shard)
            .or_insert_with(|| ShardHistory::new(Some(applied), applied));
        if history.leader && !leader {
            history.end_all(WatchEnd::NotLeader);
        }
        history.leader = leader;
        history.leader_hint = leader_hint;
        history.descriptor = Some(descriptor.clone());
    }

    /// The replica of `shard` is gone (removed, or the node stops): its watchers end.
    pub fn remove(&self, shard: ShardId) {
        let mut state = self.lock();
        if let Some(mut history) = state.shards.remove(&shard) {
            history.end_all(WatchEnd::Unavailable);
        }
    }

    /// Registers a watcher for `request`, with its catch-up queued; refused with the error to
    /// answer (`NotLeader`, `ShardNotFound`, `KeyNotInShard`, `Busy`). A resume from before
    /// the history ends at once with `Compacted`.
    ///
    /// # Errors
    /// The refusal.
    pub fn subscribe(self: &Arc<Self>, request: WatchRequest) -> Result<Feed, WireError> {
        let mut state = self.lock();
        if state.watchers >= self.limits.watchers_max {
            return Err(WireError::Busy);
        }
        state.next_id += 1;
        let id = state.next_id;
        let WatchRequest {
            shard,
            target,
            after,
        } = request;
        let Some(history) = state.shards.get_mut(&shard) else {
            return Err(WireError::ShardNotFound { shard });
        };
        if !history.leader {
            return Err(WireError::NotLeader {
                leader_hint: history.leader_hint,
                descriptor: history.descriptor.clone(),
            });
        }
        let applied = history.applied.unwrap_or(history.complete_after);
        let start = match after {
            None => applied,
            Some(FROM_CREATION) => history.created_at,
            Some(after) => after,
        };
        let queue = Arc::new(Queue::new(self.limits.buffer_bytes_max));
        // A key that left the shard in a split: its changes up to the split are still here.
        let moved = match (&target, &history.descriptor) {
            (WatchTarget::Key(key), Some(descriptor)) => !descriptor.contains_key(key),
            _ => false,
        };
        if moved && start >= history.last_split {
            return Err(WireError::KeyNotInShard { shard });
        }
        if start < history.complete_after {
            queue.end(WatchEnd::Compacted {
                oldest: history.complete_after,
            });
        } else if moved {
            history.catch_up(&target, start, history.last_split, &queue);
            queue.end(WatchEnd::ShardSplit {
                index: history.last_split,
            });
        } else {
            if history.catch_up(&target, start, u64::MAX, &queue) {
                history.subscribers.push(Subscriber {
                    id,
                    target,
                    queue: queue.clone(),
                });
            } else {
                self.cancelled_slow.inc();
            }
        }
        state.watchers += 1;
        self.watchers_gauge
            .set(i64::try_from(state.watchers).unwrap_or(i64::MAX));
        Ok(Feed {
            hub: self.clone(),
            shard,
            id,
            queue,
            started: Some(WatchFrame::Started {
                shard,
                index: start,
            }),
        })
    }

    /// A feed was dropped.
    pub(crate) fn unregister(&self, shard: ShardId, id: u64) {
        let mut state = self.lock();
        state.watchers = state.watchers.saturating_sub(1);
        self.watchers_gauge
            .set(i64::try_from(state.watchers).unwrap_or(i64::MAX));
        if let Some(history) = state.shards.get_mut(&shard) {
            history.subscribers.retain(|subscriber| subscriber.id != id);
        }
    }

    /// Registered watchers.
    pub fn watchers(&self) -> usize {
        self.lock().watchers
    }

    /// Bytes of history held for `shard` (tests).
    #[cfg(test)]
    pub(crate) fn history_bytes(&self, shard: ShardId) -> usize {
        self.lock()
            .shards
            .get(&shard)
            .map_or(0, ShardHistory::bytes)
    }
}
