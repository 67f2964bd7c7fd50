//! A fixed-capacity ring of in-flight append messages to one follower.

use ringkv_types::LogIndex;
use std::collections::VecDeque;

/// The last index of each append sent to a follower and not yet acknowledged, oldest first.
/// Capacity bounds how far replication runs ahead of acknowledgements.
#[derive(Clone, Debug)]
pub struct Inflights {
    capacity: usize,
    last_indexes: VecDeque<LogIndex>,
}

impl Inflights {
    /// An empty ring holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            last_indexes: VecDeque::with_capacity(capacity.min(64)),
        }
    }

    /// Whether no more messages may be sent.
    pub fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    /// Records a message whose last entry is `last_index`.
    ///
    /// # Panics
    /// If full or if `last_index` goes backwards: callers check `is_full` and send in order.
    pub fn add(&mut self, last_index: LogIndex) {
        assert!(
            !self.is_full(),
            "inflights full ({} messages)",
            self.capacity
        );
        if let Some(&back) = self.last_indexes.back() {
            assert!(
                back <= last_index,
                "inflight {last_index} sent after {back}"
            );
        }
        self.last_indexes.push_back(last_index);
    }

    /// Frees every message whose last index is at or below `index` (acknowledged).
    pub fn free_up_to(&mut self, index: LogIndex) {
        while self
            .last_indexes
            .front()
            .is_some_and(|&front| front <= index)
        {
            self.last_indexes.pop_front();
        }
    }

    /// Frees the oldest message (its acknowledgement was probably lost).
    pub fn free_first(&mut self) {
        self.last_indexes.pop_front();
    }

    /// Frees everything.
    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_frees_in_order() {
        let mut inflights = Inflights::new(3);
        for i in [3, 5, 9] {
            inflights.add(LogIndex(i));
        }
        assert!(inflights.is_full());
        inflights.free_up_to(LogIndex(4));
        assert!(!inflights.is_full());
        assert_eq!(inflights.last_indexes, [LogIndex(5), LogIndex(9)]);
        inflights.free_up_to(LogIndex(9));
        assert!(inflights.last_indexes.is_empty());
    }
}
