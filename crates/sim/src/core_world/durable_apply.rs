//! The "durable before apply" check of node-core runs: a replica's state machine never gets
//! ahead of its durable log. The node core applies a committed entry only once it is durable
//! on this node (its batch was reported durable, `NodeCore::batch_durable`); the simulated
//! disk knows what is durable, so after every apply the applied index must be at most the
//! durable log's last index (a snapshot install moves both together). A core that applies
//! entries of a batch still in flight breaks it at once, where the consequences (a store
//! ahead of its log after a crash, a leader counting its own unsynced entries toward commit)
//! need several faults at one moment to show in the client history.

use super::replica_states::Observation;
use crate::checkers::Violation;

/// The name of the checker, as violations carry it.
pub const CHECK: &str = "durable before apply";

/// Checks that `observation`'s applied index is durable on its node.
///
/// # Errors
/// The violation when the replica applied past its durable log.
pub fn check(observation: &Observation) -> Result<(), Violation> {
    if observation.index <= observation.durable_last_index {
        return Ok(());
    }
    Err(Violation {
        check: CHECK,
        detail: format!(
            "shard {} node {}: applied {}, but its durable log ends at {}",
            observation.shard, observation.node, observation.index, observation.durable_last_index
        ),
    })
}
