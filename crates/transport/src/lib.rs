//! ringkv's network layer: one QUIC endpoint per node (quinn, rustls with the ring provider,
//! TLS 1.3 only, mutual TLS over a cluster CA, ALPN `ringkv/1`).
//!
//! - Peer links ([`Transport::send`], [`Transport::send_snapshot`], [`Inbound`]): one connection
//!   per node pair (the smaller id dials), long-lived unidirectional streams of length-prefixed
//!   frames: control (votes, heartbeats), bulk (appends), and one stream per snapshot.
//!   Bounded queues everywhere; a full Raft queue drops and counts, Raft retransmits.
//! - Client service ([`ClientHandler`], [`ClientEndpoint`], [`ClientConnection`]): one stream
//!   per request, a bound on requests in flight (`Busy` beyond it) and a timeout.
//! - [`certs`]: CA, node and client certificates; [`FaultInjector`]: drop, delay or cut traffic
//!   between node ids in tests.
//!
//! Identity: a node certificate names `node-<id>.<cluster>`. The dialer checks that name through
//! the TLS server name; the acceptor checks the node id announced in every stream header against
//! the client certificate.

pub mod certs;
mod client;
mod client_service;
mod config;
mod endpoint;
mod error;
mod fault;
mod frame;
mod peer;
mod receive;
mod snapshot;
mod stats;
mod tls;

pub use client::{ClientConnection, ClientEndpoint};
pub use client_service::{ClientHandler, ResponseFuture};
pub use config::{ALPN, TransportConfig, node_server_name};
pub use endpoint::{Inbound, SendOutcome, Transport, TransportBuilder};
pub use error::{Error, Result};
pub use fault::{Fault, FaultInjector};
pub use snapshot::IncomingSnapshot;
pub use stats::{PeerStats, TransportStats};
