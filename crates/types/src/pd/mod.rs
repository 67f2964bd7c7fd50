//! The placement driver's wire and state types: the [`Command`]s proposed to group 0 and their
//! [`Response`]s and [`Error`]s, the replicated [`PdState`] with its read-only queries, and what
//! it holds (nodes, operators, settings, users and keys).
//!
//! They live here, below every crate that talks to PD, so that a client (`ringkv-client`,
//! `ringctl`) can speak to PD without linking its state machine: `ringkv-pd` applies commands
//! (`ringkv_pd::Apply`) and runs the schedulers, and re-exports these modules under their old
//! paths (`ringkv_pd::command`, `ringkv_pd::PdState`, ...). Everything here is on the wire or
//! in PD snapshots: new enum variants and fields go at the END only (older nodes decode them).

pub mod auth;
pub mod command;
pub mod error;
pub mod leader_search;
pub mod node;
pub mod operator;
pub mod settings;
pub mod state;

pub use auth::{AuthCommand, AuthState, Role, SigningKey, User};
pub use command::{
    AdminOperator, Command, IdKind, MAX_HEARTBEAT_SHARDS, NodeRegistration, Response, ShardReport,
    ShardStats, StoreHeartbeat, TickOutcome,
};
pub use error::{Error, InvalidReason, RejectReason, Result};
pub use leader_search::LeaderSearch;
pub use node::{NodeInfo, NodeState, NodeStats};
pub use operator::{Operator, OperatorId, OperatorKind, Step, StepOrder};
pub use settings::{SchedulerKind, Settings};
pub use state::{
    ClusterInfo, IdCounters, KindCounts, OperatorCounts, OperatorEnd, PdState, ShardStatus,
};
