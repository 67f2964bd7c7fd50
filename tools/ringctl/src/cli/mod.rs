//! The command line: the top-level [`Cli`] and its [`Command`]s. The flags every command takes
//! are in `globals.rs`; each group of subcommands has its own file (`kv_command.rs`,
//! `admin_args.rs`, `inspect_args.rs`, `local_command.rs`, `certs_command.rs`). Parsing only:
//! `run.rs` carries the commands out.

mod admin_args;
mod certs_command;
mod globals;
mod inspect_args;
mod kv_command;
mod local_command;

pub use admin_args::{FollowArgs, SchedulerCommand, WaitArgs};
pub use certs_command::{CertsCommand, parse_node_spec};
pub use globals::{Globals, OutputFormat};
pub use inspect_args::{InspectCommand, InspectTarget};
pub use kv_command::KvCommand;
pub use local_command::LocalCommand;

use crate::{admin, auth, user};
use clap::{Parser, Subcommand};
use ringkv_types::{NodeId, ShardId};

/// ringkv admin and data tool.
#[derive(Debug, Parser)]
#[command(name = "ringctl", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A cluster of local processes.
    Local {
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Key-value operations.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Nodes, shards, leaders, terms, commit and applied indexes.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Nodes as the placement driver sees them: address, state, replicas, leaders, disk.
    Nodes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shards: arc, epoch, replicas with roles, leader, size, operator in flight.
    Shards {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Turns the balance schedulers on and follows them until replica counts differ by at most
    /// one and leaders are spread (or nothing is left to move).
    Rebalance {
        /// Only print the counts and what the schedulers would do now.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print JSON (one object per progress line) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Moves SHARD's replica from one node to another (add learner, promote, remove).
    MoveShard {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// The node holding the replica.
        #[arg(long, value_parser = admin::parse_node)]
        from: NodeId,
        /// The node to receive it.
        #[arg(long, value_parser = admin::parse_node)]
        to: NodeId,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Makes the voter on a node the leader of SHARD.
    TransferLeader {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// The new leader's node.
        #[arg(long, value_parser = admin::parse_node)]
        to: NodeId,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Splits SHARD in two (no data is copied).
    SplitShard {
        /// The shard (3 or s3).
        #[arg(value_parser = admin::parse_shard)]
        shard: ShardId,
        /// Ring position of the cut (decimal or 0x hex); default: the leader's hint, else the
        /// middle of the arc.
        #[arg(long, value_parser = admin::parse_position)]
        at: Option<u64>,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Marks node N draining and follows its replicas moving away until it holds none.
    DrainNode {
        /// The node (4 or n4).
        #[arg(value_parser = admin::parse_node)]
        node: NodeId,
        /// Return once the node is marked draining.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Removes node N from the cluster for good; refused while it holds replicas.
    RemoveNode {
        /// The node (4 or n4).
        #[arg(value_parser = admin::parse_node)]
        node: NodeId,
    },
    /// Lists, enables and disables the placement schedulers, and changes their settings.
    Scheduler {
        #[command(subcommand)]
        command: SchedulerCommand,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Users and their roles (admin).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Tokens: log in, rotate the signing key.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Looks inside a node's store: keys and values, the decoded Raft log, hard states and
    /// descriptors. Online through a running node (admin only), or offline on a stopped node's
    /// data dir with --data-dir.
    Inspect {
        #[command(flatten)]
        target: InspectTarget,
        #[command(subcommand)]
        command: InspectCommand,
    },
    /// Prints a shell completion script: `source <(ringctl completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests;
