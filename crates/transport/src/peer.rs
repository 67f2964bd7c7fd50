//! One peer link: the send queues to a peer node, its current connection, the tasks that write
//! Raft batches to it, and (when this node is the dialing side) the task that keeps it connected.
//!
//! One connection per node pair: the node with the smaller id dials, the other accepts. Each side
//! opens its own unidirectional streams on that connection for what it sends: one long-lived
//! `Control` stream (votes, heartbeats, responses), one long-lived `Bulk` stream (appends), and one
//! stream per snapshot. A restarted dialer simply connects again; the acceptor replaces the old
//! connection when the new one announces itself.

use crate::config::node_server_name;
use crate::endpoint::{Shared, serve_connection};
use crate::error::{Error, Result};
use crate::frame::{StreamHeader, StreamKind, write_frame};
use crate::stats::{PeerCounters, add};
use ringkv_types::raft::MessageBody;
use ringkv_types::{NodeId, RaftBatch, codec};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::debug;

/// Stop coalescing queued batches into one stream write beyond this many bytes.
const COALESCE_BYTES_MAX: usize = 256 * 1024;

/// Pause before reopening a stream on a connection that is still alive.
const STREAM_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Longest wait for a QUIC handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a message travels on the bulk stream (appends and snapshots) rather than control.
pub(crate) fn is_bulk(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::Append { .. } | MessageBody::InstallSnapshot { .. }
    )
}

/// The state of the link to one peer node.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The peer.
    pub id: NodeId,
    /// Where to dial it (used only by the dialing side): `ip:port` or `host:port`, resolved at
    /// every dial.
    pub addr: watch::Sender<Option<String>>,
    /// The live connection, if any.
    pub connection: watch::Sender<Option<quinn::Connection>>,
    /// Queue of the control stream.
    pub control: mpsc::Sender<RaftBatch>,
    /// Queue of the bulk stream.
    pub bulk: mpsc::Sender<RaftBatch>,
    /// Counters.
    pub counters: PeerCounters,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Peer {
    /// Creates the link and starts its tasks: two senders, and a dialer when `shared`'s node has
    /// the smaller id.
    pub(crate) fn start(shared: &Arc<Shared>, id: NodeId, addr: Option<String>) -> Arc<Peer> {
        let capacity = shared.config.peer_queue_batches_max;
        let (control, control_rx) = mpsc::channel(capacity);
        let (bulk, bulk_rx) = mpsc::channel(capacity);
        let peer = Arc::new(Peer {
            id,
            addr: watch::Sender::new(addr),
            connection: watch::Sender::new(None),
            control,
            bulk,
            counters: PeerCounters::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut handles = Vec::with_capacity(3);
        handles.extend(shared.spawn(run_sender(
            shared.clone(),
            peer.clone(),
            StreamKind::Control,
            control_rx,
        )));
        handles.extend(shared.spawn(run_sender(
            shared.clone(),
            peer.clone(),
            StreamKind::Bulk,
            bulk_rx,
        )));
        if shared.config.node_id < id {
            handles.extend(shared.spawn(run_dialer(shared.clone(), peer.clone())));
        }
        *lock(&peer.tasks) = handles;
        peer
    }

    /// Stops the link's tasks and closes its connection.
    pub(crate) fn stop(&self) {
        for handle in lock(&self.tasks).drain(..) {
            handle.abort();
        }
        if let Some(connection) = self.connection.borrow().as_ref() {
            connection.close(0u32.into(), b"peer removed");
        }
    }

    /// Makes `connection` the link's connection, closing a different earlier one.
    pub(crate) fn install(&self, connection: &quinn::Connection) {
        let mut replaced = None;
        self.connection.send_if_modified(|slot| match slot {
            Some(current) if current.stable_id() == connection.stable_id() => false,
            _ => {
                replaced = slot.replace(connection.clone());
                true
            }
        });
        if let Some(old) = replaced {
            add(&self.counters.reconnects, 1);
            old.close(0u32.into(), b"replaced by a newer connection");
        }
    }

    /// Queues `batch` on the control or bulk stream, splitting it by message kind. Returns the
    /// number of messages dropped because a queue was full.
    pub(crate) fn enqueue(&self, batch: RaftBatch) -> u64 {
        let (bulk, control): (Vec<_>, Vec<_>) = batch
            .messages
            .into_iter()
            .partition(|message| is_bulk(&message.body));
        let mut dropped = 0;
        for (queue, messages) in [(&self.control, control), (&self.bulk, bulk)] {
            if messages.is_empty() {
                continue;
            }
            let count = messages.len() as u64;
            if queue.try_send(RaftBatch::new(messages)).is_err() {
                dropped += count;
            }
        }
        add(&self.counters.send_drops, dropped);
        dropped
    }

    /// Waits up to `limit` for a live connection.
    pub(crate) async fn live_connection(&self, limit: Duration) -> Option<quinn::Connection> {
        let mut receiver = self.connection.subscribe();
        tokio::time::timeout(limit, wait_for_connection(&mut receiver))
            .await
            .ok()
            .flatten()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning means another thread panicked mid-update; every guarded value here stays valid.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current connection once it is live; `None` when the link is gone.
async fn wait_for_connection(
    receiver: &mut watch::Receiver<Option<quinn::Connection>>,
) -> Option<quinn::Connection> {
    loop {
        let current = receiver.borrow_and_update().clone();
        if let Some(connection) = current
            && connection.close_reason().is_none()
        {
            return Some(connection);
        }
        receiver.changed().await.ok()?;
    }
}

/// Opens a stream of `kind` and writes its header.
async fn open_stream(
    shared: &Shared,
    connection: &quinn::Connection,
    header: &StreamHeader,
    buffer: &mut Vec<u8>,
) -> Result<quinn::SendStream> {
    let mut stream = connection
        .open_uni()
        .await
        .map_err(|e| Error::ConnectionLost {
            reason: e.to_string(),
        })?;
    write_frame(&mut stream, header, buffer, shared.config.max_frame_bytes).await?;
    Ok(stream)
}

pub(crate) fn stream_header(shared: &Shared, to: NodeId, kind: StreamKind) -> StreamHeader {
    StreamHeader {
        kind,
        from: shared.config.node_id,
        to,
        cluster: shared.config.cluster.clone(),
    }
}

/// Writes queued batches of one kind to the peer, coalescing what is queued into one write, and
/// reopens the stream on a new connection after a failure. Batches that were being written when
/// the connection failed are dropped (and counted); Raft retransmits.
async fn run_sender(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    kind: StreamKind,
    mut queue: mpsc::Receiver<RaftBatch>,
) {
    let mut connections = peer.connection.subscribe();
    let header = stream_header(&shared, peer.id, kind);
    let mut buffer = Vec::with_capacity(64 * 1024);
    let max_payload = shared.config.max_frame_bytes;
    loop {
        let Some(connection) = wait_for_connection(&mut connections).await else {
            return;
        };
        let mut stream = match open_stream(&shared, &connection, &header, &mut buffer).await {
            Ok(stream) => stream,
            Err(error) => {
                debug!(peer = %peer.id, ?kind, %error, "cannot open peer stream");
                tokio::time::sleep(STREAM_RETRY_DELAY).await;
                continue;
            }
        };
        // Notice a replaced or lost connection while idle, not only at the next write.
        let closed = connection.closed();
        tokio::pin!(closed);
        loop {
            let first = tokio::select! {
                biased;
                batch = queue.recv() => match batch {
                    Some(batch) => batch,
                    None => return,
                },
                _ = &mut closed => break,
            };
            buffer.clear();
            let mut messages = 0u64;
            let mut next = Some(first);
            while let Some(batch) = next.take() {
                let count = batch.len() as u64;
                match codec::encode_into(&batch, &mut buffer, max_payload) {
                    Ok(()) => messages += count,
                    Err(error) => {
                        add(&peer.counters.send_drops, count);
                        debug!(peer = %peer.id, %error, "cannot encode Raft batch");
                    }
                }
                if buffer.len() < COALESCE_BYTES_MAX {
                    next = queue.try_recv().ok();
                }
            }
            if buffer.is_empty() {
                continue;
            }
            match stream.write_all(&buffer).await {
                Ok(()) => {
                    add(&peer.counters.messages_sent, messages);
                    add(&peer.counters.bytes_sent, buffer.len() as u64);
                }
                Err(error) => {
                    add(&peer.counters.send_drops, messages);
                    debug!(peer = %peer.id, ?kind, %error, "peer stream write failed");
                    break;
                }
            }
        }
        if connection.close_reason().is_none() {
            tokio::time::sleep(STREAM_RETRY_DELAY).await;
        }
    }
}

/// A small xorshift generator for backoff jitter (not security relevant).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
        Self((seed ^ clock) | 1)
    }

    /// A duration uniformly in `[base / 2, base)`.
    fn spread(&mut self, base: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(self.0 % nanos)
    }
}

async fn connect(
    shared: &Shared,
    addr: SocketAddr,
    server_name: &str,
) -> Result<quinn::Connection> {
    let connect_error = |reason: String| Error::Connect { addr, reason };
    let connecting = shared
        .endpoint
        .connect_with(shared.dial_config(), addr, server_name)
        .map_err(|e| connect_error(e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(connect_error(error.to_string())),
        Err(_) => Err(connect_error("handshake timed out".into())),
    }
}

/// Keeps the link connected: dials the peer (checking its certificate names
/// `node-<id>.<cluster>`), waits for the connection to end, and dials again after a jittered,
/// exponentially growing delay.
async fn run_dialer(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut addresses = peer.addr.subscribe();
    let server_name = node_server_name(peer.id, &shared.config.cluster);
    let (backoff_min, backoff_max) = (
        shared.config.reconnect_backoff_min,
        shared.config.reconnect_backoff_max,
    );
    let mut backoff = backoff_min;
    let mut jitter = Jitter::new(shared.config.node_id.get() << 32 | peer.id.get());
    loop {
        let current = addresses.borrow_and_update().clone();
        let Some(addr) = current else {
            if addresses.changed().await.is_err() {
                return;
            }
            continue;
        };
        // IMPORTANT: resolve at every dial: a peer in a restarted container has a new IP.
        let dialed = match crate::resolve::resolve(&addr).await {
            Ok(socket) => connect(&shared, socket, &server_name).await,
            Err(error) => Err(error),
        };
        match dialed {
            Ok(connection) => {
                let connected_at = Instant::now();
                peer.install(&connection);
                shared.spawn(serve_connection(
                    shared.clone(),
                    connection.clone(),
                    Some(peer.id),
                ));
                tokio::select! {
                    reason = connection.closed() => {
                        debug!(peer = %peer.id, %reason, "peer connection closed");
                    }
                    changed = addresses.changed() => {
                        connection.close(0u32.into(), b"peer address changed");
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                if connected_at.elapsed() >= backoff_max {
                    backoff = backoff_min;
                }
            }
            Err(error) => {
                add(&peer.counters.connect_failures, 1);
                debug!(peer = %peer.id, %error, "dial failed");
            }
        }
        tokio::time::sleep(jitter.spread(backoff)).await;
        backoff = (backoff * 2).min(backoff_max);
    }
}
