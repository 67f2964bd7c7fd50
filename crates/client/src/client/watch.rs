//! Watches: a stream of the changes of one key ([`Client::watch`]) or of every key under a
//! prefix ([`Client::watch_prefix`]), resumed across reconnects, leader changes and splits.
//!
//! One subscription per shard (a key: its shard; a prefix: every shard, keys are hashed), each
//! followed by its own task and merged into one bounded channel. Each subscription resumes
//! after the last log index it delivered, so a reconnect shows no change twice and skips none
//! while the node's history holds them; else the stream ends with [`Error::Compacted`]. Order
//! is per shard (so per key), not across shards.

use super::*;
use ringkv_transport::WatchStream;
use ringkv_types::ShardId;
use ringkv_types::{
    FROM_CREATION, WatchEnd, WatchEventKind, WatchFrame, WatchRequest, WatchTarget,
    namespace::split as ns_split,
};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Events buffered between the subscription tasks and the caller; when full the tasks stop
/// reading, and a node whose watcher stays behind cancels it (`SlowWatcher`).
const WATCH_CHANNEL_EVENTS: usize = 64;

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    /// Written (with its new value).
    Put(Bytes),
    /// Deleted.
    Delete,
    /// Removed because its TTL ran out.
    Expire,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The key (without the client's namespace).
    pub key: Bytes,
    /// What happened.
    pub kind: WatchEventType,
    /// The key's version after the change (a delete: the deletion's own version).
    pub version: u64,
    /// The shard whose log holds the change.
    pub shard: ShardId,
    /// The change's log index in that shard: with `shard`, where a watch resumes.
    pub index: u64,
}

/// Where a watch starts.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// A key watch: every change after this log index of the key's shard (the `index` of the
    /// last event seen, or the version a read returned, which is the index of the key's last
    /// write). `None`: from now. In a shard created by a split, whose log starts low while its
    /// keys keep their versions, use an event's `index`: a version from there may be above the
    /// shard's log, and the watch then skips changes until the log passes it
    /// (docs/data-model.md, "Watches").
    pub after: Option<u64>,
    /// A prefix watch: per shard, every change after this index ([`Watch::positions`] of an
    /// earlier watch). Shards not listed start from now.
    pub positions: BTreeMap<ShardId, u64>,
}

/// A running watch: [`Watch::next`] yields its events. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    events: mpsc::Receiver<Result<WatchEvent>>,
    positions: Arc<Mutex<BTreeMap<ShardId, u64>>>,
    _tasks: JoinSet<()>,
}

impl Watch {
    /// The next event; `Err` when the watch ended for good ([`Error::Compacted`],
    /// [`Error::SlowWatcher`], a permission refusal); `None` after that.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.events.recv().await
    }

    /// Per shard, the index of the last change delivered to the caller's channel (or the
    /// start): pass it as [`WatchOptions::positions`] to resume a prefix watch.
    pub fn positions(&self) -> BTreeMap<ShardId, u64> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// How a shard subscription ended.
enum Followed {
    /// The shard split: look for new shards, then follow this one again.
    Split,
    /// The key is no longer in the shard (every change up to the split was delivered).
    Moved,
    /// The caller dropped the watch.
    Closed,
}

impl Client {
    /// Watches `key` from now.
    ///
    /// # Errors
    /// [`Error::Config`] when the key cannot be namespaced.
    pub fn watch(&self, key: impl Into<Bytes>) -> Result<Watch> {
        self.watch_with(key, WatchOptions::default())
    }

    /// Watches `key` from `options.after`.
    ///
    /// # Errors
    /// [`Error::Config`] when the key cannot be namespaced.
    pub fn watch_with(&self, key: impl Into<Bytes>, options: WatchOptions) -> Result<Watch> {
        let key = self.wire_key(key.into())?;
        let (tx, events) = mpsc::channel(WATCH_CHANNEL_EVENTS);
        let positions = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = JoinSet::new();
        let client = self.clone();
        let shared = positions.clone();
        tasks.spawn(async move {
            client.follow_key(key, options.after, tx, shared).await;
        });
        Ok(Watch {
            events,
            positions,
            _tasks: tasks,
        })
    }

    /// Watches every key starting with `prefix` (in the client's namespace) in every shard.
    ///
    /// # Errors
    /// [`Error::Config`] when the prefix cannot be namespaced.
    pub fn watch_prefix(&self, prefix: impl Into<Bytes>, options: WatchOptions) -> Result<Watch> {
        let prefix = self.wire_key(prefix.into())?;
        let (tx, events) = mpsc::channel(WATCH_CHANNEL_EVENTS);
        let positions = Arc::new(Mutex::new(options.positions.clone()));
        let mut tasks = JoinSet::new();
        let client = self.clone();
        let shared = positions.clone();
        tasks.spawn(async move {
            client
                .follow_prefix(prefix, options.positions, tx, shared)
                .await;
        });
        Ok(Watch {
            events,
            positions,
            _tasks: tasks,
        })
    }

    /// A prefix watch: one task per shard; a split adds the new shards, followed from their
    /// creation.
    async fn follow_prefix(
        &self,
        prefix: Bytes,
        start: BTreeMap<ShardId, u64>,
        tx: mpsc::Sender<Result<WatchEvent>>,
        positions: Arc<Mutex<BTreeMap<ShardId, u64>>>,
    ) {
        let (split_tx, mut splits) = mpsc::channel::<()>(64);
        let mut followed = HashSet::new();
        let mut tasks = JoinSet::new();
        let mut first_round = true;
        // Splits reported by a shard's subscription whose new shard is not followed yet. PD
        // learns of a split from the shards' leaders, so a map loaded right after one may not
        // show the new shard: reload (with backoff) until it does.
        let mut splits_unseen = 0usize;
        let mut backoff = Backoff::new(
            self.inner.config.retry.backoff_min,
            self.inner.config.retry.backoff_max,
        );
        loop {
            if self.read_routing().map().shards.is_empty() || !first_round {
                let generation = self.inner.map_generation.load(Ordering::Acquire);
                let _ = self.reload_map(generation, None).await;
            }
            let shards: Vec<ShardId> = self
                .read_routing()
                .map()
                .shards
                .iter()
                .map(|d| d.id)
                .filter(|id| *id != ShardId::PD)
                .collect();
            for shard in shards {
                if !followed.insert(shard) {
                    continue;
                }
                if !first_round {
                    splits_unseen = splits_unseen.saturating_sub(1);
                    backoff = Backoff::new(
                        self.inner.config.retry.backoff_min,
                        self.inner.config.retry.backoff_max,
                    );
                }
                // Shards found after the start were made by splits since: from their creation
                // (the parent's watch delivered every change before the split).
                let after = match start.get(&shard) {
                    Some(after) => Some(*after),
                    None if first_round => None,
                    None => Some(FROM_CREATION),
                };
                let client = self.clone();
                let target = WatchTarget::Prefix(prefix.clone());
                let (tx, positions, split_tx) = (tx.clone(), positions.clone(), split_tx.clone());
                tasks.spawn(async move {
                    let mut after = after;
                    loop {
                        match client
                            .follow_shard(shard, &target, &mut after, &tx, &positions)
                            .await
                        {
                            Followed::Split => {
                                let _ = split_tx.try_send(());
                            }
                            // The shard is gone from the map: its keys are in other shards.
                            Followed::Moved => return false,
                            // The watch is over (an error was sent, or the caller left).
                            Followed::Closed => return true,
                        }
                    }
                });
            }
            first_round = false;
            let pause = if splits_unseen > 0 {
                backoff.next_delay(&self.inner.jitter)
            } else {
                Duration::ZERO
            };
            tokio::select! {
                // Not woken by a split: look again (bounded by the backoff) for the new shard.
                () = tokio::time::sleep(pause), if splits_unseen > 0 => {}
                woke = splits.recv() => match woke {
                    Some(()) => splits_unseen += 1,
                    None => return,
                },
                () = tx.closed() => return,
                Some(ended) = tasks.join_next() => {
                    // One shard's watch ended for good: so does the whole (dropping the
                    // tasks and the channel's senders).
                    if ended.unwrap_or(true) {
                        return;
                    }
                }
            }
        }
    }

    /// A key watch: its shard, then (after a split that moved it) the new one's from its
    /// creation.
    async fn follow_key(
        &self,
        key: Bytes,
        after: Option<u64>,
        tx: mpsc::Sender<Result<WatchEvent>>,
        positions: Arc<Mutex<BTreeMap<ShardId, u64>>>,
    ) {
        let target = WatchTarget::Key(key.clone());
        let mut after = after;
        let mut shard = None;
        let mut backoff = Backoff::new(
            self.inner.config.retry.backoff_min,
            self.inner.config.retry.backoff_max,
        );
        loop {
            let routed = self.read_routing().descriptor_for_key(&key).map(|d| d.id);
            let current = match shard {
                Some(current) => current,
                None => match routed {
                    Some(id) => id,
                    None => {
                        let generation = self.inner.map_generation.load(Ordering::Acquire);
                        let _ = self.reload_map(generation, None).await;
                        tokio::time::sleep(backoff.next_delay(&self.inner.jitter)).await;
                        continue;
                    }
                },
            };
            shard = Some(current);
            match self
                .follow_shard(current, &target, &mut after, &tx, &positions)
                .await
            {
                Followed::Split => {}
                Followed::Moved => {
                    // Every change up to the split came from the old shard; the new shard's
                    // log continues the old one's indexes from the split, so the resume point
                    // carries over.
                    let generation = self.inner.map_generation.load(Ordering::Acquire);
                    let _ = self.reload_map(generation, None).await;
                    let moved_to = self.read_routing().descriptor_for_key(&key).map(|d| d.id);
                    if moved_to.is_some_and(|to| to != current) {
                        shard = moved_to;
                    } else {
                        tokio::time::sleep(backoff.next_delay(&self.inner.jitter)).await;
                    }
                }
                Followed::Closed => return,
            }
        }
    }

    /// Follows one shard's subscription until it ends for a reason the caller handles,
    /// reconnecting (to the new leader) as needed. `after` is the resume point, advanced as
    /// events are handed on.
    async fn follow_shard(
        &self,
        shard: ShardId,
        target: &WatchTarget,
        after: &mut Option<u64>,
        tx: &mpsc::Sender<Result<WatchEvent>>,
        positions: &Mutex<BTreeMap<ShardId, u64>>,
    ) -> Followed {
        let mut backoff = Backoff::new(
            self.inner.config.retry.backoff_min,
            self.inner.config.retry.backoff_max,
        );
        loop {
            if tx.is_closed() {
                return Followed::Closed;
            }
            let now = Instant::now();
            let avoid = |node: NodeId| self.inner.health.is_down(node, now);
            let route = self.read_routing().route_shard(shard, &avoid);
            let Some(route) = route else {
                let generation = self.inner.map_generation.load(Ordering::Acquire);
                let _ = self.reload_map(generation, None).await;
                if self.read_routing().route_shard(shard, &avoid).is_none() {
                    // The shard is gone from the map (its keys moved): nothing more here.
                    return Followed::Moved;
                }
                continue;
            };
            let request = WatchRequest {
                shard,
                target: target.clone(),
                after: *after,
            };
            let failure = match self.open_watch(route.node, request).await {
                Ok(stream) => match self.pump(shard, stream, after, tx, positions).await {
                    Pumped::End(WatchEnd::ShardSplit { index }) => {
                        // Every change up to the split was sent before this end: resume
                        // after it (else a moved key would replay its catch-up forever).
                        let resumed = after.map_or(index, |after| after.max(index));
                        *after = Some(resumed);
                        positions
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(shard, resumed);
                        return Followed::Split;
                    }
                    Pumped::End(WatchEnd::Compacted { oldest }) => {
                        let _ = tx.send(Err(Error::Compacted { shard, oldest })).await;
                        return Followed::Closed;
                    }
                    Pumped::End(WatchEnd::SlowWatcher) => {
                        let _ = tx.send(Err(Error::SlowWatcher { shard })).await;
                        return Followed::Closed;
                    }
                    Pumped::End(WatchEnd::NotLeader | WatchEnd::Unavailable) => {
                        self.write_routing().unreachable(shard, route.node, &avoid);
                        None
                    }
                    Pumped::Refused(wire) => Some(wire),
                    Pumped::Lost => {
                        self.write_routing().unreachable(shard, route.node, &avoid);
                        None
                    }
                    Pumped::Closed => return Followed::Closed,
                },
                Err(Error::Server(wire)) => Some(wire),
                Err(error) if error.is_auth() => {
                    let _ = tx.send(Err(error)).await;
                    return Followed::Closed;
                }
                Err(_) => {
                    self.write_routing().unreachable(shard, route.node, &avoid);
                    None
                }
            };
            let pause = match failure {
                None => true,
                Some(WireError::KeyNotInShard { .. }) => return Followed::Moved,
                Some(WireError::NotLeader {
                    leader_hint,
                    descriptor,
                }) => {
                    let update = self.write_routing().not_leader(
                        shard,
                        route.node,
                        leader_hint,
                        descriptor,
                        &avoid,
                    );
                    if update == Update::Reload {
                        let generation = self.inner.map_generation.load(Ordering::Acquire);
                        let _ = self.reload_map(generation, None).await;
                    }
                    update != Update::Rerouted
                }
                Some(WireError::ShardNotFound { .. }) => {
                    let generation = self.inner.map_generation.load(Ordering::Acquire);
                    let _ = self.reload_map(generation, None).await;
                    self.write_routing().unreachable(shard, route.node, &avoid);
                    true
                }
                Some(wire) if wire.is_retryable() => true,
                Some(wire) => {
                    let _ = tx.send(Err(Error::from_wire(wire))).await;
                    return Followed::Closed;
                }
            };
            if pause {
                tokio::time::sleep(backoff.next_delay(&self.inner.jitter)).await;
            }
        }
    }

    /// Opens a watch stream on `node` (with the client's token).
    async fn open_watch(&self, node: NodeId, request: WatchRequest) -> Result<WatchStream> {
        let deadline = Instant::now() + self.inner.config.attempt_timeout;
        let request = match self.token(deadline).await? {
            Some(token) => Request::WithToken {
                token,
                request: Box::new(Request::Watch(request)),
            },
            None => Request::Watch(request),
        };
        let connection = self.connection(node, deadline).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        connection
            .watch(&request, timeout)
            .await
            .map_err(|source| Error::Transport { node, source })
    }

    /// Hands a stream's events on, advancing `after`, until it ends.
    async fn pump(
        &self,
        shard: ShardId,
        mut stream: WatchStream,
        after: &mut Option<u64>,
        tx: &mpsc::Sender<Result<WatchEvent>>,
        positions: &Mutex<BTreeMap<ShardId, u64>>,
    ) -> Pumped {
        let strip = self.namespace().map_or(0, |ns| 1 + ns.len());
        // Changes at or below the resume point were delivered before (a batch's changes share
        // an index, and a frame never cuts an index in two).
        let mut floor = *after;
        loop {
            let frame = tokio::select! {
                frame = stream.next() => frame,
                () = tx.closed() => return Pumped::Closed,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => return Pumped::Lost,
            };
            match frame {
                WatchFrame::Started { index, .. } => {
                    if after.is_none() {
                        *after = Some(index);
                        floor = Some(index);
                    }
                    positions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(shard, after.unwrap_or(index));
                }
                WatchFrame::Events(events) => {
                    for event in events {
                        // Never twice: a resume asks for changes after `after` only, but a
                        // server is not trusted to have honoured it.
                        if floor.is_some_and(|floor| event.index <= floor) {
                            continue;
                        }
                        let index = event.index;
                        let kind = match event.kind {
                            WatchEventKind::Put { value } => WatchEventType::Put(value),
                            WatchEventKind::Delete => WatchEventType::Delete,
                            WatchEventKind::Expire => WatchEventType::Expire,
                        };
                        let key = if strip > 0 && ns_split(&event.key).is_ok() {
                            event.key.slice(strip.min(event.key.len())..)
                        } else {
                            event.key
                        };
                        let event = WatchEvent {
                            key,
                            kind,
                            version: event.version,
                            shard,
                            index,
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return Pumped::Closed;
                        }
                        *after = Some(index);
                        positions
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(shard, index);
                    }
                }
                WatchFrame::End(end) => return Pumped::End(end),
                WatchFrame::Refused(wire) => return Pumped::Refused(wire),
            }
        }
    }
}

/// How one stream ended.
enum Pumped {
    End(WatchEnd),
    Refused(WireError),
    Lost,
    Closed,
}
