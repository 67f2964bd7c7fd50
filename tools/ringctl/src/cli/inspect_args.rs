//! The arguments of `ringctl inspect`: which store to read and what to show.

use crate::admin;
use clap::{Args, Subcommand};
use ringkv_types::{NodeId, ShardId};
use std::path::PathBuf;

/// Which store `inspect` reads.
#[derive(Debug, Args)]
pub struct InspectTarget {
    /// Read this stopped node's data dir instead of asking a running node (refused while a
    /// node runs on it).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "node")]
    pub data_dir: Option<PathBuf>,
    /// The running node to ask (default: the first endpoint).
    #[arg(long, global = true, value_parser = admin::parse_node)]
    pub node: Option<NodeId>,
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// The node's identity and one line per shard: term, vote, commit, applied, log bounds.
    Status,
    /// Keys and values in storage order, of one shard or of every local shard.
    Data {
        /// One shard (3 or s3); default: every shard.
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: Option<ShardId>,
        /// Most keys to show (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Decoded Raft log entries of one shard: index, term, kind and command.
    Raft {
        /// The shard (3, s3, or 0 / pd for the placement driver).
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: ShardId,
        /// First index to show (default: the first in the log).
        #[arg(long, value_name = "INDEX")]
        from: Option<u64>,
        /// Most entries to show (at most 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Hard state, applied index, compaction point, configuration, log bounds and descriptor
    /// per shard.
    Meta {
        /// One shard; default: every shard with records.
        #[arg(long, value_parser = admin::parse_shard_or_pd)]
        shard: Option<ShardId>,
    },
}
