//! Leader completeness (Raft Figure 3, §5.4): if a log entry is committed in a given term, it
//! is present in the logs of the leaders of all higher terms.
//!
//! The checker learns "committed in term T" from leaders: when a leader of term T reports
//! commit index C, every entry up to C is committed in term T at the latest. When a replica
//! becomes leader of term T', each entry committed in a term below T' must be in its log (or
//! below its compaction point, covered by its snapshot).

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// Entries known committed: (group, index) -> (entry term, earliest term known committed in).
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<(ShardId, LogIndex), (Term, Term)>,
    /// Per group, the highest index recorded, to skip work.
    high: BTreeMap<ShardId, LogIndex>,
}

impl LeaderCompleteness {
    /// A leader of `leader_term` reports entries up to `commit`; `term_at` reads its log.
    pub fn leader_committed(
        &mut self,
        group: ShardId,
        leader_term: Term,
        commit: LogIndex,
        mut term_at: impl FnMut(LogIndex) -> Option<Term>,
    ) {
        let high = self.high.entry(group).or_insert(LogIndex::ZERO);
        let mut index = high.next();
        while index <= commit {
            if let Some(term) = term_at(index) {
                self.committed
                    .entry((group, index))
                    .or_insert((term, leader_term));
            }
            index = index.next();
        }
        *high = (*high).max(commit);
    }

    /// Of `indexes` (entries known committed, for example applied somewhere), those at or below
    /// the highest commit index a leader of `group` reported that were never recorded: entries
    /// this checker cannot protect.
    pub fn unrecorded(
        &self,
        group: ShardId,
        indexes: impl Iterator<Item = LogIndex>,
    ) -> Vec<LogIndex> {
        let high = self.high.get(&group).copied().unwrap_or(LogIndex::ZERO);
        indexes
            .filter(|&index| index <= high && !self.committed.contains_key(&(group, index)))
            .collect()
    }

    /// `node` just became leader of `group` in `term`; `first_index` is its first log index and
    /// `term_at` reads its log.
    pub fn became_leader(
        &self,
        group: ShardId,
        node: NodeId,
        term: Term,
        first_index: LogIndex,
        mut term_at: impl FnMut(LogIndex) -> Option<Term>,
    ) -> Result<(), Violation> {
        let range = (group, first_index)..=(group, LogIndex(u64::MAX));
        for (&(_, index), &(entry_term, committed_in)) in self.committed.range(range) {
            if committed_in >= term {
                continue;
            }
            if term_at(index) != Some(entry_term) {
                return Err(Violation {
                    check: "leader completeness",
                    detail: format!(
                        "group {group}: leader {node} of term {term} lacks entry {index} (term \
                         {entry_term}) committed in term {committed_in}"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_leader_missing_committed_entry_is_a_violation() {
        let mut checker = LeaderCompleteness::default();
        checker.leader_committed(ShardId(1), Term(2), LogIndex(2), |i| Some(Term(i.get())));
        let complete = checker.became_leader(ShardId(1), NodeId(2), Term(3), LogIndex(1), |i| {
            Some(Term(i.get()))
        });
        assert!(complete.is_ok());
        let missing = checker.became_leader(ShardId(1), NodeId(3), Term(3), LogIndex(1), |i| {
            (i.get() < 2).then_some(Term(1))
        });
        assert!(missing.is_err());
        // A leader of an older term need not have entries committed later.
        let older = checker.became_leader(ShardId(1), NodeId(3), Term(2), LogIndex(1), |_| None);
        assert!(older.is_ok());
    }
}
