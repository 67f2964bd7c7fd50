//! Errors of the transport crate.
//!
//! [`Error::is_retryable`] separates conditions that pass (a peer restarting, a lost connection,
//! a timeout, a full queue) from fatal ones (bad certificates or configuration).

use ringkv_types::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;
use thiserror::Error;

/// What went wrong in the transport.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid.
    #[error("invalid transport configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file (certificates, keys) failed.
    #[error("{action} {path}: {source}")]
    File {
        /// What was being done ("read", "write", "create").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A TLS configuration could not be built (bad certificate or key, unsupported parameters).
    #[error("TLS configuration: {reason}")]
    Tls {
        /// What rustls or quinn reported.
        reason: String,
    },
    /// Binding the UDP socket failed.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A frame could not be encoded or decoded: the peer is incompatible or the stream is corrupt.
    /// The connection is closed.
    #[error("codec: {0}")]
    Codec(#[from] ringkv_types::Error),
    /// Dialing a peer failed (unreachable, handshake refused). Retried with backoff.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// What quinn reported.
        reason: String,
    },
    /// The connection was lost, or a stream operation failed. A peer that rejects our certificate
    /// may only be noticed here, on the first stream operation after `connect()` succeeded.
    #[error("connection lost: {reason}")]
    ConnectionLost {
        /// What quinn reported.
        reason: String,
    },
    /// A peer announced a node id or cluster its certificate does not name.
    #[error(
        "peer claims to be {claimed} of cluster {cluster:?} but its certificate does not say so"
    )]
    IdentityMismatch {
        /// The node id the peer announced.
        claimed: NodeId,
        /// The cluster the peer announced.
        cluster: String,
    },
    /// The call did not finish in time.
    #[error("timed out after {after_ms} ms")]
    Timeout {
        /// The timeout that elapsed.
        after_ms: u64,
    },
    /// A snapshot stream ended early or failed its length or checksum check.
    #[error("snapshot from {from} aborted: {reason}")]
    SnapshotAborted {
        /// The sender.
        from: NodeId,
        /// Why.
        reason: String,
    },
    /// Reading the snapshot data to send failed.
    #[error("reading snapshot data: {source}")]
    SnapshotSource {
        /// The cause.
        source: std::io::Error,
    },
    /// A `host:port` address did not resolve (DNS). Retried with backoff like a failed dial.
    #[error("resolve {addr}: {reason}")]
    Resolve {
        /// The address as written.
        addr: String,
        /// What the resolver reported.
        reason: String,
    },
}

impl Error {
    /// Whether retrying later (after backoff, reconnect, or rerouting) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::ConnectionLost { .. }
                | Error::Timeout { .. }
                | Error::SnapshotAborted { .. }
                | Error::Resolve { .. }
        )
    }
}

/// Result with the transport's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
