//! The client-visible history: what each operation asked, when, and what came back.

use crate::kv::{Op, OpResult};
use ringkv_types::ShardId;

/// One operation in the history. Times are a global event counter, so no two events tie and
/// "A returned before B was invoked" is exact.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Client.
    pub client: u64,
    /// Group the key lives in.
    pub group: ShardId,
    /// The operation.
    pub op: Op,
    /// When it was invoked.
    pub invoked_at: u64,
    /// When it returned and with what; `None` for a write whose outcome is unknown (it may or
    /// may not have taken effect, at any point after invocation).
    pub completed: Option<(u64, OpResult)>,
    /// Set when the operation definitely did not happen (refused, or a read that timed out):
    /// it is left out of the check.
    pub discarded: bool,
}

/// All operations of a run.
#[derive(Debug, Default)]
pub struct History {
    /// Operations in invocation order.
    pub operations: Vec<Operation>,
}

impl History {
    /// Records an invocation; returns its position.
    pub fn invoke(&mut self, client: u64, group: ShardId, op: Op, at: u64) -> usize {
        self.operations.push(Operation {
            client,
            group,
            op,
            invoked_at: at,
            completed: None,
            discarded: false,
        });
        self.operations.len() - 1
    }
}
