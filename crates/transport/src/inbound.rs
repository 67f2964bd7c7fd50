//! The queue of Raft batches from peers to the node, bounded in batches and in bytes.

use ringkv_types::RaftBatch;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// A bounded queue: at most `batches` batches and `bytes` bytes (frame sizes) waiting.
pub(crate) fn raft_channel(batches: usize, bytes: u64) -> (RaftSender, RaftReceiver) {
    let (tx, rx) = mpsc::channel(batches);
    let queued = Arc::new(AtomicU64::new(0));
    (
        RaftSender {
            tx,
            queued: queued.clone(),
            max_bytes: bytes,
        },
        RaftReceiver { rx, queued },
    )
}

/// Why a batch was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `raft_inbound_batches_max` batches are waiting.
    Full,
    /// `raft_inbound_bytes_max` bytes are waiting.
    OverBudget,
    /// The node dropped its receiver.
    Closed,
}

/// The transport's end.
#[derive(Debug)]
pub(crate) struct RaftSender {
    tx: mpsc::Sender<(RaftBatch, u64)>,
    queued: Arc<AtomicU64>,
    max_bytes: u64,
}

impl RaftSender {
    /// Queues `batch` (of `size` bytes on the wire) without waiting.
    pub(crate) fn try_send(&self, batch: RaftBatch, size: u64) -> Result<(), Refused> {
        let max = self.max_bytes;
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                queued.checked_add(size).filter(|&total| total <= max)
            });
        if reserved.is_err() {
            return Err(Refused::OverBudget);
        }
        self.tx.try_send((batch, size)).map_err(|error| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match error {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

/// The node's end of the Raft inbound queue: the `recv`/`try_recv` of a Tokio `mpsc` receiver,
/// releasing each batch's bytes from the budget as it is taken.
#[derive(Debug)]
pub struct RaftReceiver {
    rx: mpsc::Receiver<(RaftBatch, u64)>,
    queued: Arc<AtomicU64>,
}

impl RaftReceiver {
    /// The next batch; `None` once the transport is gone. Cancel safe.
    pub async fn recv(&mut self) -> Option<RaftBatch> {
        let (batch, size) = self.rx.recv().await?;
        self.queued.fetch_sub(size, Ordering::AcqRel);
        Some(batch)
    }

    /// The next batch if one is waiting.
    ///
    /// # Errors
    /// As `tokio::sync::mpsc::Receiver::try_recv`: empty or disconnected.
    pub fn try_recv(&mut self) -> Result<RaftBatch, TryRecvError> {
        let (batch, size) = self.rx.try_recv()?;
        self.queued.fetch_sub(size, Ordering::AcqRel);
        Ok(batch)
    }

    /// Bytes (frame sizes) of the batches waiting.
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_byte_budget_bounds_the_queue_and_is_released_on_receive() {
        let (tx, mut rx) = raft_channel(10, 100);
        assert_eq!(tx.try_send(RaftBatch::default(), 60), Ok(()));
        assert_eq!(
            tx.try_send(RaftBatch::default(), 60),
            Err(Refused::OverBudget)
        );
        assert_eq!(tx.try_send(RaftBatch::default(), 40), Ok(()));
        assert_eq!(rx.queued_bytes(), 100);
        assert!(rx.recv().await.is_some());
        assert_eq!(rx.queued_bytes(), 40);
        assert_eq!(tx.try_send(RaftBatch::default(), 60), Ok(()));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert_eq!(rx.queued_bytes(), 0);
        let (tx, _rx) = raft_channel(1, 100);
        assert_eq!(tx.try_send(RaftBatch::default(), 1), Ok(()));
        assert_eq!(tx.try_send(RaftBatch::default(), 1), Err(Refused::Full));
    }
}
