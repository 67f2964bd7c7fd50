//! The exactly-once check of a node-core run, two ways:
//! - **effects** (during the run): every client write carries a value no other write
//!   carries, so each value may be applied at one log index only. Every replica applies an
//!   entry at the same index, and a crash re-applies it at the same index; a second index
//!   means the write was applied twice. The changes come from the core's apply
//!   ([`ringkv_node::core::apply::RunApplied::events`]);
//! - **answers** (at the end, for deletes too, which carry no value): a write answered with
//!   the index of its effect must name the first committed entry of its session and
//!   sequence in its key's log (across splits: `lineage.rs`); a retry the session table lets
//!   through is applied, and answered, at its own later entry.
//!
//! Both catch a retry with the same session and sequence that the session table did not stop
//! (across a split, the new shard's table must be the parent's).

use super::CoreWorld;
use crate::checkers::Violation;
use ringkv_node::log_command::LogCommand;
use ringkv_types::raft::EntryPayload;
use ringkv_types::{ShardId, WatchEvent, WatchEventKind};
use std::collections::BTreeMap;

/// The check's name in violations.
pub const CHECK: &str = "exactly-once writes";

/// The first log index each written (key, value) was applied at.
#[derive(Debug, Default)]
pub struct ExactlyOnce {
    first: BTreeMap<(Vec<u8>, Vec<u8>), u64>,
    /// Applied writes compared with the first application of their value.
    pub compared: u64,
}

impl ExactlyOnce {
    /// Checks the changes one node's applies made.
    ///
    /// # Errors
    /// A value applied at a second log index.
    pub fn check(&mut self, events: Vec<WatchEvent>) -> Result<(), Violation> {
        for event in events {
            let WatchEventKind::Put { value } = event.kind else {
                continue;
            };
            let written = (event.key.to_vec(), value.to_vec());
            let first = *self.first.entry(written).or_insert(event.index);
            self.compared += 1;
            if first != event.index {
                return Err(Violation {
                    check: CHECK,
                    detail: format!(
                        "key {} value {:?}: applied at log index {first} and again at {}",
                        String::from_utf8_lossy(&event.key),
                        value.as_ref(),
                        event.index
                    ),
                });
            }
        }
        Ok(())
    }
}

impl CoreWorld {
    /// The answers half (see the module docs): every write answered with an index names the
    /// first committed entry of its session and sequence in its shard's log.
    pub(super) fn check_write_answers(&self) -> Result<(), Violation> {
        let mut firsts: BTreeMap<ShardId, BTreeMap<(u64, u64), u64>> = BTreeMap::new();
        for (slot, session, answered) in self.clients.ttl.answered_writes() {
            let Some(operation) = self.clients.history.operations.get(slot) else {
                continue;
            };
            let shard = operation.group;
            let first = firsts
                .entry(shard)
                .or_insert_with(|| first_entries(&self.ttl.lineage(shard)))
                .get(&session)
                .copied();
            if first.is_some_and(|first| first != answered) {
                return Err(Violation {
                    check: CHECK,
                    detail: format!(
                        "shard {shard} key {}: session {} sequence {} answered at index \
                         {answered}, its first entry is at {}",
                        operation.op.key(),
                        session.0,
                        session.1,
                        first.unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The first index of each (session, sequence) in `log`.
fn first_entries(
    log: &BTreeMap<u64, (ringkv_types::raft::Entry, u64)>,
) -> BTreeMap<(u64, u64), u64> {
    let mut firsts = BTreeMap::new();
    for (index, (entry, _)) in log {
        let EntryPayload::Normal(data) = &entry.payload else {
            continue;
        };
        let command = match LogCommand::decode(data) {
            Ok(LogCommand::KvAt { command, .. } | LogCommand::Kv(command)) => command,
            _ => continue,
        };
        if let Some(request) = command.session {
            firsts
                .entry((request.session, request.sequence))
                .or_insert(*index);
        }
    }
    firsts
}
