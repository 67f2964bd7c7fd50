//! Snapshot streaming: one QUIC stream per snapshot, `Start`, data chunks, `End` (with total and
//! crc32). A sender that fails midway finishes the stream without `End`, which the receiver
//! reports as an aborted snapshot. The receiver hands the node an [`IncomingSnapshot`] and forwards chunks through a small
//! bounded channel, so a slow node slows the sender through QUIC flow control instead of
//! buffering the snapshot in memory.

use crate::endpoint::Shared;
use crate::error::{Error, Result};
use crate::frame::{FrameReader, SnapshotFrame, StreamKind, write_frame};
use crate::peer::{Peer, stream_header};
use crate::stats::add;
use bytes::Bytes;
use ringkv_types::NodeId;
use ringkv_types::raft::Message;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// QUIC stream error code: the receiver refused or abandoned the snapshot.
const STOP_REFUSED: u32 = 0x20;

/// What the receiving task tells the node.
#[derive(Debug)]
enum SnapshotEvent {
    Chunk(Bytes),
    Done,
    Failed(String),
}

/// A snapshot arriving from a peer. Read it with [`next_chunk`](Self::next_chunk) until
/// `Ok(None)`; dropping it abandons the transfer (the sender sees an error).
#[derive(Debug)]
pub struct IncomingSnapshot {
    from: NodeId,
    message: Message,
    events: mpsc::Receiver<SnapshotEvent>,
    finished: bool,
}

impl IncomingSnapshot {
    /// The sending node.
    pub fn from(&self) -> NodeId {
        self.from
    }

    /// The `InstallSnapshot` message the data belongs to.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The next chunk of data; `Ok(None)` once all data arrived and its length and crc32 were
    /// verified.
    ///
    /// # Errors
    /// [`Error::SnapshotAborted`] when the stream broke or failed verification. The node should
    /// discard what it received.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        let aborted = |reason: String| Error::SnapshotAborted {
            from: self.from,
            reason,
        };
        match self.events.recv().await {
            Some(SnapshotEvent::Chunk(data)) => Ok(Some(data)),
            Some(SnapshotEvent::Done) => {
                self.finished = true;
                Ok(None)
            }
            Some(SnapshotEvent::Failed(reason)) => Err(aborted(reason)),
            None => Err(aborted(
                "stream ended before the snapshot was complete".into(),
            )),
        }
    }

    /// Reads all remaining data into memory, refusing more than `max_bytes`.
    ///
    /// # Errors
    /// As [`next_chunk`](Self::next_chunk), and [`Error::SnapshotAborted`] beyond `max_bytes`.
    pub async fn read_to_end(&mut self, max_bytes: usize) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            if data.len() + chunk.len() > max_bytes {
                return Err(Error::SnapshotAborted {
                    from: self.from,
                    reason: format!("snapshot larger than {max_bytes} bytes"),
                });
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }
}

/// Reads until `buffer` is full or `data` ends; returns the bytes read.
async fn read_chunk<R: AsyncRead + Unpin>(data: &mut R, buffer: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        let read = data
            .read(rest)
            .await
            .map_err(|source| Error::SnapshotSource { source })?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Sends one snapshot on a new stream of `connection`.
pub(crate) async fn send_snapshot<R: AsyncRead + Unpin>(
    shared: &Shared,
    peer: &Peer,
    connection: &quinn::Connection,
    message: Message,
    mut data: R,
) -> Result<u64> {
    let lost = |error: &dyn std::fmt::Display| Error::ConnectionLost {
        reason: error.to_string(),
    };
    let mut stream = connection.open_uni().await.map_err(|e| lost(&e))?;
    let outcome = write_snapshot(shared, peer, &mut stream, message, &mut data).await;
    if outcome.is_err() {
        // Finish the stream without an `End` frame: the receiver reads what was sent and then
        // reports the snapshot as aborted. A reset would discard unread data on the receiver,
        // header included, and a stream that arrives as a bare reset cannot be told from noise.
        let _ = stream.finish();
    }
    let total_bytes = outcome?;
    // Resolves once the receiver has acknowledged every byte, or stopped the stream.
    match stream.stopped().await {
        Ok(None) => {
            add(&peer.counters.snapshots_sent, 1);
            Ok(total_bytes)
        }
        Ok(Some(code)) => Err(Error::SnapshotAborted {
            from: shared.config.node_id,
            reason: format!("receiver stopped the stream with code {code}"),
        }),
        Err(error) => Err(lost(&error)),
    }
}

/// Writes header, `Start`, chunks and `End`, and finishes the stream; returns the data bytes.
async fn write_snapshot<R: AsyncRead + Unpin>(
    shared: &Shared,
    peer: &Peer,
    stream: &mut quinn::SendStream,
    message: Message,
    data: &mut R,
) -> Result<u64> {
    let lost = |error: &dyn std::fmt::Display| Error::ConnectionLost {
        reason: error.to_string(),
    };
    let max_payload = shared.config.max_frame_bytes;
    let mut frame = Vec::new();
    let mut sent = write_frame(
        stream,
        &stream_header(shared, peer.id, StreamKind::Snapshot),
        &mut frame,
        max_payload,
    )
    .await?;
    sent += write_frame(
        stream,
        &SnapshotFrame::Start { message },
        &mut frame,
        max_payload,
    )
    .await?;
    let mut buffer = vec![0u8; shared.config.snapshot_chunk_bytes];
    let mut hasher = crc32fast::Hasher::new();
    let mut total_bytes = 0u64;
    loop {
        let read = read_chunk(data, &mut buffer).await?;
        let Some(chunk) = buffer.get(..read).filter(|chunk| !chunk.is_empty()) else {
            break;
        };
        hasher.update(chunk);
        total_bytes += read as u64;
        let chunk_frame = SnapshotFrame::Chunk {
            data: Bytes::copy_from_slice(chunk),
        };
        sent += write_frame(stream, &chunk_frame, &mut frame, max_payload).await?;
        add(&peer.counters.bytes_sent, sent as u64);
        sent = 0;
    }
    let end = SnapshotFrame::End {
        total_bytes,
        crc32: hasher.finalize(),
    };
    sent += write_frame(stream, &end, &mut frame, max_payload).await?;
    add(&peer.counters.bytes_sent, sent as u64);
    stream.finish().map_err(|e| lost(&e))?;
    Ok(total_bytes)
}

/// Receives one snapshot (after the stream header) and hands it to the node.
pub(crate) async fn receive_snapshot(shared: &Shared, peer: &Peer, mut reader: FrameReader) {
    let me = shared.config.node_id;
    let message = match reader.next::<SnapshotFrame>().await {
        Ok(Some((SnapshotFrame::Start { message }, size))) if message.is_between(peer.id, me) => {
            add(&peer.counters.bytes_received, size as u64);
            message
        }
        _ => return reader.stop(STOP_REFUSED),
    };
    let (events, receiver) = mpsc::channel(shared.config.snapshot_chunks_buffered_max);
    let incoming = IncomingSnapshot {
        from: peer.id,
        message,
        events: receiver,
        finished: false,
    };
    if shared.snapshot_tx.try_send(incoming).is_err() {
        add(&peer.counters.receive_drops, 1);
        return reader.stop(STOP_REFUSED);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut received = 0u64;
    let outcome = loop {
        match reader.next::<SnapshotFrame>().await {
            Ok(Some((SnapshotFrame::Chunk { data }, size))) => {
                add(&peer.counters.bytes_received, size as u64);
                hasher.update(&data);
                received += data.len() as u64;
                if events.send(SnapshotEvent::Chunk(data)).await.is_err() {
                    // The node dropped the snapshot.
                    return reader.stop(STOP_REFUSED);
                }
            }
            Ok(Some((SnapshotFrame::End { total_bytes, crc32 }, _))) => {
                let computed = hasher.clone().finalize();
                break if total_bytes != received {
                    SnapshotEvent::Failed(format!(
                        "sender wrote {total_bytes} bytes, received {received}"
                    ))
                } else if crc32 != computed {
                    SnapshotEvent::Failed(format!(
                        "crc32 {crc32:#010x} sent, {computed:#010x} received"
                    ))
                } else {
                    add(&peer.counters.snapshots_received, 1);
                    SnapshotEvent::Done
                };
            }
            Ok(Some((SnapshotFrame::Start { .. }, _))) => {
                break SnapshotEvent::Failed("second Start frame".into());
            }
            Ok(None) => break SnapshotEvent::Failed("stream finished before End".into()),
            Err(error) => break SnapshotEvent::Failed(error.to_string()),
        }
    };
    let _ = events.send(outcome).await;
}
