//! Majority arithmetic over a set of voters.

use ringkv_types::{LogIndex, NodeId};

/// Votes needed for a majority of `voters` voters.
#[inline]
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest index that a majority of voters have reached: sort the match indexes
/// descending and take the `majority`-th. `match_of` gives each voter's index. Returns
/// `LogIndex::ZERO` for an empty voter set.
pub fn committed_index(
    voters: &[NodeId],
    mut match_of: impl FnMut(NodeId) -> LogIndex,
) -> LogIndex {
    if voters.is_empty() {
        return LogIndex::ZERO;
    }
    // Groups have at most a handful of voters: a small stack array would do, a Vec is simpler.
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| match_of(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes
        .get(majority(voters.len()) - 1)
        .copied()
        .unwrap_or(LogIndex::ZERO)
}

/// The outcome of counting votes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused: the election cannot be won.
    Lost,
    /// Not decided yet.
    Pending,
}

/// Tallies `granted`/`rejected` voter counts out of `voters`.
pub fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let needed = majority(voters);
    if granted >= needed {
        VoteResult::Won
    } else if voters.saturating_sub(rejected) < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_table() {
        let cases: &[(&str, &[u64], u64)] = &[
            ("single voter", &[5], 5),
            ("three agree", &[5, 5, 5], 5),
            ("three, one behind", &[7, 5, 6], 6),
            ("three, two behind", &[9, 1, 2], 2),
            ("four needs three", &[9, 8, 1, 2], 2),
            ("five needs three", &[9, 8, 7, 1, 2], 7),
        ];
        for (name, matches, expected) in cases {
            let voters: Vec<NodeId> = (1..=matches.len() as u64).map(NodeId).collect();
            let got = committed_index(&voters, |id| LogIndex(matches[(id.0 - 1) as usize]));
            assert_eq!(got, LogIndex(*expected), "{name}");
        }
        assert_eq!(committed_index(&[], |_| LogIndex(3)), LogIndex::ZERO);
    }

    #[test]
    fn vote_result_table() {
        let cases = [
            ("3: 2 granted", 3, 2, 0, VoteResult::Won),
            ("3: 1 granted", 3, 1, 1, VoteResult::Pending),
            ("3: 2 rejected", 3, 1, 2, VoteResult::Lost),
            ("4: 2 granted", 4, 2, 0, VoteResult::Pending),
            ("4: 2 rejected", 4, 2, 2, VoteResult::Lost),
            ("1: self", 1, 1, 0, VoteResult::Won),
        ];
        for (name, voters, granted, rejected, expected) in cases {
            assert_eq!(vote_result(voters, granted, rejected), expected, "{name}");
        }
    }
}
