//! Counters: per peer link and for the whole transport. Relaxed atomics; read with `snapshot`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one peer link, as read by [`crate::Transport::peer_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Raft messages written to the peer.
    pub messages_sent: u64,
    /// Frame bytes written to the peer (Raft batches and snapshots).
    pub bytes_sent: u64,
    /// Raft messages received from the peer and handed to the node.
    pub messages_received: u64,
    /// Frame bytes received from the peer.
    pub bytes_received: u64,
    /// Outgoing messages dropped: queue full, connection lost mid-write, or fault injection.
    pub send_drops: u64,
    /// Incoming messages dropped because the node's queue was full (or a snapshot refused).
    pub receive_drops: u64,
    /// Times a connection to the peer replaced an earlier one.
    pub reconnects: u64,
    /// Failed dial attempts.
    pub connect_failures: u64,
    /// Snapshots fully sent.
    pub snapshots_sent: u64,
    /// Snapshots received and handed to the node.
    pub snapshots_received: u64,
}

#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub send_drops: AtomicU64,
    pub receive_drops: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_received: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl PeerCounters {
    pub(crate) fn snapshot(&self) -> PeerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStats {
            messages_sent: get(&self.messages_sent),
            bytes_sent: get(&self.bytes_sent),
            messages_received: get(&self.messages_received),
            bytes_received: get(&self.bytes_received),
            send_drops: get(&self.send_drops),
            receive_drops: get(&self.receive_drops),
            reconnects: get(&self.reconnects),
            connect_failures: get(&self.connect_failures),
            snapshots_sent: get(&self.snapshots_sent),
            snapshots_received: get(&self.snapshots_received),
        }
    }
}

/// Transport-wide counters, as read by [`crate::Transport::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Client requests answered by the handler.
    pub client_requests: u64,
    /// Client requests answered `Busy` because `client_inflight_max` handlers were running.
    pub client_busy: u64,
    /// Client requests answered `Timeout`.
    pub client_timeouts: u64,
    /// Incoming handshakes that failed (no certificate, wrong CA, wrong ALPN).
    pub handshake_failures: u64,
    /// Incoming connections refused because `max_connections` were open.
    pub connections_refused: u64,
    /// Peers refused after the handshake: the announced node id or cluster does not match the
    /// certificate, or a stream header was malformed.
    pub peers_rejected: u64,
    /// Client connections closed after the handshake because `max_client_connections` client
    /// connections were open.
    pub clients_refused: u64,
    /// Incoming connections sent a QUIC Retry to validate their address.
    pub address_validations: u64,
    /// Client request streams reset because the request was not received within
    /// `client_read_timeout`.
    pub client_read_timeouts: u64,
    /// Client responses abandoned because the client did not read them within
    /// `client_write_timeout`.
    pub client_write_timeouts: u64,
    /// Client connections closed after `client_idle_timeout` without a request.
    pub client_idle_closed: u64,
    /// Client requests answered `Busy` because `client_inbound_bytes_max` request bytes were
    /// in flight (before their body was read; also counted in `client_busy`).
    pub client_bytes_busy: u64,
    /// Raft batches from peers dropped because `raft_inbound_bytes_max` bytes were waiting for
    /// the node (also counted in the peer's `receive_drops`, as messages).
    pub raft_inbound_budget_drops: u64,
}

#[derive(Debug, Default)]
pub(crate) struct TransportCounters {
    pub client_requests: AtomicU64,
    pub client_busy: AtomicU64,
    pub client_timeouts: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub connections_refused: AtomicU64,
    pub peers_rejected: AtomicU64,
    pub clients_refused: AtomicU64,
    pub address_validations: AtomicU64,
    pub client_read_timeouts: AtomicU64,
    pub client_write_timeouts: AtomicU64,
    pub client_idle_closed: AtomicU64,
    pub client_bytes_busy: AtomicU64,
    pub raft_inbound_budget_drops: AtomicU64,
}

impl TransportCounters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            client_requests: get(&self.client_requests),
            client_busy: get(&self.client_busy),
            client_timeouts: get(&self.client_timeouts),
            handshake_failures: get(&self.handshake_failures),
            connections_refused: get(&self.connections_refused),
            peers_rejected: get(&self.peers_rejected),
            clients_refused: get(&self.clients_refused),
            address_validations: get(&self.address_validations),
            client_read_timeouts: get(&self.client_read_timeouts),
            client_write_timeouts: get(&self.client_write_timeouts),
            client_idle_closed: get(&self.client_idle_closed),
            client_bytes_busy: get(&self.client_bytes_busy),
            raft_inbound_budget_drops: get(&self.raft_inbound_budget_drops),
        }
    }
}
