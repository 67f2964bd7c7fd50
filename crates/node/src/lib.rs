//! `ringkvd`, the ringkv server: one process per node, one data dir, one QUIC endpoint.
//!
//! The node wires the sans-IO Raft core ([`ringkv_raft`]), the fjall store ([`ringkv_storage`])
//! and the QUIC transport ([`ringkv_transport`]) together:
//!
//! - [`config`]: the TOML configuration (`ringkvd --config FILE`), validated at start;
//!   [`config_layers`] layers flags and `RINGKV_*` environment variables over it.
//! - [`bootstrap`]: the deterministic initial shard map every initial node computes alike.
//! - [`core`]: the sans-IO node core (the seam between deciding and doing; see its doc).
//! - [`event_loop`]: one task owns all local groups; group commit (one fsync per turn, the next
//!   turn prepared while the previous batch syncs), one send per peer per turn, batched apply,
//!   client reads and writes, snapshot transfers. `docs/node.md` has the turn diagram.
//! - [`service`]: the client service handler (bounded queue into the loop, `Busy` when full).
//! - [`http`]: the HTTP API, `/metrics`, `/livez` and `/readyz` on `http_addr`; [`health`]
//!   is what the loop publishes for them once per tick.
//! - [`pd_host`] and [`agent`]: the placement driver hosted in group 0, and the task that
//!   talks to it on the node's behalf.
//!
//! # Decisions
//!
//! - **Placement driver.** Group 0 (`ShardId::PD`) runs on every node of `initial_cluster`.
//!   Its replicated state is a [`ringkv_pd::PdState`] ([`pd_host`]): every initial node builds
//!   the same initial state from its config and saves it (`pd/state`) with group 0's creation;
//!   committed `LogCommand::Pd` entries are applied to it and the state is saved with the
//!   applied index; snapshots carry it. The PD leader stamps log time into commands and
//!   proposes ticks; it serves `AdminRequest::Pd` / `PdState`. `GetShardMap` and `GetNodes`
//!   answer from the PD state (a node without PD: from the copy its agent fetches).
//! - **Node agent** ([`agent`]): a task per node heartbeats to PD, reports the shards the node
//!   leads, executes PD's orders through the shard-leader admin requests, refreshes transport
//!   peers, and registers a node that joins (`join` in the config).
//! - **Raft member ids are not node ids**: `member_id(node, incarnation)`; a node removed from
//!   a shard and added back rejoins under a NEW member id (the simulator showed that reusing
//!   one breaks safety). Messages are sent to `member_node(to)`; a message for a stale member
//!   is dropped. See [`event_loop`] (membership) and `docs/node.md`.
//! - **Descriptors are owned by each shard's log**: saved locally ([`replica_meta`]) atomically
//!   with the apply of the configuration or split entry that changes them, or with the snapshot
//!   that carries them; a node runs the groups of its local descriptors. Every new group starts
//!   at log index 5 ([`bootstrap::INITIAL_LOG_INDEX`]), so an empty replica gets a snapshot.
//! - **Membership, leader transfer and splits** are admin requests the shard leader executes
//!   (`ChangeReplica`, `TransferLeader`, `SplitShard`); replicas are created by a message for a
//!   member of this node (uninitialized until a snapshot) and removed with a tombstone.
//! - **First election.** A brand-new group's preferred leader (see [`bootstrap`]) campaigns once
//!   at start, so all shards have leaders within about one round trip instead of one election
//!   timeout. Never on a group that has run before: a leader may hold a lease.
//! - **Initial configuration.** A new group's configuration is its compaction point at index 5,
//!   written with the group ([`node::create_group_batch`]). [`group::NodeStorage`] still
//!   supplies a configuration for a group at index 0 (none is created that way any more).
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
//!   snapshot stream, read chunk by chunk on a blocking thread from a consistent fjall snapshot.
//!   The follower validates and stages it chunk by chunk off the loop (`SnapshotStager`) before
//!   stepping the message; the install's marker goes into the group commit of the Ready that
//!   accepts it and the writer moves the staged data in bounded batches (see `docs/node.md`).
//!   At most `storage.snapshots_inbound_max` / `snapshots_outbound_max` at once.
//! - **Sessions** allow one write in flight per session and shard: the state machine keeps only
//!   the last sequence, so an older one is answered `InvalidRequest` ("superseded").
//! - **Failures.** A failed fsync poisons the store; the loop stops and `ringkvd` exits non-zero
//!   with the error. On SIGTERM/Ctrl-C the loop finishes its turn, waits for the batches in
//!   flight, flushes the store and exits 0.

pub mod agent;
pub mod allocator;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod config_layers;
mod config_schema;
pub mod core;
mod error;
pub mod event_loop;
pub mod group;
pub mod health;
pub mod http;
pub mod inspect;
pub mod kv_read;
pub mod log_command;
pub mod metrics;
pub mod node;
pub mod pd_host;
pub mod pd_records;
pub mod removed_marker;
pub mod replica_meta;
pub mod service;
pub mod store_check;
pub mod store_identity;
pub mod watch;

pub use config::{Endpoint, LogFormat, NodeConfig};
pub use error::{Error, Result};
pub use node::{NodeHandle, TlsReload, start};
