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
        MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReplicaRemoved => Ok(()),
    }
}
