//! State machine safety (Raft Figure 3): if a server has applied a log entry at a given index,
//! no other server ever applies a different entry for that index.

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// The entry applied at each (group, index), by whoever applied it first.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<(ShardId, LogIndex), (Term, u64, NodeId)>,
}

impl StateMachineSafety {
    /// Records that `node` applied the entry `(index, term, payload_hash)` of `group`.
    pub fn applied(
        &mut self,
        group: ShardId,
        node: NodeId,
        index: LogIndex,
        term: Term,
        payload_hash: u64,
    ) -> Result<(), Violation> {
        let first = *self
            .applied
            .entry((group, index))
            .or_insert((term, payload_hash, node));
        if (first.0, first.1) != (term, payload_hash) {
            return Err(Violation {
                check: "state machine safety",
                detail: format!(
                    "group {group} index {index}: {} applied term {} but {node} applied term {term}",
                    first.2, first.0
                ),
            });
        }
        Ok(())
    }

    /// The committed entries seen so far for `group`: index -> (term, payload hash).
    pub fn committed(&self, group: ShardId) -> impl Iterator<Item = (LogIndex, Term)> + '_ {
        self.applied
            .range((group, LogIndex::ZERO)..=(group, LogIndex(u64::MAX)))
            .map(|((_, index), (term, _, _))| (*index, *term))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_entry_at_same_index_is_a_violation() {
        let mut checker = StateMachineSafety::default();
        checker
            .applied(ShardId(1), NodeId(1), LogIndex(3), Term(2), 7)
            .unwrap();
        checker
            .applied(ShardId(1), NodeId(2), LogIndex(3), Term(2), 7)
            .unwrap();
        assert!(
            checker
                .applied(ShardId(1), NodeId(3), LogIndex(3), Term(3), 9)
                .is_err()
        );
    }
}
