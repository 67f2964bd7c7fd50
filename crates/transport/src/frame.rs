//! Framing on QUIC streams: every frame is one codec frame (envelope + postcard), so a reader
//! learns the payload length from the 9-byte header, checks it against the limit, and only then
//! allocates.
//!
//! Peer streams are unidirectional and long-lived. Each starts with a [`StreamHeader`] frame that
//! says what the stream carries and which node sent it; the receiver checks the sender's
//! certificate names that node before reading further.

use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_types::NodeId;
use ringkv_types::codec;
use ringkv_types::envelope::{self, HEADER_LEN};
use ringkv_types::raft::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest stream header accepted.
pub(crate) const STREAM_HEADER_MAX_BYTES: u64 = 1024;

/// What a peer stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StreamKind {
    /// Votes, heartbeats and responses: small and latency sensitive.
    Control,
    /// Appends: large and throughput bound.
    Bulk,
    /// One snapshot, then the stream ends.
    Snapshot,
}

/// First frame of every peer stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StreamHeader {
    /// What follows.
    pub kind: StreamKind,
    /// The sending node, which its certificate must name.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// The sender's cluster.
    pub cluster: String,
}

/// Frames of a snapshot stream: `Start`, any number of `Chunk`s, `End`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SnapshotFrame {
    /// The `InstallSnapshot` message the data belongs to.
    Start {
        /// The Raft message (its snapshot data may be empty; the data follows in chunks).
        message: Message,
    },
    /// The next piece of data.
    Chunk {
        /// Bytes.
        data: Bytes,
    },
    /// End of data, with totals to check.
    End {
        /// Sum of chunk lengths.
        total_bytes: u64,
        /// crc32 of all chunk data in order.
        crc32: u32,
    },
}

/// Encodes `value` as one frame and writes it.
pub(crate) async fn write_frame<T: Serialize>(
    stream: &mut quinn::SendStream,
    value: &T,
    buffer: &mut Vec<u8>,
    max_payload: u64,
) -> Result<usize> {
    buffer.clear();
    codec::encode_into(value, buffer, max_payload)?;
    stream
        .write_all(buffer)
        .await
        .map_err(|e| Error::ConnectionLost {
            reason: e.to_string(),
        })?;
    Ok(buffer.len())
}

/// Reads frames from one stream, reusing its buffer.
pub(crate) struct FrameReader {
    stream: quinn::RecvStream,
    buffer: Vec<u8>,
    max_payload: u64,
}

impl FrameReader {
    /// A reader accepting payloads up to `max_payload` bytes.
    pub(crate) fn new(stream: quinn::RecvStream, max_payload: u64) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
            max_payload,
        }
    }

    /// Changes the payload limit (after the header, which has a small limit of its own).
    pub(crate) fn set_max_payload(&mut self, max_payload: u64) {
        self.max_payload = max_payload;
    }

    /// The next frame and its size on the wire, or `None` when the sender finished the stream
    /// cleanly between frames.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<(T, usize)>> {
        let mut header = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(error) => {
                return Err(Error::ConnectionLost {
                    reason: error.to_string(),
                });
            }
        }
        let length =
            envelope::peek_length(&header, self.max_payload).map_err(ringkv_types::Error::from)?;
        let total = HEADER_LEN + length;
        self.buffer.clear();
        self.buffer.extend_from_slice(&header);
        self.buffer.resize(total, 0);
        let payload = self
            .buffer
            .get_mut(HEADER_LEN..)
            .ok_or(Error::ConnectionLost {
                reason: "frame buffer shorter than its header".into(),
            })?;
        self.stream
            .read_exact(payload)
            .await
            .map_err(|e| Error::ConnectionLost {
                reason: e.to_string(),
            })?;
        let value = codec::decode(&self.buffer, self.max_payload)?;
        Ok(Some((value, total)))
    }

    /// Tells the sender to stop: we will read no more.
    pub(crate) fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(code.into());
    }
}
