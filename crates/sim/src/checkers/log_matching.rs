//! Log matching (Raft Figure 3, §5.3): if two logs contain an entry with the same index and
//! term, the logs are identical in all entries up through that index.

use super::Violation;
use ringkv_types::{LogIndex, NodeId, ShardId, Term};

/// One replica's log: (index, term, payload hash) in index order.
pub type LogView = Vec<(LogIndex, Term, u64)>;

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
            if hash_a != hash_b {
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
