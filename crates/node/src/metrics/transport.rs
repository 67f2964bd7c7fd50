//! The transport's per-peer counters and round-trip times and its client-traffic totals
//! (`ringkv_transport::stats`), read at scrape time so nothing is counted twice.

use super::counter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use ringkv_transport::Transport;
use std::sync::{OnceLock, Weak};

/// The transport's own counters, read at scrape time.
#[derive(Debug, Default)]
pub(super) struct TransportCollector {
    /// The node's transport, once it exists (held weakly: the node owns it).
    pub(super) transport: OnceLock<Weak<Transport>>,
}

/// One per-peer counter family: `(name, help, value of a link in direction)`.
type PeerCounter = (
    &'static str,
    &'static str,
    fn(&ringkv_transport::PeerStats) -> [(&'static str, u64); 2],
);

/// One per-peer counter without direction: `(name, help, value of a link)`.
type PeerSingle = (
    &'static str,
    &'static str,
    fn(&ringkv_transport::PeerStats) -> u64,
);

impl Collector for TransportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(transport) = self.transport.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let links = transport.peer_links();
        let totals = transport.stats();
        drop(transport);
        let families: [PeerCounter; 3] = [
            (
                "transport_bytes",
                "Raft bytes per peer and direction",
                |s| [("sent", s.bytes_sent), ("received", s.bytes_received)],
            ),
            (
                "transport_messages",
                "Raft messages per peer and direction",
                |s| [("sent", s.messages_sent), ("received", s.messages_received)],
            ),
            (
                "transport_dropped_messages",
                "Raft messages the transport dropped per peer and direction (queues full)",
                |s| [("sent", s.send_drops), ("received", s.receive_drops)],
            ),
        ];
        for (name, help, values) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (peer, stats, _) in &links {
                let peer = peer.get().to_string();
                for (direction, value) in values(stats) {
                    let labels = [("peer", peer.as_str()), ("direction", direction)];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let singles: [PeerSingle; 2] = [
            (
                "transport_reconnects",
                "Connections re-established per peer",
                |s| s.reconnects,
            ),
            (
                "transport_connect_failures",
                "Failed connection attempts per peer",
                |s| s.connect_failures,
            ),
        ];
        for (name, help, value) in singles {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (peer, stats, _) in &links {
                let peer = peer.get().to_string();
                ConstCounter::new(value(stats))
                    .encode(family.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        let mut rtt = encoder.encode_descriptor(
            "transport_rtt_seconds",
            "Smoothed round-trip time per connected peer (QUIC)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (peer, _, round_trip) in &links {
            if let Some(round_trip) = round_trip {
                let peer = peer.get().to_string();
                ConstGauge::new(round_trip.as_secs_f64())
                    .encode(rtt.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        counter(
            &mut encoder,
            "transport_handshake_failures",
            "TLS handshakes that failed (peers and clients)",
            totals.handshake_failures,
        )?;
        counter(
            &mut encoder,
            "client_requests",
            "Native client requests received",
            totals.client_requests,
        )?;
        counter(
            &mut encoder,
            "client_busy",
            "Native client requests refused as busy",
            totals.client_busy,
        )?;
        counter(
            &mut encoder,
            "client_timeouts",
            "Native client requests that timed out",
            totals.client_timeouts,
        )?;
        let limits = [
            (
                "transport_connections_refused",
                "Connections refused before the handshake (limits.max_connections)",
                totals.connections_refused,
            ),
            (
                "transport_clients_refused",
                "Client connections closed after the handshake (limits.max_client_connections)",
                totals.clients_refused,
            ),
            (
                "transport_address_validations",
                "New connections sent a QUIC Retry to validate their address",
                totals.address_validations,
            ),
            (
                "client_read_timeouts",
                "Client requests not received within limits.client_read_timeout_ms",
                totals.client_read_timeouts,
            ),
            (
                "client_write_timeouts",
                "Client responses not read within limits.client_write_timeout_ms",
                totals.client_write_timeouts,
            ),
            (
                "client_idle_closed",
                "Client connections closed after limits.client_idle_timeout_ms without a request",
                totals.client_idle_closed,
            ),
            (
                "client_bytes_busy",
                "Client requests refused as busy by limits.client_inbound_bytes_max",
                totals.client_bytes_busy,
            ),
            (
                "transport_raft_inbound_budget_drops",
                "Raft batches from peers dropped by limits.raft_inbound_bytes_max",
                totals.raft_inbound_budget_drops,
            ),
        ];
        for (name, help, value) in limits {
            counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}
