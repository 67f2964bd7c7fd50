//! ringkv's placement driver (PD): the state machine of Raft group 0 and its schedulers, as pure
//! code. No I/O, no clock, no randomness: `ringkvd` proposes [`Command`]s to group 0 and applies
//! the committed ones with [`Apply::apply`], in log order, on every PD replica. The commands,
//! answers and the state itself are defined in [`ringkv_types::pd`] (re-exported here), so that
//! clients need not link this crate.
//!
//! # Model
//!
//! [`PdState`] holds the cluster identity, the node registry ([`NodeInfo`]: address, labels,
//! capacity, [`NodeState`], last heartbeat in log time, load), the shard map
//! ([`ringkv_types::ShardMap`]: one descriptor per shard with its epoch), the monotonic id
//! counters (nodes, shards, replica incarnations, operators), the operators in flight (at most
//! one per shard) and the scheduler [`Settings`].
//!
//! Time is log time. Every command that needs the time carries a `now_ms` set by the PD leader
//! that proposed it; applying keeps the largest seen so far ([`PdState::now_ms`]), so every
//! replica agrees on it and it never goes backwards. Ticks mark silent nodes `Down`, cancel
//! stalled operators and run the schedulers. `ringkvd`'s PD leader keeps node liveness in its
//! memory ([`LeaderStats`]) and proposes a [`Command::LeaderTick`] (which carries it) only when
//! applying it would change something ([`LeaderStats::tick`], [`tick_would_act`]), so an idle
//! cluster writes nothing to PD's log (see [`leader_stats`]); [`Command::Tick`] in older logs
//! still applies as before.
//!
//! # Driving it from `ringkvd`
//!
//! * Bootstrap: every initial node applies [`Command::Bootstrap`] (the `initial_cluster` nodes
//!   and the initial map, built from its config alone) to an empty state before group 0
//!   starts, so every PD replica starts from the same state; later nodes propose
//!   [`Command::RegisterNode`] (answered with [`Response::NodeId`]).
//! * Every node sends a [`Command::StoreHeartbeat`] periodically, which the PD leader answers
//!   from memory ([`LeaderStats::handle`]; the answer carries its state: a `Removed` node
//!   should stop); the leader proposes [`Command::NodeHeartbeat`] for it only when its state
//!   changes (a `Down` node heard again, a new capacity).
//! * Every shard leader proposes [`Command::ShardReport`] periodically and after each conf
//!   change or split it applies; the answer ([`Response::ShardReport`]) carries the next
//!   [`StepOrder`] for the shard, which the leader carries out:
//!   [`Step::AddLearner`] → add a learner on `node` (`ringkvd` picks the member id itself,
//!   `member_id(node, conf_ver + 1)`, and ignores `incarnation`; the step is done when a report
//!   shows a replica on `node`); [`Step::PromoteLearner`] → `PromoteLearner`;
//!   [`Step::RemoveReplica`] → `Remove`; [`Step::TransferLeader`] → `transfer_leader`;
//!   [`Step::Split`] → a split proposal with the given new shard id and position. The same
//!   step comes back on every report until a report shows it done, so the leader should ignore
//!   an order while one of its conf changes is still uncommitted, and should ignore orders
//!   whose epoch differs from its own.
//! * `ringctl` proposes admin commands ([`Command::AddOperator`], [`Command::SetNodeState`],
//!   [`Command::SetScheduler`], [`Command::SetSettings`]) and reads the state;
//!   `ringctl rebalance --dry-run` prints [`plan_with`], which it asks the PD leader for
//!   (`AdminRequest::PdPlan`).
//!
//! # Operators, steps, rollback
//!
//! An [`Operator`] is a list of [`Step`]s for one shard; each membership step is one Raft conf
//! change (learners first, one change at a time), so a step never leaves a shard with fewer
//! voters than a quorum of its previous configuration. A move is `AddLearner` → (the leader
//! reports the learner caught up) → `PromoteLearner` → `RemoveReplica`; PD never hands out a
//! `RemoveReplica` that would leave fewer than `replication_factor` voters or fewer live voters
//! than before, and hands out a `TransferLeader` first when the replica to remove is the leader.
//!
//! A step that shows no progress within `operator_step_timeout_ms` of log time cancels its
//! operator (so does [`Command::CancelOperator`]; and a tick abandons at once an operator
//! whose current step waits on a node that went away: an `AddLearner` or a `TransferLeader`
//! to a node no longer `Up`, a `PromoteLearner` on a node no longer alive, a `RemoveReplica`
//! that another voter's silence makes unsafe; repair then trims the silent voter). Cancelling rolls
//! back what cannot stay:
//!
//! * `AddLearner` handed out, learner not yet a voter: a rollback operator removes the learner.
//!   If the learner appears only after the rollback finished, it is an orphan (a learner with no
//!   operator) and the repair scheduler removes it.
//! * `PromoteLearner` done: nothing; the new voter is a full replica. The shard may have one
//!   voter too many, which the repair scheduler trims (preferring silent, then draining nodes).
//! * `TransferLeader`: nothing; leader balancing corrects leadership later.
//! * `RemoveReplica`: nothing; the shard keeps a replica it was about to lose.
//! * `Split`: nothing can be undone: a split is one Raft entry, applied or not. The map follows
//!   the reports either way: the left part's report (with the operator still in flight) or the
//!   right part's own report (even without it) updates the map.
//!
//! A rollback operator that itself times out is dropped; repair picks up what it left.
//!
//! # Schedulers
//!
//! [`plan`] and every tick run the enabled schedulers in priority order: repair, drain, split,
//! balance replicas, balance leaders; each one's rules are documented in its module under
//! `src/scheduler/`. They are pure functions of the state, iterate in id order and break ties by
//! id.
//!
//! # Shard map updates
//!
//! A report whose descriptor has an older epoch than PD's (in either component) is refused with
//! [`Error::StaleDescriptor`]; the same epoch with a different layout is a conflict; a newer
//! epoch replaces PD's descriptor when the arc is unchanged or is the left part of a planned
//! split (the right part is then filed under the operator's new shard id, with epoch zero until
//! that shard reports). A shard PD does not know yet is accepted as the tail of the shard it was
//! split from. The map always covers the ring exactly once.

mod apply;
pub mod auth;
pub mod leader_stats;
mod scheduler;

// The wire and state types live in `ringkv_types::pd` (clients speak to PD without this
// crate): every module and item of it is re-exported here under its old path (`auth` is this
// crate's own module, which re-exports the types' and adds applying its commands).
pub use ringkv_types::pd::*;

pub use apply::{
    Apply, MAX_ADDR_BYTES, MAX_BOOTSTRAP_NODES, MAX_BOOTSTRAP_SHARDS, MAX_CLUSTER_NAME_BYTES,
    MAX_LABEL_BYTES, MAX_LABELS, MAX_REPLICAS,
};
pub use leader_stats::{LeaderStats, Triage, tick_would_act};
pub use scheduler::{move_steps, plan, plan_with, split_position};

/// Raft member ids: `(node << 32) | incarnation`, one definition for the whole project.
pub use ringkv_types::member_id;

#[cfg(test)]
mod apply_test;
#[cfg(test)]
mod leader_stats_test;
#[cfg(test)]
mod liveness_test;
#[cfg(test)]
mod scheduler_test;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
