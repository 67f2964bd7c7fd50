//! Transport configuration: identity, addresses, and a bound on everything that queues.

use crate::error::{Error, Result};
use ringkv_types::NodeId;
use std::net::SocketAddr;
use std::time::Duration;

/// ALPN protocol of the ringkv wire format. Bump on any wire-format change: peers of different
/// formats then fail the handshake instead of misreading frames.
pub const ALPN: &[u8] = b"ringkv/2";

/// How a node's transport is set up. [`TransportConfig::new`] gives the defaults below.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node.
    pub node_id: NodeId,
    /// The cluster name; certificates name nodes `node-<id>.<cluster>`.
    pub cluster: String,
    /// UDP address to bind (port 0 picks a free port).
    pub bind_addr: SocketAddr,
    /// Raft batches waiting for the node's event loop (default 1024). When full, incoming
    /// batches are dropped and counted; Raft retransmits. Larger absorbs bursts at the cost of
    /// memory (one batch is up to `max_frame_bytes`) and staler messages.
    pub raft_inbound_batches_max: usize,
    /// Incoming snapshots waiting for the node (default 4). Extra snapshots are refused.
    pub snapshot_inbound_max: usize,
    /// Chunks of one incoming snapshot buffered ahead of the node (default 4). When the node
    /// reads slowly, QUIC flow control stops the sender.
    pub snapshot_chunks_buffered_max: usize,
    /// Size of snapshot chunks sent (default 1 MiB).
    pub snapshot_chunk_bytes: usize,
    /// Raft batches queued per peer and stream (control, bulk) before sending (default 1024).
    /// When full, `send` drops the batch and counts it.
    pub peer_queue_batches_max: usize,
    /// Client requests handled at once (default 4096). Beyond it requests are answered `Busy`.
    pub client_inflight_max: usize,
    /// Watch streams open at once on one client connection (default 1024). Beyond it a watch
    /// is refused `Busy`.
    pub watchers_per_connection_max: usize,
    /// Handler time budget when the request names none (default 5 s).
    pub client_request_timeout: Duration,
    /// Largest frame payload accepted or sent (default 16 MiB); checked before allocating.
    pub max_frame_bytes: u64,
    /// QUIC keep-alive interval (default 5 s); must be well below `idle_timeout`.
    pub keep_alive: Duration,
    /// QUIC idle timeout (default 30 s): a silent peer is declared gone after it.
    pub idle_timeout: Duration,
    /// First reconnect delay (default 50 ms); doubles per failure, with jitter, up to
    /// `reconnect_backoff_max`.
    pub reconnect_backoff_min: Duration,
    /// Longest reconnect delay (default 2 s).
    pub reconnect_backoff_max: Duration,
    /// Raft batch bytes (frame sizes) waiting for the node's event loop (default 64 MiB). A
    /// batch that would go beyond it is dropped and counted like a full queue; Raft retransmits.
    pub raft_inbound_bytes_max: u64,
    /// Open connections of any kind, handshakes included, beyond which new ones are refused
    /// before the handshake (default 1280). Keep it above `max_client_connections` by at least
    /// the number of peer nodes: the difference is what peers (and handshakes in progress) can
    /// always use.
    pub max_connections: usize,
    /// Established client connections (any certificate that does not name a node of this
    /// cluster, or none) beyond which a new client connection is closed right after its
    /// handshake (default 1024). Peers are not counted, so clients cannot lock out a restarted
    /// peer.
    pub max_client_connections: usize,
    /// QUIC address validation (a Retry round trip) for incoming connections from addresses
    /// that are not known peer addresses and have not proven they own their address (default
    /// on). Costs new clients one round trip; stops spoofed-address handshake floods.
    pub client_address_validation: bool,
    /// Request bytes (frame sizes) of client requests in flight, read or being read, at most
    /// (default 64 MiB). The size is taken from a request's frame header before its body is
    /// read; a request that does not fit is answered `Busy` without being buffered. Must be at
    /// least `max_frame_bytes`.
    pub client_inbound_bytes_max: u64,
    /// How long a client has to send a whole request once it opened its stream (default 5 s);
    /// the stream is then reset and its permit freed.
    pub client_read_timeout: Duration,
    /// How long writing a response may take (default 5 s): a client that stops reading loses
    /// the stream instead of holding its permit.
    pub client_write_timeout: Duration,
    /// Largest handler time budget a request may ask for with `timeout_ms` (default 30 s);
    /// larger values are clamped to it.
    pub client_timeout_max: Duration,
    /// A client connection with no request in flight for this long is closed (default 5 min).
    /// Needed because clients send QUIC keep-alives, so the QUIC idle timeout never fires for an
    /// idle but live client. Connections from nodes are exempt.
    pub client_idle_timeout: Duration,
    /// Concurrent client streams a connection may open (default 1024). When exhausted,
    /// `open_bi` waits.
    pub max_concurrent_bidi_streams: u32,
}

impl TransportConfig {
    /// Defaults for `node_id` in `cluster`, bound to `bind_addr`.
    pub fn new(node_id: NodeId, cluster: impl Into<String>, bind_addr: SocketAddr) -> Self {
        Self {
            node_id,
            cluster: cluster.into(),
            bind_addr,
            raft_inbound_batches_max: 1024,
            snapshot_inbound_max: 4,
            snapshot_chunks_buffered_max: 4,
            snapshot_chunk_bytes: 1024 * 1024,
            peer_queue_batches_max: 1024,
            client_inflight_max: 4096,
            watchers_per_connection_max: 1024,
            client_request_timeout: Duration::from_secs(5),
            max_frame_bytes: 16 * 1024 * 1024,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            raft_inbound_bytes_max: 64 * 1024 * 1024,
            max_connections: 1280,
            max_client_connections: 1024,
            client_address_validation: true,
            client_inbound_bytes_max: 64 * 1024 * 1024,
            client_read_timeout: Duration::from_secs(5),
            client_write_timeout: Duration::from_secs(5),
            client_timeout_max: Duration::from_secs(30),
            client_idle_timeout: Duration::from_secs(300),
            max_concurrent_bidi_streams: 1024,
        }
    }

    /// Checks the relations between values.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: &str| {
            Err(Error::Config {
                reason: reason.to_string(),
            })
        };
        if !self.node_id.is_some() {
            return fail("node_id must not be 0");
        }
        if self.cluster.is_empty()
            || !self
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return fail("cluster must be a non-empty DNS label (letters, digits, '-', '.')");
        }
        let queues = [
            self.raft_inbound_batches_max,
            self.snapshot_inbound_max,
            self.snapshot_chunks_buffered_max,
            self.peer_queue_batches_max,
            self.client_inflight_max,
            self.watchers_per_connection_max,
            self.max_connections,
            self.max_client_connections,
        ];
        if queues.contains(&0) {
            return fail("queue bounds must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes as u64 + 64 > self.max_frame_bytes
        {
            return fail("snapshot_chunk_bytes must be positive and fit in max_frame_bytes");
        }
        if self.max_frame_bytes >= u64::from(u32::MAX) {
            return fail("max_frame_bytes must be below 4 GiB");
        }
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return fail("keep_alive must be positive and below idle_timeout");
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return fail(
                "reconnect_backoff_min must be positive and at most reconnect_backoff_max",
            );
        }
        if self.raft_inbound_bytes_max < self.max_frame_bytes {
            return fail("raft_inbound_bytes_max must be at least max_frame_bytes");
        }
        if self.client_inbound_bytes_max < self.max_frame_bytes {
            return fail("client_inbound_bytes_max must be at least max_frame_bytes");
        }
        let timeouts = [
            ("client_read_timeout", self.client_read_timeout),
            ("client_write_timeout", self.client_write_timeout),
            ("client_timeout_max", self.client_timeout_max),
            ("client_idle_timeout", self.client_idle_timeout),
            ("client_request_timeout", self.client_request_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
            return fail(&format!("{name} must be positive"));
        }
        if self.client_request_timeout > self.client_timeout_max {
            return fail("client_request_timeout must be at most client_timeout_max");
        }
        if self.max_concurrent_bidi_streams == 0 {
            return fail("max_concurrent_bidi_streams must be at least 1");
        }
        Ok(())
    }
}

/// The DNS name a node's certificate carries and peers dial with: `node-<id>.<cluster>`.
pub fn node_server_name(node: NodeId, cluster: &str) -> String {
    format!("node-{}.{}", node.get(), cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let config = TransportConfig::new(NodeId(1), "test", addr);
        assert!(config.validate().is_ok());
        let mut bad = config.clone();
        bad.keep_alive = bad.idle_timeout;
        assert!(matches!(bad.validate(), Err(Error::Config { .. })));
        let mut bad = config.clone();
        bad.peer_queue_batches_max = 0;
        assert!(bad.validate().is_err());
        let mut bad = config;
        bad.node_id = NodeId::NONE;
        assert!(bad.validate().is_err());
        assert_eq!(node_server_name(NodeId(7), "prod"), "node-7.prod");
    }
}
