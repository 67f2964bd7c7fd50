//! ringkv's network layer: one QUIC endpoint per node (quinn, rustls with the ring provider,
//! TLS 1.3 only, mutual TLS over a cluster CA, ALPN `ringkv/2`).
//!
//! - Peer links ([`Transport::send`], [`Transport::send_snapshot`], [`Inbound`]): one connection
//!   per node pair (the smaller id dials), long-lived unidirectional streams of length-prefixed
//!   frames: control (votes, heartbeats), bulk (appends), and one stream per snapshot.
//!   Bounded queues everywhere; a full Raft queue drops and counts, Raft retransmits.
//! - Client service ([`ClientHandler`], [`ClientEndpoint`], [`ClientConnection`]): one stream
//!   per request, a bound on requests in flight (`Busy` beyond it) and a timeout.
//! - [`probe`]: a handshake-free liveness probe (a QUIC version negotiation round trip), so a
//!   client learns within milliseconds that a node died (refused) or froze (silent).
//! - [`certs`]: CA, node and client certificates; [`FaultInjector`]: drop, delay or cut traffic
//!   between node ids in tests.
//!
//! # Decisions
//!
//! - **Identity.** A node certificate names `node-<id>.<cluster>`. The dialer checks that name
//!   through the TLS server name; the acceptor checks the node id announced in every peer stream
//!   header against the client certificate, and closes the connection on a mismatch. Client
//!   certificates (`client-<name>.<cluster>`) reach the client service only.
//! - **One connection per pair.** The node with the smaller id dials, the other accepts (and
//!   refuses peer streams from a larger id). A restarted dialer connects again and the acceptor
//!   replaces the old connection; a restarted acceptor is redialed with jittered exponential
//!   backoff. Both sides must `add_peer` each other; only the dialer needs the address.
//! - **Streams.** Each side opens its own unidirectional streams: `Control` (every message
//!   except appends), `Bulk` (appends), one per snapshot. Order holds within a stream, not
//!   across streams, which Raft tolerates. Client requests use one bidirectional stream each.
//! - **Frames.** Every frame is `ringkv_types::codec` (postcard in the versioned, length-prefixed,
//!   crc32-checked envelope); the length is checked against `max_frame_bytes` before allocating.
//!   Undecodable frames close the connection (code `0x11`), a refused identity `0x10`.
//! - **Back-pressure.** Raft traffic is never awaited: full queues drop and count. Snapshots and
//!   client calls are awaited and paced by QUIC flow control; client handlers are bounded by
//!   `client_inflight_max` (`Busy` beyond it).
//! - **Faults** are applied where traffic is sent, from one table shared by a test's transports.
//! - **Restarts.** The QUIC stateless reset key and the connection-id key are derived from the
//!   node's private key, so they survive a restart: a peer still holding a connection to the
//!   node's previous process gets a valid stateless reset on its next packet and redials at
//!   once, instead of waiting for the idle timeout.

mod accept;
mod any_node;
pub mod certs;
mod client;
mod client_service;
mod config;
mod endpoint;
mod error;
mod fault;
mod frame;
mod inbound;
mod peer;
pub mod probe;
mod receive;
pub mod resolve;
mod snapshot;
mod stats;
mod tls;

pub use client::{ClientConnection, ClientEndpoint, WatchStream};
pub use client_service::{ClientHandler, ResponseFuture, WatchFeed, WatchFuture};
pub use config::{ALPN, TransportConfig, node_server_name};
pub use endpoint::{IdentityReloader, Inbound, SendOutcome, Transport, TransportBuilder};
pub use error::{Error, Result};
pub use fault::{Fault, FaultInjector};
pub use inbound::RaftReceiver;
pub use probe::{Probe, probe};
pub use snapshot::IncomingSnapshot;
pub use stats::{PeerStats, TransportStats};
