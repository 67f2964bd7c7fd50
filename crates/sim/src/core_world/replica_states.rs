//! The replica state comparison of node-core runs: every replica of a shard that reaches the
//! same applied index holds the same state there (the data of the shard's arc and its session
//! table). This is state machine safety (Raft §5.4.3: no two servers apply different commands
//! at one index) checked on the applied state itself, during the run, at every index a
//! replica applies up to or installs a snapshot at; the end-of-run convergence check compares
//! the replicas only once, after the heal.

use crate::checkers::Violation;
use ringkv_storage::SessionRecord;
use ringkv_storage::Versioned;
use ringkv_types::{LogIndex, NodeId, ShardId};
use std::collections::BTreeMap;

/// The name of the checker, as violations carry it.
pub const CHECK: &str = "replica state comparison";

/// A shard's applied state on one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardState {
    /// The values of the shard's arc, by storage key.
    pub values: BTreeMap<Vec<u8>, Versioned>,
    /// The session table.
    pub sessions: Vec<(u64, SessionRecord)>,
}

/// What one replica held after applying up to `index`.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The shard.
    pub shard: ShardId,
    /// The node holding the replica.
    pub node: NodeId,
    /// The applied index.
    pub index: LogIndex,
    /// The last index of the replica's durable log (its compaction point when it holds no
    /// entry), for [`super::durable_apply`].
    pub durable_last_index: LogIndex,
    /// The state there.
    pub state: ShardState,
}

/// The first state seen at each `(shard, applied index)`, and who held it.
#[derive(Debug, Default)]
pub struct ReplicaStates {
    seen: BTreeMap<(ShardId, LogIndex), (NodeId, ShardState)>,
    /// Observations compared with one from another replica at the same index.
    pub compared: u64,
}

impl ReplicaStates {
    /// Compares `observation` with the first state seen at its shard and index; keeps it when
    /// it is the first.
    ///
    /// # Errors
    /// The violation when the states differ.
    pub fn check(&mut self, observation: Observation) -> Result<(), Violation> {
        let Observation {
            shard,
            node,
            index,
            state,
            ..
        } = observation;
        let Some((first, expected)) = self.seen.get(&(shard, index)) else {
            self.seen.insert((shard, index), (node, state));
            return Ok(());
        };
        if *first != node {
            self.compared += 1;
        }
        if *expected == state {
            return Ok(());
        }
        Err(Violation {
            check: CHECK,
            detail: format!(
                "shard {shard} at applied index {index}: node {first} and node {node} differ \
                 ({})",
                difference(expected, &state)
            ),
        })
    }
}

/// The first difference between `a` and `b`, in words.
fn difference(a: &ShardState, b: &ShardState) -> String {
    let keys: std::collections::BTreeSet<&Vec<u8>> =
        a.values.keys().chain(b.values.keys()).collect();
    for key in keys {
        let (left, right) = (a.values.get(key), b.values.get(key));
        if left != right {
            return format!(
                "key {}: {} vs {}",
                key.escape_ascii(),
                describe(left),
                describe(right)
            );
        }
    }
    let first = a
        .sessions
        .iter()
        .zip(&b.sessions)
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!(": first difference {x:?} vs {y:?}"))
        .unwrap_or_default();
    format!(
        "session tables of {} and {} sessions{first}",
        a.sessions.len(),
        b.sessions.len()
    )
}

fn describe(value: Option<&Versioned>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"))
}
