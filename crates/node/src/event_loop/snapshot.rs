//! Snapshot transfers: streaming a shard to a lagging follower, and receiving one.

use super::EventLoop;
use super::throttle::Throttled;
use crate::core::machine::MachineKind;
use crate::error::Result;
use crate::pd_host;
use crate::replica_meta;
use ringkv_transport::IncomingSnapshot;
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{NodeId, ShardId, envelope, member_node};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What a snapshot transfer task reports back to the loop.
#[derive(Debug)]
pub(super) enum SnapshotEvent {
    /// A snapshot we sent to `to` arrived (or failed).
    Sent {
        shard: ShardId,
        to: NodeId,
        delivered: bool,
    },
    /// Receiving a snapshot of `shard` ended without one to install.
    ReceiveFailed { shard: ShardId },
    /// A snapshot from a leader was fully received and staged.
    Received {
        message: Message,
        received: Box<Received>,
    },
}

impl EventLoop {
    pub(super) fn on_snapshot_event(&mut self, event: SnapshotEvent) -> Result<()> {
        match event {
            SnapshotEvent::Sent {
                shard,
                to,
                delivered,
            } => {
                if let Some(group) = self.core.groups.get_mut(&shard) {
                    // `to` is the Raft member the core named.
                    group.raw.report_snapshot(to, delivered);
                    self.core.dirty.insert(shard);
                }
            }
            SnapshotEvent::ReceiveFailed { shard } => {
                self.receiving.remove(&shard);
            }
            SnapshotEvent::Received { message, received } => {
                self.receiving.remove(&message.group);
                self.install_received(message, *received)?;
            }
        }
        Ok(())
    }

    /// Streams the shard's data to a follower beside the `InstallSnapshot` message, in a task.
    pub(super) fn send_snapshot(
        &mut self,
        mut message: Message,
        events: mpsc::Sender<SnapshotEvent>,
    ) {
        let shard = message.group;
        let to = message.to;
        let Some(group) = self.core.groups.get(&shard) else {
            return;
        };
        if group.descriptor.replica_of_member(to).is_none() {
            // A learner whose configuration entry is appended but not applied here yet: the
            // descriptor we would send lacks it. The core retries after the failure report.
            report_unsent(&mut self.snapshot_tasks, events, shard, to);
            return;
        }
        // The data stream: the store's chunks (each a self-delimiting envelope), concatenated.
        // Group 0 owns no data (its descriptor's arc is nominal): its stream carries the PD
        // state, taken in this turn like the chunks, so it matches their applied index.
        let (arc, pd_state) = if group.machine.kind() == MachineKind::Pd {
            let state = group
                .machine
                .pd()
                .map(|host| pd_host::encode_state(&host.state));
            match state {
                Some(Ok(bytes)) => (pd_host::PD_SNAPSHOT_ARC, Some(bytes)),
                _ => {
                    report_unsent(&mut self.snapshot_tasks, events, shard, to);
                    return;
                }
            }
        } else {
            (group.descriptor.arc, None)
        };
        let chunks = match self.store.snapshot_chunks(shard, arc) {
            Ok(chunks) => chunks,
            Err(error) => {
                warn!(%shard, %to, %error, "cannot read a snapshot");
                report_unsent(&mut self.snapshot_tasks, events, shard, to);
                return;
            }
        };
        if let (MessageBody::InstallSnapshot { snapshot }, Some(meta)) =
            (&mut message.body, chunks.meta())
        {
            // The message must describe exactly the data that follows.
            snapshot.meta = meta.clone();
        }
        // The stream starts with the shard's descriptor as of the snapshot (taken in this turn,
        // like the chunks): a replica created by a message has none, and the log before the
        // snapshot (which would carry it) is gone.
        let mut descriptor = match replica_meta::encode_descriptor(&group.descriptor) {
            Ok(bytes) => envelope::encode(&bytes),
            Err(error) => {
                warn!(%shard, %to, %error, "cannot encode the descriptor");
                report_unsent(&mut self.snapshot_tasks, events, shard, to);
                return;
            }
        };
        if let Some(state) = pd_state {
            descriptor.extend_from_slice(&envelope::encode(&state));
        }
        let node = member_node(to);
        let transport = self.transport.clone();
        let rate = self.snapshot_bytes_per_sec;
        let limiter = self.snapshot_limiter.clone();
        let slots = self.outbound_snapshots.clone();
        let waited = self
            .metrics
            .snapshots_limited
            .get_or_create(&[("direction", "outbound")])
            .clone();
        let in_flight = self
            .metrics
            .snapshots_in_flight
            .get_or_create(&[("direction", "outbound")])
            .clone();
        let bytes_max = self.store.config().snapshot_bytes_max;
        while self.snapshot_tasks.try_join_next().is_some() {}
        self.snapshot_tasks.spawn(async move {
            // At most `storage.snapshots_outbound_max` snapshots go at once; the others wait
            // here (their fjall snapshot, taken above, stays open meanwhile).
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => Ok(permit),
                Err(_) => {
                    waited.inc();
                    slots.acquire_owned().await
                }
            };
            let Ok(_permit) = permit else {
                return;
            };
            in_flight.inc();
            // The chunks hold a consistent fjall snapshot taken above; reading them is I/O, so
            // a blocking task reads them and hands them over a small channel: the snapshot is
            // never whole in memory.
            let (chunk_tx, chunk_rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(4);
            let reader = tokio::task::spawn_blocking(move || {
                for chunk in chunks {
                    let chunk = chunk.map_err(std::io::Error::other);
                    let failed = chunk.is_err();
                    if chunk_tx.blocking_send(chunk).is_err() || failed {
                        break;
                    }
                }
            });
            info!(%shard, to = %node, member = %to, "sending a snapshot");
            // At the PD's bandwidth limit; the time budget leaves room for the largest
            // snapshot at that rate.
            let budget = match bytes_max.checked_div(rate) {
                Some(paced) => std::time::Duration::from_secs(paced.saturating_mul(2).max(60)),
                None => std::time::Duration::from_secs(600),
            };
            let sent = tokio::time::timeout(
                budget,
                transport.send_snapshot(
                    node,
                    message,
                    Throttled::streaming(descriptor, chunk_rx, limiter),
                ),
            )
            .await;
            in_flight.dec();
            // The reader stops once the channel is dropped (a failed send).
            let _ = reader.await;
            let delivered = match sent {
                Ok(Ok(bytes)) => {
                    info!(%shard, to = %node, bytes, "snapshot sent");
                    true
                }
                Ok(Err(error)) => {
                    warn!(%shard, %to, %error, "snapshot not delivered");
                    false
                }
                Err(_) => {
                    warn!(%shard, %to, "snapshot not delivered in time");
                    false
                }
            };
            let _ = events
                .send(SnapshotEvent::Sent {
                    shard,
                    to,
                    delivered,
                })
                .await;
        });
    }

    /// Receives an incoming snapshot off the loop: a blocking task reads the stream chunk by
    /// chunk and stages it in the store ([`ringkv_storage::SnapshotStager`]), then hands the
    /// loop a small [`Received`]. At most `storage.snapshots_inbound_max` at once; beyond it the
    /// snapshot is refused (dropping it stops the stream; the sender reports it undelivered and
    /// its Raft core sends again later).
    pub(super) fn receive_snapshot(
        &mut self,
        incoming: IncomingSnapshot,
        events: mpsc::Sender<SnapshotEvent>,
    ) {
        let shard = incoming.message().group;
        if self.receiving.contains(&shard) {
            // The leader's core sent again while its first stream is still arriving.
            debug!(%shard, from = %incoming.from(), "refusing a second snapshot of a shard");
            return;
        }
        let Ok(permit) = self.inbound_snapshots.clone().try_acquire_owned() else {
            self.metrics
                .snapshots_limited
                .get_or_create(&[("direction", "inbound")])
                .inc();
            warn!(
                shard = %incoming.message().group,
                from = %incoming.from(),
                limit = self.config.storage.snapshots_inbound_max,
                "refusing a snapshot: too many being received"
            );
            return;
        };
        self.receiving.insert(shard);
        let store = self.store.clone();
        let in_flight = self
            .metrics
            .snapshots_in_flight
            .get_or_create(&[("direction", "inbound")])
            .clone();
        while self.snapshot_tasks.try_join_next().is_some() {}
        self.snapshot_tasks.spawn(async move {
            let message = incoming.message().clone();
            let shard = message.group;
            let handle = tokio::runtime::Handle::current();
            in_flight.inc();
            let staged = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                stage_incoming(&handle, &store, incoming)
            })
            .await;
            in_flight.dec();
            match staged {
                Ok(Ok(received)) => {
                    let _ = events
                        .send(SnapshotEvent::Received {
                            message,
                            received: Box::new(received),
                        })
                        .await;
                }
                Ok(Err(reason)) => {
                    warn!(%shard, %reason, "discarding a bad snapshot");
                    let _ = events.send(SnapshotEvent::ReceiveFailed { shard }).await;
                }
                Err(error) => {
                    warn!(%shard, %error, "snapshot receiver failed");
                    let _ = events.send(SnapshotEvent::ReceiveFailed { shard }).await;
                }
            }
        });
    }

    /// Checks a staged snapshot against the group, keeps it for the Ready that installs it, and
    /// steps the message into the core. Dropping the staged snapshot instead discards it.
    pub(super) fn install_received(&mut self, message: Message, received: Received) -> Result<()> {
        let shard = message.group;
        let Received {
            descriptor,
            pd_state,
            prepared,
        } = received;
        if descriptor.replica_of_member(message.to).is_none() {
            warn!(%shard, to = %message.to, "snapshot whose descriptor lacks its recipient");
            return Ok(());
        }
        let pd_state = match pd_state {
            Some(_) if self.pd_host().is_none() => return Ok(()),
            other => other,
        };
        if !self.valid_message(&message) {
            return Ok(());
        }
        let removing = super::removal_running(&self.removals, &self.removals_waiting);
        let route = self.core.accept(&message, removing);
        if !self.follow(&message, route)? {
            return Ok(());
        }
        self.core
            .offer_snapshot(message, prepared.into(), descriptor, pd_state)?;
        Ok(())
    }
}

/// Reports a snapshot the loop could not start sending as undelivered. The core waits for a
/// report of every snapshot it hands out (`snapshot_reports`), so the report must not be lost
/// to a full channel: a task awaits room for it.
fn report_unsent(
    tasks: &mut tokio::task::JoinSet<()>,
    events: mpsc::Sender<SnapshotEvent>,
    shard: ShardId,
    to: NodeId,
) {
    tasks.spawn(async move {
        let _ = events
            .send(SnapshotEvent::Sent {
                shard,
                to,
                delivered: false,
            })
            .await;
    });
}

/// A snapshot received and staged, waiting for the loop.
#[derive(Debug)]
pub(super) struct Received {
    descriptor: ringkv_types::ShardDescriptor,
    pd_state: Option<ringkv_pd::PdState>,
    prepared: ringkv_storage::PreparedSnapshot,
}

/// Reads `incoming` to its end on a blocking thread, checking and staging it as it arrives:
/// the descriptor envelope, the PD state's (group 0 only), then the store's chunks. Memory: the
/// transport's few buffered chunks and one envelope.
fn stage_incoming(
    handle: &tokio::runtime::Handle,
    store: &ringkv_storage::Store,
    mut incoming: IncomingSnapshot,
) -> std::result::Result<Received, String> {
    let shard = incoming.message().group;
    let config = store.config();
    let record_max = config.record_bytes_max;
    let frame_max = config.snapshot_chunk_bytes as u64 + record_max + 4096;
    let mut splitter = EnvelopeSplitter::new(frame_max);
    let mut next_frame = || -> std::result::Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(frame) = splitter.pop()? {
                return Ok(Some(frame));
            }
            match handle.block_on(incoming.next_chunk()) {
                Ok(Some(bytes)) => splitter.push(&bytes),
                Ok(None) => return splitter.finish().map(|()| None),
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    let frame = next_frame()?.ok_or_else(|| "empty stream".to_string())?;
    let bytes = envelope::decode(&frame, record_max).map_err(|error| error.to_string())?;
    let descriptor = replica_meta::decode_descriptor(bytes).map_err(|error| error.to_string())?;
    if descriptor.id != shard {
        return Err(format!(
            "stream carries shard {}'s descriptor",
            descriptor.id
        ));
    }
    let pd_state = if MachineKind::of(shard) == MachineKind::Pd {
        let frame = next_frame()?.ok_or_else(|| "no placement driver state".to_string())?;
        let bytes = envelope::decode(&frame, record_max).map_err(|error| error.to_string())?;
        Some(pd_host::decode_state(bytes).map_err(|error| error.to_string())?)
    } else {
        None
    };
    let mut stager = store.snapshot_stager(shard);
    while let Some(frame) = next_frame()? {
        stager.push(&frame).map_err(|error| error.to_string())?;
    }
    let prepared = stager.finish().map_err(|error| error.to_string())?;
    Ok(Received {
        descriptor,
        pd_state,
        prepared,
    })
}

/// Cuts a byte stream into concatenated envelopes (`version u8, length u32 LE, crc32 u32,
/// payload`), holding at most one envelope and one pushed buffer.
struct EnvelopeSplitter {
    buffer: Vec<u8>,
    start: usize,
    max: u64,
}

impl EnvelopeSplitter {
    fn new(max: u64) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            max,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole envelope, if buffered.
    fn pop(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        use ringkv_types::envelope::HEADER_LEN;
        let rest = self.buffer.get(self.start..).unwrap_or_default();
        let Some(length) = rest
            .get(1..5)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map(u32::from_le_bytes)
        else {
            return Ok(None);
        };
        if u64::from(length) > self.max {
            return Err(format!(
                "envelope of {length} bytes, at most {} allowed",
                self.max
            ));
        }
        let total = length as usize + HEADER_LEN;
        match rest.get(..total) {
            Some(frame) => {
                let frame = frame.to_vec();
                self.start += total;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Checks that nothing is left over at the end of the stream.
    fn finish(&self) -> std::result::Result<(), String> {
        match self.buffer.len() - self.start {
            0 => Ok(()),
            left => Err(format!("stream ends inside an envelope ({left} bytes)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::codec;

    #[test]
    fn concatenated_envelopes_split_back_into_frames() {
        let mut data = Vec::new();
        for value in ["a", "bb", ""] {
            codec::encode_into(&value.to_string(), &mut data, 1024).unwrap();
        }
        // Pushed in pieces that cut envelopes anywhere, as the transport's chunks do.
        for piece in [1, 3, 7, data.len()] {
            let mut splitter = EnvelopeSplitter::new(1024);
            let mut frames = Vec::new();
            for bytes in data.chunks(piece) {
                splitter.push(bytes);
                while let Some(frame) = splitter.pop().unwrap() {
                    frames.push(frame);
                }
            }
            splitter.finish().unwrap();
            let decoded: Vec<String> = frames
                .iter()
                .map(|frame| codec::decode(frame, 1024).unwrap())
                .collect();
            assert_eq!(decoded, ["a", "bb", ""], "pieces of {piece}");
        }
        // A cut stream is reported at its end.
        let mut splitter = EnvelopeSplitter::new(1024);
        splitter.push(&data[..data.len() - 1]);
        while splitter.pop().unwrap().is_some() {}
        assert!(splitter.finish().is_err());
        // An envelope claiming more than the limit is refused before it is buffered.
        let mut splitter = EnvelopeSplitter::new(1);
        splitter.push(&data);
        assert!(splitter.pop().is_err());
    }
}
