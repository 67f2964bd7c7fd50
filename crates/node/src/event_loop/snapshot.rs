//! Snapshot transfers: streaming a shard to a lagging follower, and receiving one.

use super::EventLoop;
use super::throttle::Throttled;
use crate::error::Result;
use crate::pd_host;
use crate::replica_meta;
use ringkv_transport::IncomingSnapshot;
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{NodeId, ShardId, envelope, member_node};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// What a snapshot transfer task reports back to the loop.
#[derive(Debug)]
pub(super) enum SnapshotEvent {
    /// A snapshot we sent to `to` arrived (or failed).
    Sent {
        shard: ShardId,
        to: NodeId,
        delivered: bool,
    },
    /// A snapshot from a leader was fully received.
    Received { message: Message, data: Vec<u8> },
}

impl EventLoop {
    pub(super) fn on_snapshot_event(&mut self, event: SnapshotEvent) -> Result<()> {
        match event {
            SnapshotEvent::Sent {
                shard,
                to,
                delivered,
            } => {
                if let Some(group) = self.groups.get_mut(&shard) {
                    // `to` is the Raft member the core named.
                    group.raw.report_snapshot(to, delivered);
                    self.dirty.insert(shard);
                }
            }
            SnapshotEvent::Received { message, data } => self.install_received(message, &data)?,
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
        let Some(group) = self.groups.get(&shard) else {
            return;
        };
        if group.descriptor.replica_of_member(to).is_none() {
            // A learner whose configuration entry is appended but not applied here yet: the
            // descriptor we would send lacks it. The core retries after the failure report.
            let _ = events.try_send(SnapshotEvent::Sent {
                shard,
                to,
                delivered: false,
            });
            return;
        }
        // The data stream: the store's chunks (each a self-delimiting envelope), concatenated.
        // Group 0 owns no data (its descriptor's arc is nominal): its stream carries the PD
        // state, taken in this turn like the chunks, so it matches their applied index.
        let (arc, pd_state) = if shard == ShardId::PD {
            let state = self
                .pd
                .as_ref()
                .map(|host| pd_host::encode_state(&host.state));
            match state {
                Some(Ok(bytes)) => (pd_host::PD_SNAPSHOT_ARC, Some(bytes)),
                _ => {
                    let _ = events.try_send(SnapshotEvent::Sent {
                        shard,
                        to,
                        delivered: false,
                    });
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
                let _ = events.try_send(SnapshotEvent::Sent {
                    shard,
                    to,
                    delivered: false,
                });
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
        while self.snapshot_tasks.try_join_next().is_some() {}
        self.snapshot_tasks.spawn(async move {
            // The chunks hold a consistent fjall snapshot taken above; reading them is I/O, so
            // it runs off the loop.
            let read = tokio::task::spawn_blocking(move || {
                let mut data = descriptor;
                for chunk in chunks {
                    data.extend_from_slice(chunk?.as_ref());
                }
                Ok::<_, ringkv_storage::Error>(data)
            })
            .await;
            let data = match read {
                Ok(Ok(data)) => data,
                Ok(Err(error)) => {
                    warn!(%shard, %to, %error, "cannot read a snapshot");
                    let _ = events
                        .send(SnapshotEvent::Sent {
                            shard,
                            to,
                            delivered: false,
                        })
                        .await;
                    return;
                }
                Err(error) => {
                    warn!(%shard, %to, %error, "snapshot reader failed");
                    let _ = events
                        .send(SnapshotEvent::Sent {
                            shard,
                            to,
                            delivered: false,
                        })
                        .await;
                    return;
                }
            };
            info!(%shard, to = %node, member = %to, bytes = data.len(), "sending a snapshot");
            // At the PD's bandwidth limit; the time budget leaves room for it.
            let paced = (data.len() as u64).checked_div(rate).unwrap_or(0);
            let budget = std::time::Duration::from_secs(paced.saturating_mul(2).max(60));
            let sent = tokio::time::timeout(
                budget,
                transport.send_snapshot(node, message, Throttled::new(&data, limiter)),
            )
            .await;
            let delivered = matches!(sent, Ok(Ok(_)));
            if !delivered {
                warn!(%shard, %to, "snapshot not delivered");
            }
            let _ = events
                .send(SnapshotEvent::Sent {
                    shard,
                    to,
                    delivered,
                })
                .await;
        });
    }

    /// Reads an incoming snapshot in a task and hands it to the loop when complete.
    pub(super) fn receive_snapshot(
        &mut self,
        mut incoming: IncomingSnapshot,
        events: mpsc::Sender<SnapshotEvent>,
    ) {
        let max = usize::try_from(self.store.config().snapshot_bytes_max).unwrap_or(usize::MAX);
        while self.snapshot_tasks.try_join_next().is_some() {}
        self.snapshot_tasks.spawn(async move {
            let message = incoming.message().clone();
            match incoming.read_to_end(max).await {
                Ok(data) => {
                    let _ = events.send(SnapshotEvent::Received { message, data }).await;
                }
                Err(error) => warn!(%error, "incoming snapshot failed"),
            }
        });
    }

    /// Validates a received snapshot, keeps it for the Ready that installs it, and steps the
    /// message into the core.
    pub(super) fn install_received(&mut self, message: Message, data: &[u8]) -> Result<()> {
        let shard = message.group;
        let mut frames = split_envelopes(data).into_iter();
        let descriptor = frames
            .next()
            .and_then(|frame| frame.ok())
            .ok_or_else(|| "empty stream".to_string())
            .and_then(|frame| {
                envelope::decode(frame, self.store.config().record_bytes_max)
                    .map_err(|error| error.to_string())
            })
            .and_then(|bytes| {
                replica_meta::decode_descriptor(bytes).map_err(|error| error.to_string())
            });
        let descriptor = match descriptor {
            Ok(descriptor) if descriptor.id == shard => descriptor,
            Ok(descriptor) => {
                warn!(%shard, other = %descriptor.id, "snapshot carries another shard's descriptor");
                return Ok(());
            }
            Err(reason) => {
                warn!(%shard, %reason, "discarding a snapshot without a valid descriptor");
                return Ok(());
            }
        };
        if descriptor.replica_of_member(message.to).is_none() {
            warn!(%shard, to = %message.to, "snapshot whose descriptor lacks its recipient");
            return Ok(());
        }
        let pd_state = if shard == ShardId::PD {
            let state = frames
                .next()
                .and_then(|frame| frame.ok())
                .ok_or_else(|| "no placement driver state".to_string())
                .and_then(|frame| {
                    envelope::decode(frame, self.store.config().record_bytes_max)
                        .map_err(|error| error.to_string())
                })
                .and_then(|bytes| pd_host::decode_state(bytes).map_err(|e| e.to_string()));
            match state {
                Ok(state) if self.pd.is_some() => Some(state),
                Ok(_) => return Ok(()),
                Err(reason) => {
                    warn!(%shard, %reason, "discarding a PD snapshot without a valid state");
                    return Ok(());
                }
            }
        } else {
            None
        };
        let expected_arc = if pd_state.is_some() {
            pd_host::PD_SNAPSHOT_ARC
        } else {
            descriptor.arc
        };
        if !self.valid_message(&message) || !self.accept_message(&message)? {
            return Ok(());
        }
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(());
        };
        if group.installing.is_some() {
            // One install at a time; the leader retries.
            return Ok(());
        }
        match self.store.prepare_snapshot(shard, frames) {
            Ok(prepared) if prepared.arc() == expected_arc => {
                info!(%shard, index = %prepared.meta().index, "received a snapshot");
                group.pending_install = Some(prepared);
                group.pending_descriptor = Some(descriptor);
                if let Some(host) = self.pd.as_mut() {
                    host.pending_install = pd_state;
                }
                group.raw.step(message)?;
                self.dirty.insert(shard);
            }
            Ok(_) => warn!(%shard, "snapshot data does not match its descriptor's arc"),
            Err(error) => warn!(%shard, %error, "discarding a bad snapshot"),
        }
        Ok(())
    }
}

/// Splits concatenated envelopes (`version u8, length u32 LE, crc32 u32, payload`) into frames.
fn split_envelopes(mut data: &[u8]) -> Vec<ringkv_storage::Result<&[u8]>> {
    use ringkv_types::envelope::HEADER_LEN;
    let mut frames = Vec::new();
    while !data.is_empty() {
        let length = data
            .get(1..5)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map(u32::from_le_bytes);
        let Some(total) = length.and_then(|l| (l as usize).checked_add(HEADER_LEN)) else {
            frames.push(Ok(data));
            break;
        };
        match (data.get(..total), data.get(total..)) {
            (Some(frame), Some(rest)) => {
                frames.push(Ok(frame));
                data = rest;
            }
            _ => {
                // A truncated frame: hand it over so validation reports it.
                frames.push(Ok(data));
                break;
            }
        }
    }
    frames
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
        let frames: Vec<&[u8]> = split_envelopes(&data)
            .into_iter()
            .map(|frame| frame.unwrap())
            .collect();
        assert_eq!(frames.len(), 3);
        let decoded: Vec<String> = frames
            .iter()
            .map(|frame| codec::decode(frame, 1024).unwrap())
            .collect();
        assert_eq!(decoded, ["a", "bb", ""]);
        // A cut stream hands its tail over whole, so validation reports it.
        let cut = &data[..data.len() - 1];
        assert_eq!(split_envelopes(cut).len(), 3);
        assert!(split_envelopes(&[]).is_empty());
    }
}
