//! The group-commit writer: one thread that turns each [`WriteBatchBuilder`] into one fjall
//! batch with one `fdatasync`, in submission order.

use crate::codec;
use crate::error::{Error, Result};
use crate::group_state::{AppliedState, GroupState};
use crate::keys;
use crate::store::{Shared, lock_group};
use crate::write_batch::{GroupWrite, WriteBatchBuilder};
use fjall::PersistMode;
use ringkv_types::envelope::HEADER_LEN;
use ringkv_types::{LogIndex, ShardId};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What a completed group commit reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Position of the batch in submission order, from 1.
    pub sequence: u64,
    /// The groups whose writes in this batch are now durable, with their last log index.
    pub groups: Vec<(ShardId, LogIndex)>,
    /// How long the journal commit took, its `fdatasync` included (for metrics).
    pub commit_duration: std::time::Duration,
}

/// Completion of one submitted batch.
#[must_use = "a write is not known to be durable until its ticket completes"]
pub struct Ticket {
    sequence: u64,
    receiver: Receiver<Result<Durable>>,
}

impl Ticket {
    /// Position of the batch in submission order, from 1.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Blocks until the batch is durable (or failed).
    ///
    /// # Errors
    /// See the contract on [`WriteBatchBuilder`]: fatal errors poison the store.
    pub fn wait(self) -> Result<Durable> {
        self.receiver.recv().map_err(|_| Error::WriterStopped)?
    }

    /// The result if the batch is done, without blocking.
    pub fn try_wait(&self) -> Option<Result<Durable>> {
        match self.receiver.try_recv() {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(Error::WriterStopped)),
        }
    }
}

struct Job {
    sequence: u64,
    batch: WriteBatchBuilder,
    reply: SyncSender<Result<Durable>>,
}

/// Owns the writer thread; dropping it lets the thread finish the queue and joins it.
pub(crate) struct WriterHandle {
    sender: Mutex<Option<(SyncSender<Job>, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    pub fn spawn(shared: Arc<Shared>) -> Result<Self> {
        let (sender, receiver) = sync_channel::<Job>(shared.config.writer_queue_depth);
        let thread = std::thread::Builder::new()
            .name("ringkv-storage-writer".into())
            .spawn(move || run(&shared, &receiver))?;
        Ok(Self {
            sender: Mutex::new(Some((sender, 0))),
            thread: Some(thread),
        })
    }

    pub fn submit(&self, batch: WriteBatchBuilder) -> Result<Ticket> {
        let (reply, receiver) = sync_channel(1);
        let (sender, sequence) = {
            let mut guard = self
                .sender
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (sender, last) = guard.as_mut().ok_or(Error::WriterStopped)?;
            *last += 1;
            (sender.clone(), *last)
        };
        // Sent outside the lock: a full queue blocks only this caller. Sequence numbers are
        // assigned under the lock, so with several submitting threads the queue order may differ
        // from sequence order; the node submits from one thread.
        sender
            .send(Job {
                sequence,
                batch,
                reply,
            })
            .map_err(|_| Error::WriterStopped)?;
        Ok(Ticket { sequence, receiver })
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = self.thread.take() {
            // A panicked writer already failed its tickets (their senders dropped).
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared, receiver: &Receiver<Job>) {
    while let Ok(job) = receiver.recv() {
        let result = match shared
            .check_writable()
            .and_then(|()| shared.collect_staging_garbage())
        {
            Ok(()) => commit_batch(shared, job.sequence, job.batch),
            Err(error) => Err(error),
        };
        // The submitter may have dropped its ticket; the write happened anyway.
        let _ = job.reply.send(result);
    }
}

/// Builds and commits one batch, then updates the caches. Everything that can fail short of
/// the commit itself happens before it, so a non-fatal error leaves the disk untouched.
fn commit_batch(shared: &Shared, sequence: u64, batch: WriteBatchBuilder) -> Result<Durable> {
    let mut fjall_batch = shared.db.batch().durability(Some(PersistMode::SyncData));
    // Only this thread advances the sequence, after a successful commit.
    let commit_seq = shared.commit_seq.load(Ordering::Acquire) + 1;
    let mut updates: Vec<(Arc<Mutex<GroupState>>, GroupState, bool)> =
        Vec::with_capacity(batch.groups.len());
    // Shards whose session records this batch writes outside apply (a split child's copy).
    let mut session_writes = Vec::new();
    let mut groups = Vec::with_capacity(batch.groups.len());
    let mut moves = Vec::new();
    for (shard, write) in batch.groups {
        let cache = shared.group(shard)?;
        let current = lock_group(&cache).clone();
        let installs = write.install.is_some() || write.initialize.is_some();
        if installs || !write.sessions.is_empty() {
            session_writes.push(shard);
        }
        let next = stage_group(shared, shard, current, write, &mut fjall_batch, &mut moves)?;
        groups.push((shard, next.last_index));
        updates.push((cache, next, installs));
    }
    fjall_batch.insert(
        &shared.meta,
        keys::COMMIT_SEQ_KEY,
        codec::encode(&commit_seq),
    );
    // IMPORTANT: one commit with SyncData: the ticket is answered only after fdatasync of the
    // journal returned, and a failure poisons the store (Shared::commit) for good.
    let commit_started = std::time::Instant::now();
    shared.commit(fjall_batch)?;
    let commit_duration = commit_started.elapsed();
    shared.commit_seq.store(commit_seq, Ordering::Release);
    // The in-memory session tables of those shards reload from fjall on their next apply.
    for shard in session_writes {
        shared.sessions.forget(shard);
    }
    // IMPORTANT: the installs' data moves before the ticket is answered and before the caches
    // show the new applied index; a failure here poisons the store (the marker makes the next
    // open finish the move).
    for marker in &moves {
        if let Err(error) = shared.finish_install(marker) {
            shared.poison();
            return Err(error);
        }
    }
    // The mark is written by its own thread, concurrently with our next commit.
    shared.marker.advance(commit_seq, &groups);
    for (cache, next, installs) in updates {
        next.check_invariants();
        let mut state = lock_group(&cache);
        // The applier owns `applied` and `conf` (it may have moved them since we cloned the
        // state); the writer sets them only when it installed a snapshot.
        if installs {
            state.applied = next.applied;
            state.conf = next.conf;
        }
        state.first_index = next.first_index;
        state.last_index = next.last_index;
        state.last_term = next.last_term;
        state.snapshot = next.snapshot;
        state.hard_state = next.hard_state;
    }
    Ok(Durable {
        sequence,
        groups,
        commit_duration,
    })
}

/// Adds one group's writes to the fjall batch and returns the group's state after them.
///
/// fjall gives every item of a batch the same sequence number, so a key must not be both
/// removed and inserted in one batch: deletions below are computed to be disjoint from inserts.
fn stage_group(
    shared: &Shared,
    shard: ShardId,
    mut state: GroupState,
    write: GroupWrite,
    batch: &mut fjall::OwnedWriteBatch,
    moves: &mut Vec<crate::snapshot_install::InstallMarker>,
) -> Result<GroupState> {
    if let Some(install) = write.install {
        moves.push(install.stage(shared, batch, &mut state)?);
    }
    if let Some(initial) = write.initialize {
        if state.applied.index != LogIndex::ZERO || state.last_index != LogIndex::ZERO {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "initializing a group that has applied {} and log up to {}",
                    state.applied.index, state.last_index
                ),
            });
        }
        let applied = AppliedState {
            index: initial.index,
            term: initial.term,
        };
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_APPLIED).to_vec(),
            codec::encode(&applied),
        );
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_CONF).to_vec(),
            codec::encode(&initial.conf),
        );
        state.applied = applied;
        state.conf = Some(initial.conf);
    }
    for (session, record) in &write.sessions {
        batch.insert(
            &shared.raft_state,
            keys::session_key(shard, *session).to_vec(),
            codec::encode(record),
        );
    }
    for (name, value) in write.meta {
        let size = value.len() as u64;
        if size > shared.config.record_bytes_max || name.len() > 1024 {
            return Err(Error::TooLarge {
                size,
                max: shared.config.record_bytes_max,
            });
        }
        batch.insert(
            &shared.meta,
            keys::meta_key(&name),
            ringkv_types::envelope::encode(&value),
        );
    }
    // Highest index that may be on disk; everything in (state.last_index, disk_last] is deleted
    // at the end.
    let disk_last = state.last_index;
    if let Some(meta) = write.snapshot_meta
        && meta.index > state.snapshot.index
    {
        let keeps_suffix = if meta.index > state.last_index {
            false
        } else if meta.index == state.last_index {
            state.last_term == meta.term
        } else {
            match shared.read_entry(shard, meta.index)? {
                Some(entry) => entry.term == meta.term,
                None => {
                    return Err(Error::corrupt_entry(
                        shard,
                        meta.index,
                        "entry missing from log",
                    ));
                }
            }
        };
        let mut index = state.first_index;
        while index <= meta.index && index <= disk_last {
            batch.remove(&shared.raft_log, keys::log_key(shard, index).to_vec());
            index = index.next();
        }
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_SNAPSHOT_META).to_vec(),
            codec::encode(&meta),
        );
        state.first_index = meta.index.next();
        if !keeps_suffix {
            state.last_index = meta.index;
            state.last_term = meta.term;
        }
        state.snapshot = meta;
    }
    if let (Some(first), Some(last)) = (write.entries.first(), write.entries.last()) {
        if first.index < state.first_index {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "append at {} below the first index {}",
                    first.index, state.first_index
                ),
            });
        }
        if first.index > state.last_index.next() {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "append at {} leaves a gap after {}",
                    first.index, state.last_index
                ),
            });
        }
        let (last_index, last_term) = (last.index, last.term);
        for entry in write.entries {
            let payload = entry.record.len().saturating_sub(HEADER_LEN) as u64;
            if payload > shared.config.record_bytes_max {
                return Err(Error::TooLarge {
                    size: payload,
                    max: shared.config.record_bytes_max,
                });
            }
            batch.insert(
                &shared.raft_log,
                keys::log_key(shard, entry.index).to_vec(),
                entry.record,
            );
        }
        state.last_index = last_index;
        state.last_term = last_term;
    }
    // IMPORTANT: a conflicting suffix longer than the new entries (or a log discarded by a
    // snapshot) goes in the same batch, or a crash could leave stale entries of an old term
    // after the new ones.
    let mut index = state.last_index.next();
    while index <= disk_last {
        batch.remove(&shared.raft_log, keys::log_key(shard, index).to_vec());
        index = index.next();
    }
    if let Some(hard_state) = write.hard_state {
        if hard_state.term < state.hard_state.term {
            return Err(Error::InvalidWrite {
                shard,
                reason: format!(
                    "hard state term {} below the saved term {}",
                    hard_state.term, state.hard_state.term
                ),
            });
        }
        batch.insert(
            &shared.raft_state,
            keys::state_key(shard, keys::KIND_HARD_STATE).to_vec(),
            codec::encode(&hard_state),
        );
        state.hard_state = hard_state;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use crate::{AppliedState, Error, Store, StoreConfig, WriteBatchBuilder};
    use ringkv_types::raft::{Entry, EntryPayload, HardState};
    use ringkv_types::{LogIndex, ShardId, Term};

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Noop,
        }
    }

    /// A failed commit or fsync poisons the store for good: every later write path refuses.
    /// (The real trigger, an fsync error, cannot be provoked portably; the flag it sets is.)
    #[test]
    fn poisoned_store_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut batch = WriteBatchBuilder::new();
        batch.append(ShardId(1), &[entry(1)]).unwrap();
        store.write(batch).unwrap();
        store.shared.poison();
        assert!(store.is_poisoned());

        let mut batch = WriteBatchBuilder::new();
        batch.set_hard_state(ShardId(1), HardState::default());
        assert!(matches!(store.submit(batch), Err(Error::Poisoned)));
        let applied = AppliedState {
            index: LogIndex(1),
            term: Term(1),
        };
        assert!(matches!(
            store.apply(ShardId(1), &[], applied, None),
            Err(Error::Poisoned)
        ));
        assert!(matches!(store.persist(), Err(Error::Poisoned)));
        assert!(Error::Poisoned.is_fatal());
        // Reads still work, so the node can report what it has before exiting.
        assert_eq!(store.group(ShardId(1)).unwrap().bounds().1, LogIndex(1));
    }

    #[test]
    fn batches_queued_behind_a_poisoning_fail_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut tickets = Vec::new();
        for index in 1..=3 {
            let mut batch = WriteBatchBuilder::new();
            batch.append(ShardId(1), &[entry(index)]).unwrap();
            tickets.push(store.submit(batch).unwrap());
        }
        store.shared.poison();
        let mut failed = false;
        for ticket in tickets {
            match ticket.wait() {
                Ok(_) => assert!(!failed, "a batch succeeded after one failed"),
                Err(error) => {
                    assert!(matches!(error, Error::Poisoned));
                    failed = true;
                }
            }
        }
    }

    /// An fsync that fails with EIO (injected after the batch reached the journal, as a real
    /// fsync error would come): the batch is not acknowledged, the error says the disk failed
    /// (not a bare "poisoned"), the batches queued behind it and every later write are refused,
    /// and a restart recovers every acknowledged write and accepts writes again.
    #[test]
    fn an_fsync_error_is_never_acknowledged_and_a_restart_recovers_acknowledged_writes() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        for index in 1..=5 {
            let mut batch = WriteBatchBuilder::new();
            batch.append(ShardId(1), &[entry(index)]).unwrap();
            batch.set_hard_state(
                ShardId(1),
                HardState {
                    term: Term(1),
                    vote: ringkv_types::NodeId(1),
                    commit: LogIndex(index),
                },
            );
            store.write(batch).unwrap();
        }
        store.shared.fail_fsyncs.store(1, Ordering::Release);
        let mut tickets = Vec::new();
        for index in 6..=8 {
            let mut batch = WriteBatchBuilder::new();
            batch.append(ShardId(1), &[entry(index)]).unwrap();
            tickets.push(store.submit(batch).unwrap());
        }
        let mut results = tickets.into_iter().map(super::Ticket::wait);
        let first = results.next().unwrap().unwrap_err();
        assert!(matches!(first, Error::DiskFailed { .. }), "{first}");
        assert!(first.is_fatal());
        let text = first.to_string();
        assert!(
            text.contains("fsync") && text.contains("os error 5"),
            "unclear error: {text}"
        );
        for result in results {
            assert!(
                matches!(result, Err(Error::Poisoned)),
                "acknowledged after EIO"
            );
        }
        assert!(store.is_poisoned());
        let mut batch = WriteBatchBuilder::new();
        batch.append(ShardId(1), &[entry(9)]).unwrap();
        assert!(matches!(store.write(batch), Err(Error::Poisoned)));
        assert!(matches!(store.persist(), Err(Error::Poisoned)));
        // Its cache did not move past what was acknowledged.
        assert_eq!(store.group(ShardId(1)).unwrap().bounds().1, LogIndex(5));
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let group = store.group(ShardId(1)).unwrap();
        // Entry 6 reached the journal before the "fsync" failed: it may be there (never
        // acknowledged, so either is right); 1..=5 must be.
        let last = group.bounds().1;
        assert!(
            last >= LogIndex(5),
            "acknowledged entries lost: last {last}"
        );
        assert_eq!(group.hard_state().commit, LogIndex(5));
        let mut batch = WriteBatchBuilder::new();
        batch.append(ShardId(1), &[entry(last.get() + 1)]).unwrap();
        store.write(batch).unwrap();
        drop(group);
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(
            store.group(ShardId(1)).unwrap().bounds().1,
            LogIndex(last.get() + 1)
        );
    }

    /// An fsync error in [`Store::persist`] (the fsync that makes apply batches durable)
    /// poisons the store the same way.
    #[test]
    fn an_fsync_error_in_persist_poisons_the_store() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.shared.fail_fsyncs.store(1, Ordering::Release);
        assert!(matches!(store.persist(), Err(Error::DiskFailed { .. })));
        let mut batch = WriteBatchBuilder::new();
        batch.append(ShardId(1), &[entry(1)]).unwrap();
        assert!(matches!(store.write(batch), Err(Error::Poisoned)));
    }
}
