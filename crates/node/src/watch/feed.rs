//! One watcher: its bounded queue of events (filled by the hub under its lock) and the
//! [`Feed`] the client service pumps into the watcher's stream.

use super::hub::WatchHub;
use ringkv_types::{ShardId, WatchEnd, WatchEvent, WatchFrame};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// Most events in one frame (a frame also stops at about 1 MiB).
const FRAME_EVENTS_MAX: usize = 256;
/// Bytes of events after which a frame is cut.
const FRAME_BYTES_SOFT_MAX: usize = 1 << 20;

/// A watcher's queue: events not yet taken by its feed, bounded in bytes, and the reason it
/// ends once set.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    notify: Notify,
    limit_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    events: VecDeque<WatchEvent>,
    bytes: usize,
    end: Option<WatchEnd>,
    /// The end was handed out: nothing follows.
    finished: bool,
}

impl Queue {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            limit_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event`. Past the byte limit the queue is emptied and ends with `SlowWatcher`:
    /// `false` then (and for a queue that already ended), so the hub drops the watcher.
    pub(crate) fn push(&self, event: &WatchEvent) -> bool {
        let mut state = self.lock();
        if state.end.is_some() || state.finished {
            return false;
        }
        let size = event.size();
        if state.bytes.saturating_add(size) > self.limit_bytes {
            state.events.clear();
            state.bytes = 0;
            state.end = Some(WatchEnd::SlowWatcher);
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.bytes += size;
        state.events.push_back(event.clone());
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Ends the watch with `reason` once the events queued before are taken (the first reason
    /// wins).
    pub(crate) fn end(&self, reason: WatchEnd) {
        let mut state = self.lock();
        if state.end.is_none() && !state.finished {
            state.end = Some(reason);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Bytes queued now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The next frame: queued events (up to a frame's worth), else the end, else waits.
    /// `None` once the end was returned.
    async fn next(&self) -> Option<WatchFrame> {
        loop {
            {
                let mut state = self.lock();
                if state.finished {
                    return None;
                }
                if !state.events.is_empty() {
                    let mut frame: Vec<WatchEvent> = Vec::new();
                    let mut bytes = 0;
                    // A frame never cuts an index in two: a watch resumes after an index.
                    loop {
                        let full = frame.len() >= FRAME_EVENTS_MAX || bytes >= FRAME_BYTES_SOFT_MAX;
                        let same_index = matches!(
                            (frame.last(), state.events.front()),
                            (Some(last), Some(next)) if last.index == next.index
                        );
                        if full && !same_index {
                            break;
                        }
                        let Some(event) = state.events.pop_front() else {
                            break;
                        };
                        bytes += event.size();
                        frame.push(event);
                    }
                    state.bytes = state.bytes.saturating_sub(bytes);
                    return Some(WatchFrame::Events(frame));
                }
                if let Some(end) = state.end.take() {
                    state.finished = true;
                    return Some(WatchFrame::End(end));
                }
            }
            // `notify_one` keeps a permit when nobody waits: no wake-up is lost between the
            // check above and this wait.
            self.notify.notified().await;
        }
    }
}

/// A registered watcher, as the client service sees it: frames to send, in order. Dropping it
/// unregisters the watcher.
#[derive(Debug)]
pub struct Feed {
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) shard: ShardId,
    pub(crate) id: u64,
    pub(crate) queue: Arc<Queue>,
    /// The `Started` frame, until sent.
    pub(crate) started: Option<WatchFrame>,
}

impl Feed {
    /// The next frame: `Started` first, then events, then one `End`; `None` after it.
    pub async fn next_frame(&mut self) -> Option<WatchFrame> {
        if let Some(started) = self.started.take() {
            return Some(started);
        }
        self.queue.next().await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.hub.unregister(self.shard, self.id);
    }
}

impl ringkv_transport::WatchFeed for Feed {
    fn next_frame(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<WatchFrame>> + Send + '_>> {
        Box::pin(Feed::next_frame(self))
    }
}
