//! Commit monotonicity: a replica's commit index never moves backwards while it runs, and no
//! committed prefix is ever applied differently (the latter is state machine safety's job).
//! After a crash the volatile commit index may restart lower (Raft persists it lazily), so the
//! history is per incarnation.

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId};
use std::collections::BTreeMap;

/// Last commit index seen per (group, node) in the current incarnation.
#[derive(Debug, Default)]
pub struct CommitMonotonicity {
    last: BTreeMap<(ShardId, NodeId), LogIndex>,
}

impl CommitMonotonicity {
    /// Records the commit index a replica reports now.
    pub fn observe(&mut self, group: ShardId, node: NodeId, commit: LogIndex) -> Result<(), Violation> {
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
}
