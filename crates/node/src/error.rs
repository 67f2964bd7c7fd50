//! Errors of the node crate.

use std::path::PathBuf;
use thiserror::Error;

impl From<ringkv_storage::Error> for Error {
    fn from(error: ringkv_storage::Error) -> Self {
        Error::Storage(error)
    }
}

impl From<ringkv_transport::Error> for Error {
    fn from(error: ringkv_transport::Error) -> Self {
        Error::Transport(error)
    }
}

impl From<ringkv_raft::Error> for Error {
    fn from(error: ringkv_raft::Error) -> Self {
        Error::Raft(error)
    }
}

/// Why the node could not start or had to stop.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for the node's schema.
    #[error("cannot parse config file {path}: {reason}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser reported (with line and column).
        reason: String,
    },
    /// A configuration field has an invalid value.
    #[error("invalid config field `{field}`: {reason}")]
    ConfigInvalid {
        /// The field, dotted for tables (`raft.tick_ms`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The data dir belongs to another node or cluster.
    #[error("data dir {path} belongs to {found}, not to {expected}")]
    WrongDataDir {
        /// The data dir.
        path: PathBuf,
        /// Identity found on disk.
        found: String,
        /// Identity from the configuration.
        expected: String,
    },
    /// The node's certificate does not name this node of this cluster (`node-<id>.<cluster>`):
    /// peers would refuse it, or take it for another node.
    #[error(
        "certificate {path} is for {found}, but this is node {node} of cluster {cluster:?}; \
         issue it one naming node-{node_id}.{cluster} (`ringctl certs create --node {node_id}=...`)",
        node_id = .node.get()
    )]
    CertificateMismatch {
        /// The certificate file (`tls.cert`).
        path: PathBuf,
        /// Who the certificate names (`node n2`, `client certificate x`, `anonymous`).
        found: String,
        /// This node's id.
        node: ringkv_types::NodeId,
        /// This node's cluster.
        cluster: String,
    },
    /// The storage failed. When [`ringkv_storage::Error::is_fatal`], the disk state is unknown and
    /// the node stopped. Not a `#[source]`: the message already holds the storage error's, and
    /// `ringkvd` prints the chain (`{:#}`), which would repeat it.
    #[error("storage: {0}")]
    Storage(ringkv_storage::Error),
    /// The transport failed to start (certificates, bind). Not a `#[source]`, for the same
    /// reason as `Storage`.
    #[error("transport: {0}")]
    Transport(ringkv_transport::Error),
    /// A Raft group failed (its storage could not be read). Not a `#[source]` either.
    #[error("raft: {0}")]
    Raft(ringkv_raft::Error),
    /// A record written by this node could not be decoded (corruption or a format change).
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The node must stop: e.g. PD assigned this node's address another id than its config's.
    #[error("{reason}")]
    Fatal {
        /// What happened, for the operator.
        reason: String,
    },
    /// This initial node's bootstrap settings differ from those of the cluster it would form
    /// or join (`initial_shards`, `replication_factor`, `initial_cluster`, `[pd]` settings).
    #[error(
        "refusing to start: this node's bootstrap settings differ from {peer}'s: {differences}. \
         Every node of initial_cluster must create the cluster with the same values; fix the \
         config of the odd node(s) (docs/node.md, Bootstrap settings)"
    )]
    BootstrapMismatch {
        /// Which peer (`node 2 (127.0.0.1:7102)`, or `the nodes it can reach`).
        peer: String,
        /// Each differing field with both values.
        differences: String,
    },
    /// An I/O error outside storage (runtime, threads).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A configuration value from the environment or a flag is wrong, or a variable names no
    /// field; also a validation error, with where the offending value came from.
    #[error("config: {reason} (from {origin})")]
    ConfigLayer {
        /// Where the value came from: `environment RINGKV_X`, `flag --x`, `file F`, `default`.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The data dir is not the one this node id ran on: the placement driver recorded another
    /// store incarnation for the node (its data was lost, emptied or replaced). The node must
    /// not rejoin as its old Raft members; it is replaced under a new id instead.
    #[error(
        "refusing to start node {node}: {reason}. Its data dir {path} is not the one node {node} \
         ran on, so it lost its Raft votes and the entries it acknowledged, and it must not \
         rejoin as node {node}. Replace the node instead (docs/deploy.md, \"Replacing a node \
         that lost its data\"): start a new node with a new node_id, `join` and an empty data \
         dir, then `ringctl drain-node {node}` (it waits until the node holds no replica) \
         and `ringctl remove-node {node}`"
    )]
    StoreMismatch {
        /// The node id from the configuration.
        node: u64,
        /// The data dir.
        path: PathBuf,
        /// What the placement driver answered.
        reason: String,
    },
}

/// Result alias for the node crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `ringkvd` prints errors with their chain (`{:#}`); a wrapped transport error must show
    /// its cause once, not twice.
    #[test]
    fn a_transport_error_prints_its_cause_once() {
        let transport = ringkv_transport::Error::File {
            action: "read",
            path: "/etc/ringkv/node.pem".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file xyz"),
        };
        let printed = format!("{:#}", anyhow::Error::from(Error::from(transport)));
        assert_eq!(printed.matches("no such file xyz").count(), 1, "{printed}");
    }
}
