//! The end-of-run checks of a node-core run: convergence after the heal (one leader per
//! shard; its replicas agree on the applied index, with the core and the store, and on the
//! data) and linearizability of the client history, key by key.

use super::{CoreWorld, fatal, liveness};
use crate::checkers::Violation;
use crate::checkers::linearizability::{KeyVerdict, check_key};
use crate::history::Operation;
use crate::kv::Key;
use ringkv_storage::StateStore;
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

impl CoreWorld {
    /// After the heal phase: every shard has a leader, and its replicas agree on the applied
    /// index and on the data of the shard's arc.
    pub(super) fn check_convergence(&self) -> Result<(), Violation> {
        for descriptor in &self.descriptors {
            let shard = descriptor.id;
            let mut leaders = 0;
            let mut seen: Option<(NodeId, ringkv_types::LogIndex, BTreeMap<Vec<u8>, _>)> = None;
            for replica in &descriptor.replicas {
                let Some(node) = self.nodes.get(&replica.node) else {
                    continue;
                };
                let Some(group) = node.core.as_ref().and_then(|c| c.groups.get(&shard)) else {
                    return Err(liveness(format!(
                        "shard {shard}: node {} is down",
                        replica.node
                    )));
                };
                leaders += u64::from(group.raw.is_leader());
                let applied = group.applied;
                let (lower, upper) = descriptor.arc.storage_bounds();
                let values: BTreeMap<Vec<u8>, _> = node
                    .state
                    .values()
                    .into_iter()
                    .filter(|(k, _)| *k >= lower && upper.as_ref().is_none_or(|u| k < u))
                    .collect();
                let stored = node
                    .state
                    .applied(shard)
                    .map_err(|e| fatal(e.to_string()))?;
                if stored.index != applied {
                    return Err(Violation {
                        check: "state machine safety",
                        detail: format!(
                            "shard {shard} node {}: the core applied {applied}, the store {}",
                            replica.node, stored.index
                        ),
                    });
                }
                match &seen {
                    None => seen = Some((replica.node, applied, values)),
                    Some((other, other_applied, other_values)) => {
                        if *other_applied != applied {
                            if std::env::var_os("RINGKV_SIM_TRACE").is_some() {
                                for replica in &descriptor.replicas {
                                    let status = self.nodes.get(&replica.node).and_then(|n| {
                                        n.core.as_ref()?.groups.get(&shard).map(|g| {
                                            (
                                                g.raw.status(),
                                                g.installing,
                                                g.pending_install.is_some(),
                                            )
                                        })
                                    });
                                    eprintln!("{}: {status:?}", replica.node);
                                }
                            }
                            return Err(liveness(format!(
                                "shard {shard}: node {other} applied {other_applied}, node {} \
                                 {applied} after the heal",
                                replica.node
                            )));
                        }
                        if *other_values != values {
                            return Err(Violation {
                                check: "state machine safety",
                                detail: format!(
                                    "shard {shard}: nodes {other} and {} applied {applied} but \
                                     hold different data",
                                    replica.node
                                ),
                            });
                        }
                    }
                }
            }
            if leaders != 1 {
                return Err(liveness(format!(
                    "shard {shard}: {leaders} leaders after the heal"
                )));
            }
        }
        Ok(())
    }

    /// Linearizability of every key's history (across a split: a key's operations in the
    /// parent shard and in the new shard are one history); an undecided key fails the run
    /// too.
    pub(super) fn check_linearizability(&self) -> (u64, Result<(), Violation>) {
        let mut by_key: BTreeMap<Key, Vec<&Operation>> = BTreeMap::new();
        for operation in self
            .clients
            .history
            .operations
            .iter()
            .filter(|o| !o.discarded && !super::ttl::TtlWorkload::is_ttl_key(o.op.key()))
        {
            by_key
                .entry(operation.op.key())
                .or_default()
                .push(operation);
        }
        let mut checked = 0;
        let mut undecided = BTreeSet::new();
        for (key, operations) in by_key {
            let shards: BTreeSet<ShardId> = operations.iter().map(|o| o.group).collect();
            match check_key(&operations) {
                KeyVerdict::Linearizable => checked += operations.len() as u64,
                KeyVerdict::Violation => {
                    return (
                        checked,
                        Err(Violation {
                            check: "linearizability",
                            detail: format!(
                                "key {key} (shards {shards:?}): {} operations admit no \
                                 linearization",
                                operations.len()
                            ),
                        }),
                    );
                }
                KeyVerdict::Inconclusive => {
                    undecided.insert((shards, key));
                }
            }
        }
        match undecided.first() {
            Some((shards, key)) => (
                checked,
                Err(Violation {
                    check: "linearizability inconclusive",
                    detail: format!("key {key} (shards {shards:?}): no verdict within the budget"),
                }),
            ),
            None => (checked, Ok(())),
        }
    }
}
