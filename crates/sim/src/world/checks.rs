//! The checks that read the whole world: log matching across replicas and
//! linearizability of the client history.

use super::*;

impl World {
    pub(super) fn check_log_matching(&mut self) -> Result<(), Violation> {
        for group in self.groups.clone() {
            self.check_group_log_matching(group)?;
        }
        Ok(())
    }

    pub(super) fn check_group_log_matching(&mut self, group: ShardId) -> Result<(), Violation> {
        let mut logs: Vec<(NodeId, LogView)> = Vec::new();
        for (id, node) in &self.nodes {
            let Some(raw) = node.replicas.get(&group).and_then(|r| r.raw.as_ref()) else {
                continue;
            };
            let status = raw.status();
            let mut entries: Vec<(LogIndex, Term, u64)> = Vec::new();
            // The compaction point counts as the entry before the first one (its hash is not
            // known; only its term is compared).
            if let Some(replica) = node.replicas.get(&group)
                && let Some(term) = replica.term_at(status.first_index.prev())
            {
                entries.push((status.first_index.prev(), term, SNAPSHOT_POINT));
            }
            let stored = raw
                .entries(status.first_index, status.last_index.next(), u64::MAX)
                .map_err(|e| raft_error(e.to_string()))?;
            entries.extend(
                stored
                    .iter()
                    .map(|e| (e.index, e.term, payload_hash(&e.payload))),
            );
            logs.push((*id, entries));
        }
        log_matching::check(group, &logs)?;
        for (node, log) in &logs {
            self.log_matching.observe(group, *node, log)?;
        }
        Ok(())
    }

    pub(super) fn keyed_operations(&self) -> BTreeMap<(ShardId, Key), Vec<&Operation>> {
        let mut by_key: BTreeMap<(ShardId, Key), Vec<&Operation>> = BTreeMap::new();
        for operation in self.history.operations.iter().filter(|o| !o.discarded) {
            by_key
                .entry((operation.group, operation.op.key()))
                .or_default()
                .push(operation);
        }
        by_key
    }

    /// Checks every key's history. Returns the operations of keys with a verdict, the keys
    /// without one (the search budget ran out even after raising it) and the outcome: the
    /// first key that admits no linearization, else the first undecided key (an undecided key
    /// proves nothing, so it fails the run too, under its own name).
    pub(super) fn check_linearizability(&self) -> (u64, u64, Result<(), Violation>) {
        let mut decided_ops = 0u64;
        let mut undecided: Vec<(ShardId, Key, usize)> = Vec::new();
        let mut outcome = Ok(());
        for ((group, key), operations) in self.keyed_operations() {
            match check_key(&operations) {
                KeyVerdict::Linearizable => decided_ops += operations.len() as u64,
                KeyVerdict::Violation => {
                    decided_ops += operations.len() as u64;
                    if self.verbose {
                        for o in &operations {
                            eprintln!("{o:?}");
                        }
                    }
                    if outcome.is_ok() {
                        outcome = Err(Violation {
                            check: "linearizability",
                            detail: format!(
                                "group {group} key {key}: {} operations admit no linearization",
                                operations.len()
                            ),
                        });
                    }
                }
                KeyVerdict::Inconclusive => {
                    if self.verbose {
                        for o in &operations {
                            eprintln!("{o:?}");
                        }
                    }
                    undecided.push((group, key, operations.len()))
                }
            }
        }
        if outcome.is_ok()
            && let Some(&(group, key, count)) = undecided.first()
        {
            outcome = Err(Violation {
                check: "linearizability inconclusive",
                detail: format!(
                    "group {group} key {key}: the search found no verdict for {count} operations \
                     within its largest budget ({} keys undecided)",
                    undecided.len()
                ),
            });
        }
        (decided_ops, undecided.len() as u64, outcome)
    }
}
