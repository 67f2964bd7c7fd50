//! The `ringctl local` subcommands: a cluster of local processes.

use crate::local;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Creates (or reuses) a cluster under DIR and runs its nodes in the foreground until
    /// Ctrl-C. Node N listens on 127.0.0.(10+N):7100.
    Up {
        /// Number of nodes: 3 or 5.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// The cluster directory (certificates, node configs and data, ringctl.toml).
        #[arg(long, default_value = "data/local")]
        dir: PathBuf,
        /// The port of every node (each node has its own loopback IP); the HTTP API listens on
        /// this port + 1000 (8100 by default).
        #[arg(long, default_value_t = local::DEFAULT_PORT)]
        port: u16,
    },
    /// Adds a node to the running cluster under DIR (made by `local up`) and runs it in the
    /// foreground until Ctrl-C; `local up` also starts it on its next start.
    AddNode {
        /// The cluster directory.
        #[arg(long, default_value = "data/local")]
        dir: PathBuf,
    },
}
