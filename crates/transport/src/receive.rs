//! Incoming peer streams: check who sent them, then deliver Raft batches or a snapshot.

use crate::endpoint::Shared;
use crate::error::Error;
use crate::frame::{FrameReader, STREAM_HEADER_MAX_BYTES, StreamHeader, StreamKind};
use crate::inbound::Refused;
use crate::peer::Peer;
use crate::snapshot::receive_snapshot;
use crate::stats::add;
use crate::tls;
use ringkv_types::RaftBatch;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// QUIC application error code: the peer's identity or stream header was refused.
pub(crate) const CLOSE_IDENTITY: u32 = 0x10;
/// QUIC application error code: a frame could not be decoded.
pub(crate) const CLOSE_PROTOCOL: u32 = 0x11;

/// How long a new stream may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn reject(shared: &Shared, connection: &quinn::Connection, why: &str) {
    add(&shared.counters.peers_rejected, 1);
    warn!(remote = %connection.remote_address(), why, "refusing peer");
    connection.close(CLOSE_IDENTITY.into(), why.as_bytes());
}

/// Reads a peer stream's header, checks the announced identity against the certificate (or
/// against the node we dialed), and serves the stream.
///
/// Only the node with the smaller id dials, so an accepted connection must come from a smaller
/// id; this keeps exactly one connection per pair.
pub(crate) async fn handle_stream(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    stream: quinn::RecvStream,
    verified_peer: Option<NodeId>,
) {
    let mut reader = FrameReader::new(stream, STREAM_HEADER_MAX_BYTES);
    let header = match tokio::time::timeout(HEADER_TIMEOUT, reader.next::<StreamHeader>()).await {
        Ok(Ok(Some((header, _)))) => header,
        // A stream reset (or finished) before its header says nothing about the peer: QUIC
        // discards the data of a reset stream, so a sender that gives up on a stream right
        // after opening it looks exactly like this. Drop the stream, keep the connection.
        Ok(Ok(None)) | Ok(Err(Error::ConnectionLost { .. })) => {
            debug!(remote = %connection.remote_address(), "peer stream ended before its header");
            return;
        }
        Ok(Err(_)) => return reject(&shared, &connection, "malformed stream header"),
        Err(_) => return reject(&shared, &connection, "no stream header in time"),
    };
    let me = shared.config.node_id;
    let identity_ok = header.cluster == shared.config.cluster
        && header.to == me
        && match verified_peer {
            Some(peer) => peer == header.from,
            None => {
                header.from < me
                    && tls::peer_is_node(&connection, header.from, &shared.config.cluster)
            }
        };
    if !identity_ok {
        let error = Error::IdentityMismatch {
            claimed: header.from,
            cluster: header.cluster,
        };
        return reject(&shared, &connection, &error.to_string());
    }
    let peer = shared.peer(header.from);
    if verified_peer.is_none() {
        peer.install(&connection);
    }
    reader.set_max_payload(shared.config.max_frame_bytes);
    match header.kind {
        StreamKind::Control | StreamKind::Bulk => {
            receive_raft(&shared, &connection, &peer, reader).await
        }
        StreamKind::Snapshot => receive_snapshot(&shared, &peer, reader).await,
    }
}

use ringkv_types::NodeId;

/// Delivers Raft batches to the node until the stream ends. A full inbound queue drops the
/// batch (counted); Raft retransmits.
async fn receive_raft(
    shared: &Shared,
    connection: &quinn::Connection,
    peer: &Peer,
    mut reader: FrameReader,
) {
    let me = shared.config.node_id;
    loop {
        match reader.next::<RaftBatch>().await {
            Ok(Some((batch, size))) => {
                add(&peer.counters.bytes_received, size as u64);
                let count = batch.len() as u64;
                if !batch.is_between(peer.id, me) {
                    return reject(
                        shared,
                        connection,
                        "Raft message with a foreign sender or recipient",
                    );
                }
                match shared.raft_tx.try_send(batch, size as u64) {
                    Ok(()) => add(&peer.counters.messages_received, count),
                    Err(Refused::Full) => add(&peer.counters.receive_drops, count),
                    Err(Refused::OverBudget) => {
                        add(&peer.counters.receive_drops, count);
                        add(&shared.counters.raft_inbound_budget_drops, 1);
                    }
                    Err(Refused::Closed) => return,
                }
            }
            Ok(None) => return,
            Err(Error::Codec(error)) => {
                warn!(peer = %peer.id, %error, "undecodable frame; closing the connection");
                connection.close(CLOSE_PROTOCOL.into(), b"undecodable frame");
                return;
            }
            Err(error) => {
                debug!(peer = %peer.id, %error, "peer stream ended");
                return;
            }
        }
    }
}
