//! `ringkvd`, the ringkv server: one process per node, one data dir, one QUIC endpoint.
//!
//! The node wires the sans-IO Raft core ([`ringkv_raft`]), the fjall store ([`ringkv_storage`])
//! and the QUIC transport ([`ringkv_transport`]) together:
//!
//! - [`config`]: the TOML configuration (`ringkvd --config FILE`), validated at start.
//! - [`bootstrap`]: the deterministic initial shard map every initial node computes alike.
//! - [`event_loop`]: one task owns all local groups; group commit (one fsync per turn, the next
//!   turn prepared while the previous batch syncs), one send per peer per turn, batched apply,
//!   client reads and writes, snapshot transfers. `docs/node.md` has the turn diagram.
//! - [`service`]: the client service handler (bounded queue into the loop, `Busy` when full).
//!
//! # Decisions
//!
//! - **Placement driver.** Group 0 (`ShardId::PD`) runs on every node of `initial_cluster`.
//!   Its replicated state is the shard map; the initial map is its state at index 0 and is
//!   saved in the store's meta keyspace (`pd/shard_map`) before any group starts, so a restart
//!   resumes from the same map. `GetShardMap` answers from the local PD replica's applied map.
//!   Nothing changes the map yet (no splits or moves in this version); the log format already
//!   has `LogCommand::SetShardMap` for that.
//! - **Raft member ids are node ids.** This is only safe because membership is static here: the
//!   simulator showed that a node removed from a group and added back must rejoin under a NEW
//!   member id (its old votes and acknowledgements could otherwise be counted again). When
//!   membership changes arrive, replicas need their own ids (`(node, incarnation)`).
//! - **First election.** A brand-new group's preferred leader (see [`bootstrap`]) campaigns once
//!   at start, so all shards have leaders within about one round trip instead of one election
//!   timeout. Never on a group that has run before: a leader may hold a lease.
//! - **Initial configuration.** The core reads a new group's voters from the snapshot metadata at
//!   index 0; the store cannot hold a compaction point at 0, so [`group::NodeStorage`] supplies
//!   the descriptor's voters until the first apply saves them with the applied index.
//! - **Writes** are answered when applied. A write's proposal is matched to its entry by index
//!   and term; a different term at that index means another leader replaced it, answered
//!   `NotLeader` (the client retries with the same session sequence, applied at most once).
//!   Writes without a session are accepted and not deduplicated.
//! - **Reads.** `Linearizable`: one ReadIndex round (`ReadMode::Safe`) per group and turn for all
//!   reads that arrived in it, served once applied reaches the read index. `Lease`: the same with
//!   `ReadMode::Lease` (served at once under a valid lease). `Stale`: any replica, at once, with
//!   its applied index.
//! - **Snapshots.** The core's `InstallSnapshot` carries no data; the leader streams the shard
//!   (`Store::snapshot_chunks`, concatenated self-delimiting envelopes) over the transport's
//!   snapshot stream, and the follower validates the whole stream (`prepare_snapshot`) before
//!   stepping the message; the install goes into the same group commit as the Ready that
//!   accepts it. The stream is read on a blocking thread from a consistent fjall snapshot and
//!   held in memory while sent (bounded by the store's `snapshot_bytes_max`).
//! - **Sessions** allow one write in flight per session and shard: the state machine keeps only
//!   the last sequence, so an older one is answered `InvalidRequest` ("superseded").
//! - **Failures.** A failed fsync poisons the store; the loop stops and `ringkvd` exits non-zero
//!   with the error. On SIGTERM/Ctrl-C the loop finishes its turn, waits for the batches in
//!   flight, flushes the store and exits 0.

pub mod bootstrap;
pub mod config;
mod error;
pub mod event_loop;
pub mod group;
pub mod log_command;
pub mod node;
pub mod replica_meta;
pub mod service;

pub use config::{Endpoint, NodeConfig};
pub use error::{Error, Result};
pub use node::{NodeHandle, start};
