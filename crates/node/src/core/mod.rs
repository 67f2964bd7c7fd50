//! The node core: the part of the node that decides, with no I/O (sans-IO, like
//! [`ringkv_raft`] for one group and quinn-proto for QUIC). The tokio event loop
//! ([`crate::event_loop`]) is its driver: it moves bytes and time between the core and the
//! real transport, store and agent.
//!
//! # The seam
//!
//! **Inputs** (each a method call on the core, never a wait):
//! - peer Raft messages (already decoded and validated at the node boundary);
//! - client requests, each with a request id the driver maps back to its connection;
//! - ticks (counted by the driver from the monotonic clock, see `event_loop/clock.rs`) and a
//!   log-time value in milliseconds for stamping proposals (the driver reads the wall clock);
//! - "batch N is durable" from the group-commit writer;
//! - snapshot results: a received snapshot validated and staged off the loop, a sent snapshot
//!   delivered or not;
//! - storage reads through traits: [`ringkv_raft::Storage`] for the log, and
//!   [`ringkv_storage::StateStore`] for the applied state apply reads and writes (implemented
//!   by the fjall store in production and by memory in tests and the simulator).
//!
//! **Outputs** (taken by the driver after each input, in order):
//! - one persistence description per turn ([`writes::TurnWrites`]: log entries, hard states,
//!   snapshot installs, compaction points, descriptors, PD state), tied to the Readies it
//!   makes durable ([`persist::PersistQueue`]); the driver writes it as one batch;
//! - messages per peer node ([`outbox::Outbox`]); `InstallSnapshot` messages come out apart,
//!   as snapshot-send tasks (the driver streams the data);
//! - replies to client requests;
//! - replica removals to start once their barrier batch is durable.
//!
//! **Stays in the driver**, because it is I/O or time: the tokio `select!` over channels, the
//! ticket-waiter thread, reading the monotonic and wall clocks, the QUIC transport and its
//! fault table, snapshot streaming and staging threads and their bandwidth limiter, metrics
//! and `/readyz` publishing, the node agent, and `Inspect` scans on a blocking thread.
//!
//! # Rules the core keeps
//! - **Persist before acknowledge**: messages a Ready holds back (`persisted_messages`) and
//!   `on_persisted` wait for the batch holding its writes, and batches become durable in the
//!   order they were submitted ([`persist::PersistQueue`]).
//! - **Apply only durable entries**: committed entries come from the Raft core only once they
//!   are durable on this node; apply is deterministic from the log alone (log time is in the
//!   entries, never read from the clock), so every replica's state machine agrees.
//! - **One state machine per group** ([`machine::StateMachine`]): data shards apply KV
//!   commands, session expiry and splits; group 0 applies placement-driver commands. The kind
//!   is decided once, when the group is created, instead of comparing shard ids on every path.
//!
//! # Status
//! In the core so far: [`node_core::NodeCore`] owns the local groups, their dirty set, the
//! tombstones, the outbox and the replies; [`route`] decides where each peer message goes;
//! the request path answers by [`replies::RequestId`] (the driver keeps the callers); the
//! state-machine type ([`machine`], [`pd_machine`]), the persistence ordering ([`persist`]) and
//! the decoding of committed entries into apply steps ([`apply_plan`]). The core's state holds
//! no `Instant` ([`time::Mono`] is passed in) and key material comes through
//! [`entropy::KeySource`]. Apply runs here ([`apply`]): KV runs, session expiry and a
//! split's parent descriptor are committed through [`ringkv_storage::StateStore`] (the fjall
//! store in `ringkvd`, [`ringkv_storage::MemoryState`] in tests), with the KV and session
//! semantics of [`ringkv_storage::kv_machine`]. Ready handling runs here ([`ready`]): a
//! Ready becomes outbox messages, a place in the [`persist::PersistQueue`] and writes in the
//! turn's persistence description ([`writes::TurnWrites`]), which the driver turns into one
//! fjall batch and the simulator can write into memory. Groups are generic over their durable
//! Raft log (`Group<L>`, `NodeCore<L>`; the fjall `GroupStorage` by default,
//! [`ringkv_storage::MemoryLog`] in tests). The KV request path runs here ([`requests`]);
//! stale reads go back to the driver, and the turn's ReadIndex rounds are issued here.
//! Confirmed reads are served here ([`reads`]) through [`ringkv_storage::StateStore`]
//! (`kv_read::read_now` and `StateStore::scan_page` read the fjall store and memory alike).
//! A received snapshot is a [`staged::StagedSnapshot`] (fjall staging in `ringkvd`, a whole
//! [`ringkv_storage::MemorySnapshot`] in the simulator), checked and kept for its Ready by
//! [`node_core::NodeCore::offer_snapshot`] and installed through the turn's writes
//! ([`writes::GroupWrites::apply_to_state`] for memory). The log compaction trigger is here
//! ([`compaction`]), and the TTL sweep's decision ([`ttl_sweep`]). Planted bugs for the simulator: [`planted`]. The simulator runs
//! `NodeCore<MemoryLog>` for data shards with fixed membership (`ringkv-sim --node-core`,
//! `crates/sim/src/core_world/`). Splits run here ([`split_propose`]: the leader's checks and
//! proposal; [`split`]: applying one in two halves around the driver's I/O: the new group's
//! durable write and opening its log), in `ringkvd` and in the node-core simulator alike.
//! Still methods of the event loop: the other admin requests, replica creation and removal
//! I/O, snapshot streaming and staging I/O, and the PD host's tick. Next: membership changes
//! and leader transfers in the node-core simulator (their execution moves into the core
//! first), then its main world on the core in place of `world.rs`'s own Ready handling.

pub mod answers;
pub mod apply;
pub mod apply_plan;
#[cfg(test)]
mod apply_test;
pub mod compaction;
pub mod entropy;
pub mod liveness;
pub mod machine;
pub mod node_core;
pub mod outbox;
pub mod pd_machine;
pub mod persist;
pub mod planted;
pub mod reads;
pub mod ready;
#[cfg(test)]
mod ready_test;
pub mod replies;
pub mod requests;
#[cfg(test)]
mod requests_test;
pub mod route;
pub mod split;
pub mod split_propose;
#[cfg(test)]
mod split_test;
pub mod staged;
pub mod time;
pub mod ttl_sweep;
pub mod writes;
