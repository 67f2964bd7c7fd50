//! Bounding fjall's write buffer (its memtables) ourselves.
//!
//! fjall 3.1 accepts `max_write_buffer_size` but never reads it: each keyspace only rotates
//! its memtable at 64 MiB and stops writers at four sealed memtables, so the five keyspaces may
//! hold up to 5 x 320 MiB of memtables, and a 1 GiB snapshot install, which writes its data twice
//! (staging, then the move into the live range) at disk speed, grew the receiver's RSS to
//! 1.5 GB. fjall does count the bytes in memtables (`Database::write_buffer_size`: added at
//! each write, freed when a flush writes the sealed memtables to a table), so the store
//! enforces `StoreConfig::write_buffer_bytes` after each of its commits:
//!
//! - at or under the limit: nothing (one atomic load);
//! - over it: every keyspace's active memtable is sealed (fjall skips empty ones) and queued
//!   for flush, and the committing thread waits until flushes brought the buffer down to half
//!   the limit. Half, so that the next stall needs half a limit of new writes rather than one
//!   more batch (each stall seals every keyspace's memtable, small ones too).
//!
//! The wait ends early when no keyspace has a sealed memtable left (nothing more to free: a
//! flush failed, or the rest is in memtables written meanwhile by another thread), or after
//! [`STALL_MAX`]: a failing disk must surface as the write errors it causes, not as a writer
//! hanging here. Writers that stall are the group-commit writer (so all groups' commits) and a
//! snapshot being staged; a stall costs about the time to flush half the limit (~1 s for
//! 128 MiB at 150 MB/s), and happens only when writes outrun flushes.

use crate::store::Shared;
use std::time::{Duration, Instant};

/// Longest wait for flushes in one stall.
const STALL_MAX: Duration = Duration::from_secs(30);

/// Poll interval while waiting for flushes (fjall offers no notification).
const POLL: Duration = Duration::from_millis(2);

impl Shared {
    /// Enforces `write_buffer_bytes` (see the module docs). Call after a successful commit.
    pub(crate) fn limit_write_buffer(&self) {
        let limit = self.config.write_buffer_bytes;
        if limit == 0 || self.db.write_buffer_size() <= limit {
            return;
        }
        let keyspaces = [
            &self.raft_log,
            &self.raft_state,
            &self.data,
            &self.meta,
            &self.staging,
        ];
        for keyspace in keyspaces {
            // An error here (the journal writer is poisoned) surfaces on the next commit.
            let _ = keyspace.rotate_memtable();
        }
        let start = Instant::now();
        while self.db.write_buffer_size() > limit / 2
            && keyspaces
                .iter()
                .any(|keyspace| keyspace.sealed_memtable_count() > 0)
            && start.elapsed() < STALL_MAX
        {
            std::thread::sleep(POLL);
        }
    }
}
