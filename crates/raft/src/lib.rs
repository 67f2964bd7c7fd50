//! ringkv's Raft core: one value per group, no I/O.
//!
//! The core never reads a clock, a socket, a file, an environment variable or an unseeded RNG.
//! Time arrives as [`RawNode::tick`]; messages as [`RawNode::step`]; requests as
//! [`RawNode::propose`], [`RawNode::propose_conf_change`], [`RawNode::read_index`] and
//! [`RawNode::transfer_leader`]. Everything the driver must do comes out as one [`Ready`], whose
//! documentation is the driving contract (persist before acknowledging, apply in order).
//!
//! Features: randomized election timeouts, pre-vote, check-quorum with leader stickiness,
//! a no-op entry on election, pipelined replication with a bounded inflight window, fast
//! backtracking with conflict-term hints, commit of current-term entries only, snapshots and
//! compaction, learners, one-server-at-a-time membership changes ([`ConfChange`] explains the
//! choice), leader transfer, ReadIndex and lease reads.
//!
//! Safety invariants are asserted in release builds: terms never decrease, the commit index
//! never regresses, nothing committed is truncated, `applied <= committed <= last index`.

mod conf_change;
mod config;
mod election;
mod error;
mod follower;
mod inflights;
mod leader;
mod log;
mod mem_storage;
mod progress;
mod quiesce;
mod quorum;
mod raft;
mod raw_node;
mod read_only;
mod rng;
mod storage;
mod unstable;
pub mod validate;

pub use conf_change::ConfChange;
pub use config::Config;
pub use config::PlantedBugs;
pub use error::{Error, Result, StorageError};
pub use mem_storage::MemStorage;
pub use raft::{RaftStats, Role};
pub use raw_node::{RawNode, Ready, SoftState, Status};
pub use read_only::{ReadMode, ReadState};
pub use rng::SplitMix64;
pub use storage::{InitialState, Storage};
