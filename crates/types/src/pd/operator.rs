//! Operators: multi-step plans that change one shard, one Raft membership change at a time.
//!
//! An operator is a list of [`Step`]s for one shard. PD hands the current step to the shard's
//! leader in the answer to its report ([`super::Response::ShardReport`]); the leader carries it
//! out (a conf change, a leader transfer or a split proposal) and a later report shows its
//! effect, which completes the step. Steps are idempotent from the leader's side: the same step
//! is handed out on every report until a report shows it done, so a lost answer or a leader
//! change costs one reporting interval, nothing more.

use crate::{Epoch, NodeId, ReplicaRole, ShardDescriptor, ShardId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An operator's id, unique over the cluster's life (never reused).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperatorId(pub u64);

impl fmt::Debug for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// One change to one shard. Each membership step is exactly one Raft conf change, so a step
/// never leaves a shard with fewer voters than a quorum of its previous configuration.
///
/// | step | done when a report shows | rolled back by |
/// |------|--------------------------|----------------|
/// | `AddLearner` | a replica on `node` | removing that learner (if it ever appears) |
/// | `PromoteLearner` | `node` is a voter | nothing: the shard has one voter too many, which the repair scheduler trims |
/// | `TransferLeader` | `to` is the leader | nothing |
/// | `RemoveReplica` | no replica on `node` | nothing (the shard keeps a replica it would have lost) |
/// | `Split` | the shard's arc ends at `at` | cannot be: a split is one Raft entry, applied or not; the map follows the reports |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Add a learner on `node`. The replica's Raft member id is derived from `(node,
    /// incarnation)`, so a node that once held the shard gets a fresh, empty member.
    AddLearner {
        /// Where the new replica goes.
        node: NodeId,
        /// Fresh incarnation allocated by PD for this replica.
        incarnation: u32,
    },
    /// Promote the learner on `node` to voter. PD hands this out only once the leader reports
    /// the learner caught up (and the node alive), so the new voter does not stall commits.
    PromoteLearner {
        /// The learner's node.
        node: NodeId,
    },
    /// Transfer leadership to the voter on `to`.
    TransferLeader {
        /// The new leader's node.
        to: NodeId,
    },
    /// Remove the replica on `node`. If that replica is the leader, PD first hands out a
    /// `TransferLeader` to another live voter (the step itself stays current). PD refuses to
    /// hand it out while it would leave fewer than the replication factor of voters, or fewer
    /// live voters than before (capped at the replication factor).
    RemoveReplica {
        /// The replica's node.
        node: NodeId,
    },
    /// Split the shard at ring position `at`: the shard keeps `[start, at)`, the new shard
    /// `new_shard` (same replicas) takes `[at, end)`.
    Split {
        /// Id for the right half, allocated by PD.
        new_shard: ShardId,
        /// Ring position of the cut, strictly inside the arc.
        at: u64,
    },
}

impl Step {
    /// Whether the report (`descriptor`, `leader`) shows this step's effect.
    pub fn is_done(&self, descriptor: &ShardDescriptor, leader: NodeId) -> bool {
        match *self {
            Step::AddLearner { node, .. } => descriptor.replica_on(node).is_some(),
            Step::PromoteLearner { node } => descriptor
                .replica_on(node)
                .is_some_and(|r| r.role == ReplicaRole::Voter),
            Step::TransferLeader { to } => leader == to,
            Step::RemoveReplica { node } => descriptor.replica_on(node).is_none(),
            Step::Split { at, .. } => descriptor.arc.end == Some(at),
        }
    }
}

/// Why an operator exists: which scheduler (or person) created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperatorKind {
    /// Replica repair (dead node, missing or excess voters, orphan learners).
    Repair,
    /// Drain a node.
    Drain,
    /// Automatic split.
    Split,
    /// Replica balancing.
    BalanceReplicas,
    /// Leader balancing.
    BalanceLeaders,
    /// Created by an admin command (`ringctl move`, `transfer`, `split`).
    Admin,
    /// Undoes the completed part of a cancelled operator.
    Rollback,
}

/// A plan for one shard, in flight at PD. At most one per shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// Unique id.
    pub id: OperatorId,
    /// The shard it changes.
    pub shard: ShardId,
    /// Who created it.
    pub kind: OperatorKind,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Index of the current step in `steps`.
    pub current: usize,
    /// Log time of creation.
    pub created_ms: u64,
    /// Log time at which the current step became current; the step timeout counts from here.
    pub step_started_ms: u64,
    /// The shard's epoch when the operator was created.
    pub epoch: Epoch,
}

impl Operator {
    /// The current step, or `None` when every step is done.
    pub fn current_step(&self) -> Option<Step> {
        self.steps.get(self.current).copied()
    }

    /// The steps not yet done, current first.
    pub fn remaining(&self) -> &[Step] {
        self.steps.get(self.current..).unwrap_or(&[])
    }

    /// Advances past every step the report shows done, in order. Returns whether the current
    /// step changed.
    pub fn advance(&mut self, descriptor: &ShardDescriptor, leader: NodeId) -> bool {
        let before = self.current;
        while let Some(step) = self.current_step() {
            if !step.is_done(descriptor, leader) {
                break;
            }
            self.current += 1;
        }
        self.current != before
    }

    /// Whether every step is done.
    pub fn is_finished(&self) -> bool {
        self.current >= self.steps.len()
    }

    /// The steps that undo what this operator may already have done, given the shard's current
    /// `descriptor`: a learner it added (or may have added: the `AddLearner` was handed out) and
    /// that is not a voter yet is removed. Everything else stands: a promoted voter is a
    /// complete replica (the repair scheduler trims excess voters), a transferred leadership
    /// is harmless, and a split cannot be undone.
    pub fn rollback_steps(&self, descriptor: &ShardDescriptor) -> Vec<Step> {
        let started = self.steps.get(..=self.current).unwrap_or(&self.steps);
        started
            .iter()
            .filter_map(|step| match *step {
                Step::AddLearner { node, .. }
                    if descriptor
                        .replica_on(node)
                        .is_none_or(|r| r.role == ReplicaRole::Learner) =>
                {
                    Some(Step::RemoveReplica { node })
                }
                _ => None,
            })
            .collect()
    }

    /// The node this operator streams a snapshot to, while it still does: the target of an
    /// `AddLearner` whose learner is not promoted yet.
    pub fn snapshot_target(&self) -> Option<NodeId> {
        let mut target = None;
        for step in self.remaining() {
            match *step {
                Step::AddLearner { node, .. } => target = Some(node),
                Step::PromoteLearner { node } => return Some(node),
                _ => {}
            }
        }
        target
    }
}

/// What PD tells a shard leader to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOrder {
    /// The operator the step belongs to (for logs and `ringctl`).
    pub operator: OperatorId,
    /// The shard.
    pub shard: ShardId,
    /// The descriptor epoch PD based the order on; a leader whose epoch differs should report
    /// again instead of acting.
    pub epoch: Epoch,
    /// What to do.
    pub step: Step,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Replica;
    use crate::ring::Arc;

    fn descriptor(replicas: &[(u64, ReplicaRole)]) -> ShardDescriptor {
        ShardDescriptor {
            id: ShardId(1),
            arc: Arc::FULL,
            epoch: Epoch::default(),
            replicas: replicas
                .iter()
                .map(|&(node, role)| Replica {
                    node: NodeId(node),
                    role,
                    member: crate::member_id(NodeId(node), 1),
                })
                .collect(),
        }
    }

    fn move_operator() -> Operator {
        Operator {
            id: OperatorId(1),
            shard: ShardId(1),
            kind: OperatorKind::Admin,
            steps: vec![
                Step::AddLearner {
                    node: NodeId(4),
                    incarnation: 1,
                },
                Step::PromoteLearner { node: NodeId(4) },
                Step::RemoveReplica { node: NodeId(1) },
            ],
            current: 0,
            created_ms: 0,
            step_started_ms: 0,
            epoch: Epoch::default(),
        }
    }

    use ReplicaRole::{Learner, Voter};

    #[test]
    fn steps_complete_from_reports() {
        let base = descriptor(&[(1, Voter), (2, Voter), (3, Voter)]);
        let with_learner = descriptor(&[(1, Voter), (2, Voter), (3, Voter), (4, Learner)]);
        let promoted = descriptor(&[(1, Voter), (2, Voter), (3, Voter), (4, Voter)]);
        let moved = descriptor(&[(2, Voter), (3, Voter), (4, Voter)]);
        let mut operator = move_operator();
        assert!(!operator.advance(&base, NodeId(1)));
        assert_eq!(operator.snapshot_target(), Some(NodeId(4)));
        assert!(operator.advance(&with_learner, NodeId(1)));
        assert_eq!(operator.current, 1);
        // A report may skip ahead several steps at once.
        assert!(operator.advance(&moved, NodeId(2)));
        assert!(operator.is_finished());
        assert_eq!(operator.snapshot_target(), None);
        let mut operator = move_operator();
        operator.advance(&promoted, NodeId(1));
        assert_eq!(
            operator.current_step(),
            Some(Step::RemoveReplica { node: NodeId(1) })
        );
    }

    #[test]
    fn rollback_removes_only_unpromoted_learners() {
        let cases = [
            ("not added yet", 0, descriptor(&[(1, Voter)]), 1),
            (
                "learner added",
                1,
                descriptor(&[(1, Voter), (4, Learner)]),
                1,
            ),
            ("promoted", 2, descriptor(&[(1, Voter), (4, Voter)]), 0),
        ];
        for (name, current, descriptor, expected) in cases {
            let mut operator = move_operator();
            operator.current = current;
            let steps = operator.rollback_steps(&descriptor);
            assert_eq!(steps.len(), expected, "{name}");
            if expected == 1 {
                assert_eq!(
                    steps,
                    vec![Step::RemoveReplica { node: NodeId(4) }],
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn split_and_transfer_complete() {
        let mut shard = descriptor(&[(1, Voter)]);
        let split = Step::Split {
            new_shard: ShardId(9),
            at: 100,
        };
        assert!(!split.is_done(&shard, NodeId(1)));
        shard.arc = Arc {
            start: 0,
            end: Some(100),
        };
        assert!(split.is_done(&shard, NodeId(1)));
        let transfer = Step::TransferLeader { to: NodeId(2) };
        assert!(!transfer.is_done(&shard, NodeId(1)));
        assert!(transfer.is_done(&shard, NodeId(2)));
    }
}
