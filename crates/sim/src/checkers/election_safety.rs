//! Election safety (Raft Figure 3): at most one leader can be elected in a given term.

use super::Violation;
use ringkv_types::{NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// Remembers who led each (group, term).
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<(ShardId, Term), NodeId>,
}

impl ElectionSafety {
    /// Records that `node` became leader of `group` in `term`.
    pub fn became_leader(
        &mut self,
        group: ShardId,
        term: Term,
        node: NodeId,
    ) -> Result<(), Violation> {
        match self.leaders.insert((group, term), node) {
            Some(previous) if previous != node => Err(Violation {
                check: "election safety",
                detail: format!("group {group} term {term}: leaders {previous} and {node}"),
            }),
            _ => Ok(()),
        }
    }

    /// Distinct (group, term) leaderships seen.
    pub fn leaderships(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_leader_in_a_term_is_a_violation() {
        let mut checker = ElectionSafety::default();
        checker
            .became_leader(ShardId(1), Term(2), NodeId(1))
            .unwrap();
        checker
            .became_leader(ShardId(1), Term(2), NodeId(1))
            .unwrap();
        checker
            .became_leader(ShardId(2), Term(2), NodeId(2))
            .unwrap();
        assert!(
            checker
                .became_leader(ShardId(1), Term(2), NodeId(3))
                .is_err()
        );
    }
}
