//! Checks a peer's message before it reaches the core: the shape every honest Raft message
//! has, whatever the receiver's state. A message that fails is dropped (and counted), so no
//! assertion in the core can be reached from the wire.
//!
//! Stateless here (bounds, contiguous entries, terms no newer than the message); the checks
//! that need the receiver's log (a heartbeat's commit beyond our last index, an acknowledgement
//! of entries we never had) live in the core's handlers, which drop such messages too.

use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{LogIndex, Term};

/// Largest term or index a message may carry (2^62): far beyond any real log, and leaves room
/// for `+ 1` and `+ len` without overflow.
pub const VALUE_MAX: u64 = 1 << 62;

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// A term or index above [`VALUE_MAX`].
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// An append's entries are not `prev_index + 1, prev_index + 2, ...`.
    #[error("entry {position} has index {found}, expected {expected}")]
    EntriesNotContiguous {
        /// Position in the message.
        position: usize,
        /// The index found.
        found: LogIndex,
        /// The index expected.
        expected: LogIndex,
    },
    /// Entry terms go down, or an entry (or the previous entry, or a snapshot) is newer than
    /// the message's term: no leader of that term could have it.
    #[error("{what} term {found} does not fit (limit {limit})")]
    TermOrder {
        /// Which term.
        what: &'static str,
        /// The term found.
        found: Term,
        /// The largest term allowed there.
        limit: Term,
    },
    /// An index beyond another the message carries (a quiesce committing past its last index).
    #[error("{what} {found} is beyond {limit}")]
    IndexOrder {
        /// Which index.
        what: &'static str,
        /// The index found.
        found: LogIndex,
        /// The largest index allowed there.
        limit: LogIndex,
    },
}

fn in_range(what: &'static str, value: u64) -> Result<(), InvalidMessage> {
    if value > VALUE_MAX {
        return Err(InvalidMessage::OutOfRange { what, value });
    }
    Ok(())
}

fn term_at_most(what: &'static str, found: Term, limit: Term) -> Result<(), InvalidMessage> {
    if found > limit {
        return Err(InvalidMessage::TermOrder { what, found, limit });
    }
    Ok(())
}

/// Checks `message`'s shape (see the module docs).
///
/// # Errors
/// The first problem found.
pub fn validate(message: &Message) -> Result<(), InvalidMessage> {
    in_range("message term", message.term.get())?;
    match &message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        }
        | MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => {
            in_range("last index", last_index.get())?;
            in_range("last term", last_term.get())?;
            term_at_most("last entry", *last_term, message.term)
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            in_range("previous index", prev_index.get())?;
            in_range("commit", commit.get())?;
            in_range("entry count", entries.len() as u64)?;
            term_at_most("previous entry", *prev_term, message.term)?;
            let mut expected = *prev_index;
            let mut last_term = *prev_term;
            for (position, entry) in entries.iter().enumerate() {
                expected = LogIndex(expected.get().saturating_add(1));
                if entry.index != expected {
                    return Err(InvalidMessage::EntriesNotContiguous {
                        position,
                        found: entry.index,
                        expected,
                    });
                }
                in_range("entry index", entry.index.get())?;
                term_at_most("entry", entry.term, message.term)?;
                if entry.term < last_term {
                    return Err(InvalidMessage::TermOrder {
                        what: "entry (terms go down)",
                        found: entry.term,
                        limit: last_term,
                    });
                }
                last_term = entry.term;
            }
            Ok(())
        }
        MessageBody::AppendResponse {
            index, hint_index, ..
        } => {
            in_range("index", index.get())?;
            in_range("hint index", hint_index.get())
        }
        MessageBody::Heartbeat { commit, .. } => in_range("commit", commit.get()),
        MessageBody::InstallSnapshot { snapshot } => {
            in_range("snapshot index", snapshot.meta.index.get())?;
            term_at_most("snapshot", snapshot.meta.term, message.term)
        }
        MessageBody::Quiesce {
            commit,
            last_index,
            last_term,
            ..
        } => {
            in_range("commit", commit.get())?;
            in_range("last index", last_index.get())?;
            term_at_most("last entry", *last_term, message.term)?;
            if commit > last_index {
                return Err(InvalidMessage::IndexOrder {
                    what: "quiesce commit",
                    found: *commit,
                    limit: *last_index,
                });
            }
            Ok(())
        }
        MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReplicaRemoved
        | MessageBody::Wake
        | MessageBody::NodeAlive => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::raft::{Entry, EntryPayload, Snapshot, SnapshotMeta};
    use ringkv_types::{NodeId, ShardId};

    fn message(term: u64, body: MessageBody) -> Message {
        Message {
            group: ShardId(1),
            from: NodeId(1),
            to: NodeId(2),
            term: Term(term),
            body,
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
        message(
            term,
            MessageBody::Append {
                prev_index: LogIndex(prev.0),
                prev_term: Term(prev.1),
                entries,
                commit: LogIndex(commit),
            },
        )
    }

    #[test]
    fn honest_shapes_pass_and_each_broken_one_is_named() {
        let snapshot = |index, term| MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: LogIndex(index),
                    term: Term(term),
                    conf: Default::default(),
                },
                data: Default::default(),
            },
        };
        let good = [
            append(3, (4, 2), vec![entry(2, 5), entry(3, 6)], 9),
            append(3, (0, 0), vec![], 0),
            message(
                5,
                MessageBody::Heartbeat {
                    commit: LogIndex(7),
                    context: 1,
                },
            ),
            message(5, snapshot(100, 5)),
            message(
                5,
                MessageBody::Vote {
                    last_index: LogIndex(9),
                    last_term: Term(4),
                    transfer: false,
                },
            ),
        ];
        for message in &good {
            assert_eq!(validate(message), Ok(()), "{message:?}");
        }
        let bad: [(&str, Message); 9] = [
            (
                "term out of range",
                message(VALUE_MAX + 1, MessageBody::TimeoutNow),
            ),
            ("gap", append(3, (4, 2), vec![entry(2, 5), entry(3, 7)], 0)),
            ("rewind", append(3, (4, 2), vec![entry(2, 4)], 0)),
            (
                "entry term above message term",
                append(3, (4, 2), vec![entry(4, 5)], 0),
            ),
            (
                "entry terms go down",
                append(3, (4, 2), vec![entry(3, 5), entry(2, 6)], 0),
            ),
            (
                "entry term below prev term",
                append(3, (4, 3), vec![entry(2, 5)], 0),
            ),
            ("prev term above message term", append(3, (4, 4), vec![], 0)),
            ("snapshot from the future", message(5, snapshot(100, 6))),
            (
                "commit out of range",
                message(
                    5,
                    MessageBody::Heartbeat {
                        commit: LogIndex(u64::MAX),
                        context: 1,
                    },
                ),
            ),
        ];
        for (name, message) in &bad {
            assert!(validate(message).is_err(), "{name}: {message:?} passed");
        }
    }
}
