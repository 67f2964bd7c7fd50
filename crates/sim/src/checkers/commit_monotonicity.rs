//! Commit monotonicity: a replica's commit index never moves backwards while it runs, and no
//! committed prefix is ever applied differently (the latter is state machine safety's job).
//! After a crash the volatile commit index may restart lower (Raft persists it lazily), so the
//! history is per incarnation.
//!
//! It also checks the commit rule, reported as its own checker (`commit rule`): how a leader's
//! commit index moves (Raft §5.4.2, Figure 8). A leader only counts replicas of entries of its
//! own term, so every advance of its commit index lands on an entry of its term (earlier
//! entries are committed indirectly, beneath it).

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// Last commit index seen per (group, node) in the current incarnation.
#[derive(Debug, Default)]
pub struct CommitMonotonicity {
    last: BTreeMap<(ShardId, NodeId), LogIndex>,
    /// Commit index of each leader at its previous report: (group, leader, term) -> index.
    leader_last: BTreeMap<(ShardId, NodeId, Term), LogIndex>,
}

impl CommitMonotonicity {
    /// Records the commit index a replica reports now.
    pub fn observe(
        &mut self,
        group: ShardId,
        node: NodeId,
        commit: LogIndex,
    ) -> Result<(), Violation> {
        let last = self.last.entry((group, node)).or_insert(commit);
        if commit < *last {
            return Err(Violation {
                check: "commit monotonicity",
                detail: format!("group {group} node {node}: commit went from {last} to {commit}"),
            });
        }
        *last = commit;
        Ok(())
    }

    /// A leader of `term` reports its commit index `commit`, whose entry has `commit_term`.
    pub fn observe_leader(
        &mut self,
        group: ShardId,
        leader: NodeId,
        term: Term,
        commit: LogIndex,
        commit_term: Option<Term>,
    ) -> Result<(), Violation> {
        let previous = self.leader_last.insert((group, leader, term), commit);
        if let Some(previous) = previous
            && commit > previous
            && commit_term != Some(term)
        {
            return Err(Violation {
                check: "commit rule",
                detail: format!(
                    "group {group}: leader {leader} of term {term} advanced commit {previous} -> \
                     {commit}, onto an entry of term {commit_term:?} (only entries of the \
                     leader's term are committed by counting)"
                ),
            });
        }
        Ok(())
    }

    /// A replica restarted (or was recreated): its volatile commit starts over.
    pub fn restarted(&mut self, group: ShardId, node: NodeId) {
        self.last.remove(&(group, node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_is_caught_but_restart_resets() {
        let mut checker = CommitMonotonicity::default();
        checker.observe(ShardId(1), NodeId(1), LogIndex(5)).unwrap();
        assert!(checker.observe(ShardId(1), NodeId(1), LogIndex(4)).is_err());
        checker.restarted(ShardId(1), NodeId(1));
        checker.observe(ShardId(1), NodeId(1), LogIndex(3)).unwrap();
    }

    #[test]
    fn leader_commit_must_land_on_its_own_term() {
        let mut checker = CommitMonotonicity::default();
        let (g, n) = (ShardId(1), NodeId(1));
        checker
            .observe_leader(g, n, Term(4), LogIndex(1), Some(Term(1)))
            .unwrap();
        checker
            .observe_leader(g, n, Term(4), LogIndex(3), Some(Term(4)))
            .unwrap();
        assert!(
            checker
                .observe_leader(g, n, Term(5), LogIndex(3), Some(Term(4)))
                .is_ok()
        );
        assert!(
            checker
                .observe_leader(g, n, Term(5), LogIndex(4), Some(Term(2)))
                .is_err()
        );
    }
}
