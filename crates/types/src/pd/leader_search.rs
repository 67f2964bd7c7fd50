//! Finding the PD leader by asking, written once for its two callers: the node agent
//! (`ringkv-node`, targets are its own loop, known nodes and `join` addresses) and the client
//! (`ringkv-client`, targets are node ids). Any node answers a PD call it cannot serve with
//! `NotLeader { leader_hint }`; the caller asks the node that answered last time first, then
//! its candidates in order, and follows hints to nodes it has not asked yet in this round. The
//! I/O, the time budget and the backoff stay with the caller: this is the bookkeeping only.

/// Where one PD call goes next, across its attempts.
#[derive(Clone, Debug)]
pub struct LeaderSearch<T> {
    /// Targets asked this round, in order.
    asked: Vec<T>,
    /// The target to ask next (the cached leader, a hint, or a retry), before the candidates.
    next: Option<T>,
}

impl<T: Clone + PartialEq> LeaderSearch<T> {
    /// A search that asks `cached` (the node that served the last call) first, if any.
    pub fn new(cached: Option<T>) -> Self {
        Self {
            asked: Vec::new(),
            next: cached,
        }
    }

    /// The next target: the one [`Self::ask_next`] named, else the first of `candidates` not
    /// asked yet this round. `None` when every candidate was asked: the caller gives up or
    /// starts a [`Self::new_round`]. The target returned counts as asked.
    pub fn next_target(&mut self, candidates: impl IntoIterator<Item = T>) -> Option<T> {
        let target = match self.next.take() {
            Some(target) => target,
            None => candidates
                .into_iter()
                .find(|candidate| !self.asked.contains(candidate))?,
        };
        if !self.asked.contains(&target) {
            self.asked.push(target.clone());
        }
        Some(target)
    }

    /// Whether `target` was asked in this round.
    pub fn was_asked(&self, target: &T) -> bool {
        self.asked.contains(target)
    }

    /// Asks `target` next: a leader hint, or the same node again after a busy answer.
    pub fn ask_next(&mut self, target: T) {
        self.next = Some(target);
    }

    /// Follows a `NotLeader` hint unless its node was asked in this round already (then the
    /// hint is stale or the election is still running); returns whether it is followed.
    pub fn follow_hint(&mut self, hint: T) -> bool {
        if self.was_asked(&hint) {
            return false;
        }
        self.next = Some(hint);
        true
    }

    /// A new round: every candidate may be asked again.
    pub fn new_round(&mut self) {
        self.asked.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_leader_then_candidates_in_order_each_once_per_round() {
        let mut search = LeaderSearch::new(Some(3));
        let candidates = || [1, 2, 3, 4];
        assert_eq!(search.next_target(candidates()), Some(3));
        assert_eq!(search.next_target(candidates()), Some(1));
        assert_eq!(search.next_target(candidates()), Some(2));
        assert_eq!(search.next_target(candidates()), Some(4));
        assert_eq!(search.next_target(candidates()), None);
        search.new_round();
        assert_eq!(search.next_target(candidates()), Some(1));
    }

    #[test]
    fn hints_are_followed_once_and_retries_go_to_the_same_node() {
        let mut search = LeaderSearch::new(None);
        let candidates = || [1, 2, 3];
        assert_eq!(search.next_target(candidates()), Some(1));
        // Node 1 names node 3: asked next, out of order.
        assert!(search.follow_hint(3));
        assert_eq!(search.next_target(candidates()), Some(3));
        // Node 3 names node 1, already asked: not followed, the next candidate is.
        assert!(!search.follow_hint(1));
        assert_eq!(search.next_target(candidates()), Some(2));
        // A busy node is asked again when the caller says so.
        search.ask_next(2);
        assert_eq!(search.next_target(candidates()), Some(2));
        assert!(search.was_asked(&2));
        assert_eq!(search.next_target(candidates()), None);
    }
}
