//! Log matching (Raft Figure 3, §5.3): if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index.
//!
//! Two checks. [`check`] compares the logs of one moment pairwise. [`LogMatching`] also
//! compares across time, so that compaction cannot hide a divergence: an entry `(index, term)`
//! is created once, by the one leader of `term`, after a fixed predecessor; so wherever and
//! whenever it appears, it must carry the same command and follow an entry of the same term
//! (by induction, the same prefix).

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::collections::BTreeMap;

/// What is known of one entry `(group, index, term)`: its payload hash, the term of the entry
/// before it (once seen in the same log) and the first replica seen with it.
type Known = (u64, Option<Term>, NodeId);

/// Every entry seen in any log.
#[derive(Debug, Default)]
pub struct LogMatching {
    seen: BTreeMap<(ShardId, LogIndex, Term), Known>,
}

impl LogMatching {
    /// Records `node`'s current log of `group` and compares it with every entry seen before.
    pub fn observe(
        &mut self,
        group: ShardId,
        node: NodeId,
        log: &LogView,
    ) -> Result<(), Violation> {
        let mut previous: Option<(LogIndex, Term)> = None;
        for &(index, term, hash) in log {
            let before = previous
                .filter(|(prev_index, _)| prev_index.next() == index)
                .map(|(_, prev_term)| prev_term);
            previous = Some((index, term));
            if hash == SNAPSHOT_POINT {
                continue;
            }
            let known = self
                .seen
                .entry((group, index, term))
                .or_insert((hash, before, node));
            if known.0 != hash {
                return Err(violation(
                    group,
                    known.2,
                    node,
                    index,
                    "same index and term, different command",
                ));
            }
            match (known.1, before) {
                (Some(theirs), Some(ours)) if theirs != ours => {
                    return Err(violation(
                        group,
                        known.2,
                        node,
                        index,
                        &format!(
                            "same index and term {term}, but the entries before it have terms \
                             {theirs} and {ours}"
                        ),
                    ));
                }
                (None, Some(ours)) => known.1 = Some(ours),
                _ => {}
            }
        }
        Ok(())
    }
}

/// One replica's log: (index, term, payload hash) in index order.
pub type LogView = Vec<(LogIndex, Term, u64)>;

/// The payload hash of a log's compaction point (the snapshot's last entry, whose command is
/// gone): only its term is compared.
pub const SNAPSHOT_POINT: u64 = u64::MAX;

/// Compares every pair of logs of `group`.
pub fn check(group: ShardId, logs: &[(NodeId, LogView)]) -> Result<(), Violation> {
    for (i, (node_a, log_a)) in logs.iter().enumerate() {
        for (node_b, log_b) in logs.iter().skip(i + 1) {
            check_pair(group, (*node_a, log_a), (*node_b, log_b))?;
        }
    }
    Ok(())
}

fn check_pair(
    group: ShardId,
    a: (NodeId, &LogView),
    b: (NodeId, &LogView),
) -> Result<(), Violation> {
    // Overlapping entries by index, walking down from the highest common index: once a match
    // (same index and term) is found, every lower common entry must be identical.
    let mut matched_at: Option<LogIndex> = None;
    let (mut i, mut j) = (a.1.len(), b.1.len());
    while i > 0 && j > 0 {
        let (index_a, term_a, hash_a) = a.1[i - 1];
        let (index_b, term_b, hash_b) = b.1[j - 1];
        if index_a > index_b {
            i -= 1;
            continue;
        }
        if index_b > index_a {
            j -= 1;
            continue;
        }
        if term_a == term_b {
            if hash_a != hash_b && hash_a != SNAPSHOT_POINT && hash_b != SNAPSHOT_POINT {
                return Err(violation(
                    group,
                    a.0,
                    b.0,
                    index_a,
                    "same index and term, different command",
                ));
            }
            matched_at.get_or_insert(index_a);
        } else if let Some(matched) = matched_at {
            return Err(violation(
                group,
                a.0,
                b.0,
                index_a,
                &format!("terms {term_a} and {term_b} differ below matching index {matched}"),
            ));
        }
        i -= 1;
        j -= 1;
    }
    Ok(())
}

fn violation(group: ShardId, a: NodeId, b: NodeId, index: LogIndex, what: &str) -> Violation {
    Violation {
        check: "log matching",
        detail: format!("group {group}: logs of {a} and {b} at index {index}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(u64, u64)]) -> LogView {
        entries
            .iter()
            .map(|&(i, t)| (LogIndex(i), Term(t), t * 100 + i))
            .collect()
    }

    #[test]
    fn divergence_hidden_by_compaction_is_a_violation() {
        let mut checker = LogMatching::default();
        let g = ShardId(1);
        checker
            .observe(g, NodeId(1), &log(&[(16, 1), (17, 1), (18, 3)]))
            .unwrap();
        // Node 1 compacted through 17; node 2 kept an entry 17 of term 2 and took 18 after it.
        checker
            .observe(g, NodeId(1), &log(&[(18, 3), (19, 3)]))
            .unwrap();
        let diverged = checker.observe(g, NodeId(2), &log(&[(16, 1), (17, 2), (18, 3)]));
        assert!(diverged.is_err_and(|v| v.detail.contains("entries before it")));
    }

    #[test]
    fn divergence_below_a_match_is_a_violation() {
        let good = [
            (NodeId(1), log(&[(1, 1), (2, 1), (3, 2)])),
            (NodeId(2), log(&[(1, 1), (2, 1), (3, 3)])),
        ];
        assert!(check(ShardId(1), &good).is_ok());
        let bad = [
            (NodeId(1), log(&[(1, 1), (2, 1), (3, 2)])),
            (NodeId(2), log(&[(1, 1), (2, 2), (3, 2)])),
        ];
        assert!(check(ShardId(1), &bad).is_err());
    }
}
