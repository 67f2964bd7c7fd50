//! ringkv's storage: one fjall database per node holding the Raft logs and hard states of all
//! groups, the shards' data and session tables, and snapshots.
//!
//! - [`Store`] opens the database and owns the group-commit writer ([`Store::submit`] a
//!   [`WriteBatchBuilder`], get a [`Ticket`]); see [`WriteBatchBuilder`] for the durability
//!   contract.
//! - [`GroupStorage`] is a cheap per-group handle implementing [`ringkv_raft::Storage`], backed
//!   by an in-memory cache of the log's bounds.
//! - [`kv_machine`] is a data shard's state machine with no I/O (exactly-once sessions,
//!   compare-and-swap, versions, session expiry) over the [`StateStore`] trait, which the fjall
//!   [`Store`] and the [`MemoryState`] (tests, simulator) implement; [`Store::apply`] applies
//!   committed [`Command`]s with the applied index in one atomic batch through it.
//! - [`Store::snapshot_chunks`] streams a consistent snapshot of a shard; [`Store::snapshot_stager`]
//!   (or [`Store::prepare_snapshot`]) validates a stream chunk by chunk into a staging area and
//!   [`WriteBatchBuilder::install_snapshot`] installs it, crash-atomically, with bounded memory.
//! - [`Store::remove_replica`] deletes a removed replica's data in bounded background batches.
//!
//! Layout of the keyspaces: see [`keys`]. Every value carries the
//! [envelope](ringkv_types::envelope) (format version, length, crc32); corruption is a typed
//! [`Error`] naming the shard and index, never a panic and never data.

mod apply;
mod codec;
mod command;
mod config;
mod error;
mod group_state;
mod group_storage;
mod inspect;
pub mod keys;
pub mod kv_machine;
mod mark;
mod memory_log;
mod memory_snapshot;
mod memory_state;
mod removal;
mod scan;
mod session_table;
mod snapshot_chunk;
mod snapshot_install;
mod snapshot_move;
mod snapshot_reader;
mod snapshot_stager;
mod space;
mod state_store;
mod store;
mod store_meta;
mod store_shared;
mod value;
mod write_batch;
mod write_buffer;
mod writer;

pub use command::{
    Command, CommandResult, KEY_BYTES_MAX, Operation, OperationResult, SessionRecord,
    SessionRequest, VALUE_BYTES_MAX,
};
pub use config::StoreConfig;
pub use error::{Error, LostShard, Result};
pub use group_state::AppliedState;
pub use group_storage::GroupStorage;
pub use inspect::GroupRecords;
pub use kv_machine::SessionExpiry;
pub use mark::MARK_FILE;
pub use memory_log::MemoryLog;
pub use memory_snapshot::MemorySnapshot;
pub use memory_state::MemoryState;
pub use removal::RemovalHandle;
pub use scan::{ExpiredKeys, ScanItem, ScanPage, ScanRequest};
pub use snapshot_install::{InstallFault, PreparedSnapshot};
pub use snapshot_reader::SnapshotChunks;
pub use snapshot_stager::SnapshotStager;
pub use space::SpaceStatus;
pub use state_store::{ApplyBatch, META_NAME_BYTES_MAX, StateStore};
pub use store::{DataSize, Store};
pub use store_meta::NodeIdentity;
pub use value::Versioned;
pub use write_batch::WriteBatchBuilder;
pub use writer::{Durable, Ticket};
