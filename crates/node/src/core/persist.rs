//! Persistence ordering: which write batch makes each Ready durable.
//!
//! A Ready's `on_persisted` and its held-back messages (`persisted_messages`: votes, append
//! acknowledgements) must wait until its writes are durable. The node gathers every Ready's
//! writes of a turn into one batch, hands it to the group-commit writer and goes on while it
//! syncs; batches become durable in submission order (the writer is FIFO). So:
//!
//! - a Ready that wrote something, or that comes after one that did in the same batch, waits
//!   for the batch being built;
//! - a Ready that wrote nothing waits for the last batch in flight (it may depend on writes of
//!   an earlier Ready of its group);
//! - with nothing pending at all it is durable at once, and comes back to the caller.
//!
//! No I/O: the caller submits batches and reports their durability.

use ringkv_types::ShardId;
use ringkv_types::raft::Message;
use std::collections::VecDeque;

/// A Ready waiting for durability: its group, its number (for `on_persisted`) and the
/// messages to send once it is durable.
#[derive(Debug, PartialEq, Eq)]
pub struct Persisted {
    /// The group.
    pub shard: ShardId,
    /// The Ready's number.
    pub number: u64,
    /// Messages to send once durable.
    pub messages: Vec<Message>,
}

/// The Readies tied to the batch being built and to each batch in flight, oldest first.
#[derive(Debug, Default)]
pub struct PersistQueue {
    /// Readies made durable by the batch being built.
    pending: Vec<Persisted>,
    /// Readies made durable by each submitted batch, in submission order.
    in_flight: VecDeque<Vec<Persisted>>,
    /// Batches submitted so far.
    submitted: u64,
    /// Batches durable so far.
    durable: u64,
}

impl PersistQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ties `ready` to the batch that makes it durable. `wrote` says whether the Ready added
    /// writes to the batch being built, `batch_empty` whether that batch is empty now.
    /// Returns `ready` when nothing pending precedes it: it is durable now, and the caller
    /// calls `on_persisted` and sends its messages at once.
    pub fn attach(
        &mut self,
        ready: Persisted,
        wrote: bool,
        batch_empty: bool,
    ) -> Option<Persisted> {
        if wrote || !batch_empty {
            self.pending.push(ready);
            None
        } else if let Some(last) = self.in_flight.back_mut() {
            // Durable once every earlier batch is: batches complete in order.
            last.push(ready);
            None
        } else {
            Some(ready)
        }
    }

    /// Whether `depth` batches are in flight already (the next waits).
    pub fn is_full(&self, depth: usize) -> bool {
        self.in_flight.len() >= depth
    }

    /// The batch being built was handed to the writer: its Readies now wait for it. Returns
    /// the batch's number (the first is 1).
    pub fn submitted(&mut self) -> u64 {
        let pending = std::mem::take(&mut self.pending);
        self.in_flight.push_back(pending);
        self.submitted += 1;
        self.submitted
    }

    /// The oldest batch in flight is durable: its Readies, in order. `None` when no batch is
    /// in flight (a completion the queue does not know of).
    pub fn durable(&mut self) -> Option<Vec<Persisted>> {
        let readies = self.in_flight.pop_front()?;
        self.durable += 1;
        Some(readies)
    }

    /// The Readies waiting for the batches in flight, oldest first.
    pub fn in_flight_readies(&self) -> impl Iterator<Item = &Persisted> {
        self.in_flight.iter().flatten()
    }

    /// Batches submitted and not durable yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Batches submitted so far.
    pub fn submitted_count(&self) -> u64 {
        self.submitted
    }

    /// Batches durable so far.
    pub fn durable_count(&self) -> u64 {
        self.durable
    }

    /// Forgets the Readies of `shard` waiting on batches in flight and returns their messages:
    /// a durable write of the caller made everything submitted before it durable (a split
    /// replacing an uninitialized replica of its new shard).
    pub fn take_shard(&mut self, shard: ShardId) -> Vec<Message> {
        let mut messages = Vec::new();
        for readies in &mut self.in_flight {
            readies.retain_mut(|ready| {
                if ready.shard == shard {
                    messages.append(&mut ready.messages);
                    false
                } else {
                    true
                }
            });
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::NodeId;
    use ringkv_types::raft::MessageBody;

    fn ready(shard: u64, number: u64) -> Persisted {
        Persisted {
            shard: ShardId(shard),
            number,
            messages: vec![Message {
                group: ShardId(shard),
                from: NodeId(1),
                to: NodeId(2),
                term: ringkv_types::Term(1),
                body: MessageBody::ReplicaRemoved,
            }],
        }
    }

    #[test]
    fn a_ready_that_wrote_waits_for_its_batch_and_batches_complete_in_order() {
        let mut queue = PersistQueue::new();
        // Nothing pending, nothing written: durable now.
        assert_eq!(queue.attach(ready(1, 1), false, true), Some(ready(1, 1)));
        assert_eq!(queue.attach(ready(1, 2), true, false), None);
        assert_eq!(queue.submitted(), 1);
        // Wrote nothing, but a batch is in flight: waits for it.
        assert_eq!(queue.attach(ready(2, 1), false, true), None);
        // Wrote nothing, but the batch being built is not empty: waits for that one.
        assert_eq!(queue.attach(ready(3, 1), false, false), None);
        assert!(!queue.is_full(2) && queue.in_flight() == 1);
        assert_eq!(queue.submitted(), 2);
        assert!(queue.is_full(2));
        assert_eq!(queue.durable(), Some(vec![ready(1, 2), ready(2, 1)]));
        assert_eq!(queue.durable(), Some(vec![ready(3, 1)]));
        assert_eq!(queue.durable(), None);
        assert_eq!((queue.submitted_count(), queue.durable_count()), (2, 2));
    }

    #[test]
    fn taking_a_shard_releases_its_messages_from_every_batch() {
        let mut queue = PersistQueue::new();
        queue.attach(ready(7, 1), true, false);
        queue.attach(ready(8, 1), true, false);
        queue.submitted();
        queue.attach(ready(7, 2), true, false);
        queue.submitted();
        assert_eq!(queue.take_shard(ShardId(7)).len(), 2);
        assert_eq!(queue.durable(), Some(vec![ready(8, 1)]));
        assert_eq!(queue.durable(), Some(vec![]));
    }
}
