//! Answers the core gives to client requests when their entries apply or get lost: pure
//! functions of the group and the apply results.

use crate::core::replies::Replies;
use crate::group::{Group, PendingRead, WriteKind};
use ringkv_storage::{CommandResult, OperationResult};
use ringkv_types::{
    AdminResult, KvResult, LogIndex, NodeId, Response, Term, WireError, member_node,
};

/// `NotLeader` with the leader this replica knows of and its descriptor: the client reroutes.
pub fn not_leader(hint: Option<NodeId>, descriptor: &ringkv_types::ShardDescriptor) -> Response {
    Response::Error(WireError::NotLeader {
        leader_hint: hint,
        descriptor: Some(descriptor.clone()),
    })
}

/// The answer to a proposal `group`'s Raft core refused with `error`: `NotLeader` (reroute),
/// `Busy` for a dropped proposal or one during a leader transfer (retry), else `Internal`.
pub fn proposal_refused<L>(group: &Group<L>, error: &ringkv_raft::Error) -> Response {
    match error {
        ringkv_raft::Error::NotLeader { .. } => not_leader(group.leader_hint(), &group.descriptor),
        ringkv_raft::Error::ProposalDropped { .. }
        | ringkv_raft::Error::TransferInProgress { .. } => Response::Error(WireError::Busy),
        error => Response::Error(WireError::Internal {
            reason: error.to_string(),
        }),
    }
}

/// A proposal whose entry was replaced by another leader's: the client retries (with the same
/// session sequence, so it applies at most once).
pub fn lost_write<L>(group: &Group<L>) -> Response {
    not_leader(group.leader_hint(), &group.descriptor)
}

/// The answer to a write of `kind` applied at `index` with `result`. A retry of a write
/// applied earlier answers the index of the entry that applied it (the version it wrote),
/// not its own entry's; the entry's own only when the session record predates that index.
pub fn write_response(kind: WriteKind, index: LogIndex, result: CommandResult) -> Response {
    let (results, index) = match result {
        CommandResult::Applied(results) => (results, index),
        CommandResult::Repeated {
            results,
            index: applied_at,
        } => (
            results,
            if applied_at == 0 {
                index
            } else {
                LogIndex(applied_at)
            },
        ),
        CommandResult::StaleSequence { last_applied } => {
            return Response::Error(WireError::InvalidRequest {
                reason: format!(
                    "session sequence already superseded (last applied {last_applied}); \
                     its result is gone"
                ),
            });
        }
    };
    for result in &results {
        match result {
            OperationResult::KeyTooLarge => {
                return Response::Error(WireError::KeyTooLarge {
                    size: 0,
                    max: ringkv_storage::KEY_BYTES_MAX as u64,
                });
            }
            OperationResult::ValueTooLarge => {
                return Response::Error(WireError::ValueTooLarge {
                    size: 0,
                    max: ringkv_storage::VALUE_BYTES_MAX as u64,
                });
            }
            _ => {}
        }
    }
    match (kind, results.first()) {
        (
            _,
            Some(OperationResult::CompareVersionAndSwap {
                swapped,
                previous,
                previous_version,
            }),
        ) => Response::Kv(KvResult::VersionSwapped {
            succeeded: *swapped,
            previous: previous.clone(),
            previous_version: LogIndex(*previous_version),
            index,
        }),
        (_, Some(OperationResult::InvalidTtl)) => Response::Error(WireError::InvalidRequest {
            reason: "the TTL was refused (0, or a write without log time)".into(),
        }),
        (_, Some(OperationResult::Persisted { had_ttl })) => Response::Kv(KvResult::Persisted {
            had_ttl: *had_ttl,
            index,
        }),
        (
            WriteKind::CompareAndSwap,
            Some(OperationResult::CompareAndSwap { swapped, previous }),
        ) => Response::Kv(KvResult::Swapped {
            succeeded: *swapped,
            previous: previous.clone(),
            index,
        }),
        _ => Response::Kv(KvResult::Written { index }),
    }
}

/// Answers the pending membership change once its entry applied: `(index, term)` of the
/// configuration entries just applied.
pub fn answer_change<L>(
    replies: &mut Replies,
    group: &mut Group<L>,
    applied: &[(LogIndex, Term)],
    last: LogIndex,
) {
    if group
        .pending_change
        .as_ref()
        .is_none_or(|change| change.index > last)
    {
        return;
    }
    let Some(change) = group.pending_change.take() else {
        return;
    };
    let ours = applied
        .iter()
        .any(|(i, term)| *i == change.index && *term == change.term);
    let response = if ours {
        Response::Admin(AdminResult::ReplicaChanged(group.descriptor.clone()))
    } else {
        not_leader(group.leader_hint(), &group.descriptor)
    };
    replies.send(change.reply, response);
}

/// A replica that stops leading answers its unconfirmed reads with `NotLeader`.
pub fn fail_reads<L>(replies: &mut Replies, group: &mut Group<L>) {
    let hint = group.leader_hint();
    let descriptor = group.descriptor.clone();
    let pending: Vec<PendingRead> = group
        .reads_new
        .drain(..)
        .map(|(_, read)| read)
        .chain(
            std::mem::take(&mut group.reads_sent)
                .into_values()
                .flatten(),
        )
        .collect();
    for read in pending {
        replies.send(read.reply, not_leader(hint, &descriptor));
    }
}

/// A leader that steps down answers its pending membership change `NotLeader`: the entry may
/// still commit; the caller reads the descriptor again.
pub fn fail_change<L>(replies: &mut Replies, group: &mut Group<L>) {
    if let Some(change) = group.pending_change.take() {
        replies.send(
            change.reply,
            not_leader(group.leader_hint(), &group.descriptor),
        );
    }
}

/// Answers the leader transfers whose target now leads, and `NotLeader` to those overtaken by
/// a third member's leadership.
pub fn answer_transfers<L>(replies: &mut Replies, group: &mut Group<L>) {
    if group.pending_transfers.is_empty() {
        return;
    }
    let leader = group.leader;
    let shard = group.shard;
    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut group.pending_transfers)
        .into_iter()
        .partition(|t| t.to == leader || (leader.is_some() && leader != group.member));
    group.pending_transfers = waiting;
    for transfer in done {
        let answer = if transfer.to == leader {
            Response::Admin(AdminResult::LeaderTransferred {
                shard,
                leader: member_node(leader),
            })
        } else {
            not_leader(group.leader_hint(), &group.descriptor)
        };
        replies.send(transfer.reply, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn applied_results_become_answers() {
        let index = LogIndex(7);
        let cases = [
            (
                WriteKind::Write,
                CommandResult::Applied(vec![OperationResult::Put]),
                Response::Kv(KvResult::Written { index }),
            ),
            (
                WriteKind::CompareAndSwap,
                CommandResult::Applied(vec![OperationResult::CompareAndSwap {
                    swapped: false,
                    previous: Some(Bytes::from_static(b"old")),
                }]),
                Response::Kv(KvResult::Swapped {
                    succeeded: false,
                    previous: Some(Bytes::from_static(b"old")),
                    index,
                }),
            ),
        ];
        for (kind, result, expected) in cases {
            assert_eq!(write_response(kind, index, result), expected);
        }
        // A retry answers the index that applied it (its version), not its own entry's.
        let retried = CommandResult::Repeated {
            results: vec![OperationResult::Put],
            index: 3,
        };
        assert_eq!(
            write_response(WriteKind::Write, index, retried),
            Response::Kv(KvResult::Written { index: LogIndex(3) })
        );
        let unknown = CommandResult::Repeated {
            results: vec![OperationResult::Put],
            index: 0,
        };
        assert_eq!(
            write_response(WriteKind::Write, index, unknown),
            Response::Kv(KvResult::Written { index })
        );
        assert!(matches!(
            write_response(
                WriteKind::Write,
                index,
                CommandResult::StaleSequence { last_applied: 9 }
            ),
            Response::Error(WireError::InvalidRequest { .. })
        ));
    }
}
