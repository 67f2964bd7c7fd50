//! Membership changes: one server at a time, learners first.
//!
//! Why not joint consensus: ringkv's placement driver only ever moves one replica at a time
//! (add a learner, let it catch up, promote it, remove the old replica), and any two
//! configurations that differ by one voter have overlapping majorities, so a single-server
//! change is safe without the two-quorum bookkeeping of joint consensus (thesis §4.2). Two rules
//! make it safe in the presence of leader changes (thesis §4.1 and the 2015 raft-dev erratum):
//!
//! 1. A configuration takes effect as soon as its entry is appended to a log, committed or not
//!    (a truncated entry takes its configuration with it).
//! 2. A leader appends a new configuration only when the previous one is committed and it has
//!    committed an entry of its own term.
//!
//! New members join as learners (they receive the log but neither vote nor count toward
//! commit), and are promoted only once caught up, so adding a voter never stalls commits.

use ringkv_types::NodeId;
use ringkv_types::raft::ConfState;

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChange {
    /// Add a node that receives the log but does not vote.
    AddLearner(NodeId),
    /// Make a learner a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

impl ConfChange {
    /// The configuration after this change, or why it is not allowed.
    ///
    /// # Errors
    /// A static reason: adding an existing member, promoting a non-learner, removing a
    /// non-member or the last voter.
    pub fn apply_to(&self, conf: &ConfState) -> Result<ConfState, &'static str> {
        let mut next = conf.clone();
        match *self {
            ConfChange::AddLearner(id) => {
                if !id.is_some() {
                    return Err("node id 0 is not valid");
                }
                if conf.contains(id) {
                    return Err("node is already a member");
                }
                insert_sorted(&mut next.learners, id);
            }
            ConfChange::PromoteLearner(id) => {
                if !conf.is_learner(id) {
                    return Err("only a learner can be promoted");
                }
                next.learners.retain(|&l| l != id);
                insert_sorted(&mut next.voters, id);
            }
            ConfChange::Remove(id) => {
                if !conf.contains(id) {
                    return Err("node is not a member");
                }
                if conf.is_voter(id) && conf.voters.len() == 1 {
                    return Err("cannot remove the last voter");
                }
                next.voters.retain(|&v| v != id);
                next.learners.retain(|&l| l != id);
            }
        }
        Ok(next)
    }
}

fn insert_sorted(list: &mut Vec<NodeId>, id: NodeId) {
    if let Err(position) = list.binary_search(&id) {
        list.insert(position, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState {
            voters: voters.iter().copied().map(NodeId).collect(),
            learners: learners.iter().copied().map(NodeId).collect(),
        }
    }

    #[test]
    fn changes_table() {
        let base = conf(&[1, 2, 3], &[5]);
        let cases: Vec<(&str, ConfChange, Result<ConfState, &str>)> = vec![
            (
                "add learner",
                ConfChange::AddLearner(NodeId(4)),
                Ok(conf(&[1, 2, 3], &[4, 5])),
            ),
            (
                "add existing",
                ConfChange::AddLearner(NodeId(2)),
                Err("node is already a member"),
            ),
            (
                "promote",
                ConfChange::PromoteLearner(NodeId(5)),
                Ok(conf(&[1, 2, 3, 5], &[])),
            ),
            (
                "promote voter",
                ConfChange::PromoteLearner(NodeId(1)),
                Err("only a learner can be promoted"),
            ),
            (
                "remove voter",
                ConfChange::Remove(NodeId(2)),
                Ok(conf(&[1, 3], &[5])),
            ),
            (
                "remove learner",
                ConfChange::Remove(NodeId(5)),
                Ok(conf(&[1, 2, 3], &[])),
            ),
            (
                "remove stranger",
                ConfChange::Remove(NodeId(9)),
                Err("node is not a member"),
            ),
        ];
        for (name, change, expected) in cases {
            assert_eq!(change.apply_to(&base), expected, "{name}");
        }
        assert_eq!(
            ConfChange::Remove(NodeId(1)).apply_to(&conf(&[1], &[])),
            Err("cannot remove the last voter")
        );
    }
}
