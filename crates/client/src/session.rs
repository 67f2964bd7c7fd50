//! Write sessions: the exactly-once identities of a client's writes.
//!
//! A node remembers, per `(session, shard)`, only the last applied sequence and its result: a
//! retry of that sequence gets the saved result, an older sequence is refused as superseded. So
//! a session must never have two writes in flight, or the later sequence could overtake the
//! earlier one and get it refused. The client therefore keeps a pool: a write borrows an idle
//! session (or opens a new one with a random id), takes its next sequence, keeps both through
//! every retry, and returns the session when the call ends. Concurrent writes use different
//! sessions; the number of sessions grows to the client's peak write concurrency.

use crate::backoff::random_u64;
use ringkv_types::WriteSession;
use std::sync::{Mutex, PoisonError};

/// Idle sessions kept for reuse; beyond this, returned sessions are dropped.
const IDLE_SESSIONS_MAX: usize = 4096;

/// One session's state on the client.
#[derive(Debug)]
struct Session {
    id: u64,
    /// The last sequence handed out.
    sequence: u64,
}

/// The pool of idle sessions.
#[derive(Debug, Default)]
pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
}

/// A borrowed session; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct SessionLease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl SessionPool {
    /// Borrows an idle session, or opens a new one.
    pub fn lease(&self) -> SessionLease<'_> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let session = reused.unwrap_or_else(|| Session {
            // Zero is reserved by nobody, but a nonzero id is easier to spot in logs.
            id: random_u64().max(1),
            sequence: 0,
        });
        SessionLease {
            pool: self,
            session: Some(session),
        }
    }

    /// Idle sessions (for tests).
    #[cfg(test)]
    pub fn idle_len(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl SessionLease<'_> {
    /// The identity of the next write: this session and its next sequence.
    pub fn next_write(&mut self) -> Option<WriteSession> {
        let session = self.session.as_mut()?;
        session.sequence += 1;
        Some(WriteSession {
            session_id: session.id,
            sequence: session.sequence,
        })
    }
}

impl Drop for SessionLease<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_SESSIONS_MAX {
            idle.push(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_leases_get_distinct_sessions_and_sequences_grow() {
        let pool = SessionPool::default();
        let mut first = pool.lease();
        let mut second = pool.lease();
        let a = first.next_write();
        let b = second.next_write();
        assert_ne!(
            a.map(|w| w.session_id),
            b.map(|w| w.session_id),
            "two writes in flight never share a session"
        );
        let first_id = a.map(|w| w.session_id);
        drop(first);
        drop(second);
        assert_eq!(pool.idle_len(), 2);
        // A returned session continues with its next sequence.
        let mut again = pool.lease();
        let mut other = pool.lease();
        let writes = [again.next_write(), other.next_write()];
        let reused = writes
            .iter()
            .flatten()
            .find(|w| Some(w.session_id) == first_id)
            .map(|w| w.sequence);
        assert_eq!(reused, Some(2));
    }
}
