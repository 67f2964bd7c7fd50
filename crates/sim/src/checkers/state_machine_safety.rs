//! State machine safety (Raft Figure 3): if a server has applied a log entry at a given index,
//! no other server ever applies a different entry for that index. And each state machine
//! applies the log in order, each entry once: the entry it applies is the one right after its
//! applied index (which only a snapshot or a restart from one moves otherwise).

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// The entry applied at each (group, index), by whoever applied it first.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<(ShardId, LogIndex), (Term, u64, NodeId)>,
}

impl StateMachineSafety {
    /// Records that `node`, whose state machine had applied up to `previous`, applied the entry
    /// `(index, term, payload_hash)` of `group`.
    pub fn applied(
        &mut self,
        group: ShardId,
        node: NodeId,
        previous: LogIndex,
        index: LogIndex,
        term: Term,
        payload_hash: u64,
    ) -> Result<(), Violation> {
        if index != previous.next() {
            let what = if index <= previous {
                "again"
            } else {
                "out of order"
            };
            return Err(Violation {
                check: "state machine safety",
                detail: format!(
                    "group {group}: {node} applied index {index} {what}: its state machine was \
                     at {previous}"
                ),
            });
        }
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
        let (g, i) = (ShardId(1), LogIndex(3));
        checker
            .applied(g, NodeId(1), i.prev(), i, Term(2), 7)
            .unwrap();
        checker
            .applied(g, NodeId(2), i.prev(), i, Term(2), 7)
            .unwrap();
        assert!(
            checker
                .applied(g, NodeId(3), i.prev(), i, Term(3), 9)
                .is_err()
        );
    }

    #[test]
    fn applying_twice_or_out_of_order_is_a_violation() {
        let mut checker = StateMachineSafety::default();
        let g = ShardId(1);
        checker
            .applied(g, NodeId(1), LogIndex(2), LogIndex(3), Term(2), 7)
            .unwrap();
        let twice = checker.applied(g, NodeId(1), LogIndex(3), LogIndex(3), Term(2), 7);
        assert!(twice.is_err_and(|v| v.detail.contains("again")));
        let skipped = checker.applied(g, NodeId(1), LogIndex(3), LogIndex(5), Term(2), 8);
        assert!(skipped.is_err_and(|v| v.detail.contains("out of order")));
    }
}
