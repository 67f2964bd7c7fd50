//! [`StateStore`] in memory, for tests and the simulator: an image of what is durable plus the
//! batches committed since the last durability point, which a simulated crash loses (all of
//! them, or all but the oldest few: the journal writes in order, so only a suffix can vanish).

use crate::command::SessionRecord;
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::scan::{ExpiredKeys, PageBuilder, ScanPage, ScanRequest, SweepStep};
use crate::state_store::{ApplyBatch, META_NAME_BYTES_MAX, StateStore};
use crate::value::Versioned;
use bytes::Bytes;
use ringkv_types::ShardId;
use ringkv_types::raft::ConfState;
use ringkv_types::ring::Arc;
use std::collections::{BTreeMap, VecDeque};
use std::ops::{Bound, RangeBounds};

/// The default record limit, as the fjall store's default `record_bytes_max`.
const RECORD_BYTES_MAX: u64 = 64 << 20;

/// What survives a crash.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Image {
    values: BTreeMap<Vec<u8>, Versioned>,
    sessions: BTreeMap<(ShardId, u64), SessionRecord>,
    applied: BTreeMap<ShardId, AppliedState>,
    conf: BTreeMap<ShardId, ConfState>,
    meta: BTreeMap<Vec<u8>, Bytes>,
}

impl Image {
    /// Replaces `shard`'s values in the storage-key range `bounds` (upper `None` = the top of
    /// the ring) and its session table, and sets its applied position and configuration: a
    /// snapshot install.
    pub(crate) fn replace_shard(
        &mut self,
        shard: ShardId,
        bounds: (Vec<u8>, Option<Vec<u8>>),
        values: Vec<(Vec<u8>, Versioned)>,
        sessions: Vec<(u64, SessionRecord)>,
        applied: AppliedState,
        conf: ConfState,
    ) {
        let (lower, upper) = bounds;
        self.values
            .retain(|key, _| *key < lower || upper.as_ref().is_some_and(|upper| key >= upper));
        self.values.extend(values);
        self.sessions.retain(|(owner, _), _| *owner != shard);
        self.sessions.extend(
            sessions
                .into_iter()
                .map(|(session, record)| ((shard, session), record)),
        );
        self.applied.insert(shard, applied);
        self.conf.insert(shard, conf);
    }

    fn absorb(&mut self, batch: ApplyBatch) {
        let shard = batch.shard;
        for (key, value) in batch.values {
            match value {
                Some(value) => self.values.insert(key, value),
                None => self.values.remove(&key),
            };
        }
        for (session, record) in batch.sessions {
            match record {
                Some(record) => self.sessions.insert((shard, session), record),
                None => self.sessions.remove(&(shard, session)),
            };
        }
        self.applied.insert(shard, batch.applied);
        if let Some(conf) = batch.conf {
            self.conf.insert(shard, conf);
        }
        for (name, value) in batch.meta {
            self.meta.insert(name, Bytes::from(value));
        }
    }
}

/// A node's applied state in memory. Reads see every committed batch; a batch becomes durable
/// with [`StateStore::batches_durable`]; [`MemoryState::crash`] drops what is not.
#[derive(Clone, Debug)]
pub struct MemoryState {
    durable: Image,
    /// Committed, not yet durable batches, oldest first, with their sequence numbers.
    unsynced: VecDeque<(u64, ApplyBatch)>,
    /// Batches committed so far (the next batch's sequence number).
    committed: u64,
    record_bytes_max: u64,
}

impl Default for MemoryState {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryState {
    /// An empty store with the fjall store's default record limit.
    pub fn new() -> Self {
        Self {
            durable: Image::default(),
            unsynced: VecDeque::new(),
            committed: 0,
            record_bytes_max: RECORD_BYTES_MAX,
        }
    }

    /// How many committed batches are not durable yet.
    pub fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// A simulated crash: the oldest `survivors` unsynced batches reached the disk anyway (the
    /// journal is written in order), the rest are lost. Returns how many were lost.
    pub fn crash(&mut self, survivors: usize) -> usize {
        let keep = survivors.min(self.unsynced.len());
        for (_, batch) in self.unsynced.drain(..keep) {
            self.durable.absorb(batch);
        }
        let lost = self.unsynced.len();
        self.unsynced.clear();
        lost
    }

    /// The durable image, for an install that writes it directly (`memory_snapshot.rs`).
    pub(crate) fn durable_image_mut(&mut self) -> &mut Image {
        &mut self.durable
    }

    /// Writes the meta record `name` durably, as a group commit's meta write does (a
    /// descriptor or PD state installed with a snapshot): every batch committed so far
    /// becomes durable first, as the one journal orders them before the group commit.
    pub fn write_meta_durable(&mut self, name: &[u8], value: &[u8]) {
        let mark = self.committed;
        self.batches_durable(mark);
        self.durable
            .meta
            .insert(name.to_vec(), Bytes::copy_from_slice(value));
    }

    /// Starts the brand-new `shard` durably, as the fjall store's
    /// [`WriteBatchBuilder::initialize_group`](crate::WriteBatchBuilder::initialize_group) with
    /// [`set_sessions`](crate::WriteBatchBuilder::set_sessions) and a meta record in one
    /// synchronous write: every batch committed so far becomes durable first (the one journal
    /// orders them before it), then the shard's applied position, configuration, session
    /// table and the meta records. Its data range is left as it is (a split child's data is
    /// already there).
    pub fn initialize_shard_durable(
        &mut self,
        shard: ShardId,
        applied: AppliedState,
        conf: ConfState,
        sessions: Vec<(u64, SessionRecord)>,
        meta: &[(Vec<u8>, Vec<u8>)],
    ) {
        let mark = self.committed;
        self.batches_durable(mark);
        self.durable
            .sessions
            .retain(|(owner, _), _| *owner != shard);
        self.durable.sessions.extend(
            sessions
                .into_iter()
                .map(|(session, record)| ((shard, session), record)),
        );
        self.durable.applied.insert(shard, applied);
        self.durable.conf.insert(shard, conf);
        for (name, value) in meta {
            self.durable
                .meta
                .insert(name.clone(), Bytes::copy_from_slice(value));
        }
    }

    /// The configuration saved with `shard`'s applied position.
    pub fn conf_state(&self, shard: ShardId) -> Option<ConfState> {
        self.newest(shard, |batch| batch.conf.clone())
            .or_else(|| self.durable.conf.get(&shard).cloned())
    }

    /// Every value with its storage key, as reads see them (for checkers comparing replicas).
    pub fn values(&self) -> BTreeMap<Vec<u8>, Versioned> {
        let mut values = self.durable.values.clone();
        for (_, batch) in &self.unsynced {
            for (key, value) in &batch.values {
                match value {
                    Some(value) => values.insert(key.clone(), value.clone()),
                    None => values.remove(key),
                };
            }
        }
        values
    }

    /// The first `Some` of `find` over `shard`'s unsynced batches, newest first.
    fn newest<T>(&self, shard: ShardId, find: impl Fn(&ApplyBatch) -> Option<T>) -> Option<T> {
        self.unsynced
            .iter()
            .rev()
            .filter(|(_, batch)| batch.shard == shard)
            .find_map(|(_, batch)| find(batch))
    }
}

impl MemoryState {
    /// The values in the storage-key range `bounds` as reads see them: the durable image, then
    /// the unsynced batches in order.
    fn view(&self, bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> BTreeMap<&Vec<u8>, &Versioned> {
        let mut view: BTreeMap<&Vec<u8>, &Versioned> = self
            .durable
            .values
            .range::<Vec<u8>, _>(bounds.clone())
            .collect();
        for (_, batch) in &self.unsynced {
            for (key, value) in batch.values.iter().filter(|(key, _)| bounds.contains(*key)) {
                match value {
                    Some(value) => view.insert(key, value),
                    None => view.remove(key),
                };
            }
        }
        view
    }
}

impl StateStore for MemoryState {
    fn applied(&self, shard: ShardId) -> Result<AppliedState> {
        Ok(self
            .newest(shard, |batch| Some(batch.applied))
            .or_else(|| self.durable.applied.get(&shard).copied())
            .unwrap_or_default())
    }

    fn value(&self, storage_key: &[u8]) -> Result<Option<Versioned>> {
        let pending = self
            .unsynced
            .iter()
            .rev()
            .find_map(|(_, batch)| batch.values.get(storage_key));
        Ok(match pending {
            Some(value) => value.clone(),
            None => self.durable.values.get(storage_key).cloned(),
        })
    }

    fn session(&self, shard: ShardId, session: u64) -> Result<Option<SessionRecord>> {
        Ok(
            match self.newest(shard, |batch| batch.sessions.get(&session).cloned()) {
                Some(record) => record,
                None => self.durable.sessions.get(&(shard, session)).cloned(),
            },
        )
    }

    fn sessions(&self, shard: ShardId) -> Result<Vec<(u64, SessionRecord)>> {
        let mut table: BTreeMap<u64, SessionRecord> = self
            .durable
            .sessions
            .range((shard, 0)..=(shard, u64::MAX))
            .map(|((_, session), record)| (*session, record.clone()))
            .collect();
        for (_, batch) in self.unsynced.iter().filter(|(_, b)| b.shard == shard) {
            for (session, record) in &batch.sessions {
                match record {
                    Some(record) => table.insert(*session, record.clone()),
                    None => table.remove(session),
                };
            }
        }
        Ok(table.into_iter().collect())
    }

    fn meta(&self, name: &[u8]) -> Result<Option<Bytes>> {
        if name.len() > META_NAME_BYTES_MAX {
            return Err(Error::TooLarge {
                size: name.len() as u64,
                max: META_NAME_BYTES_MAX as u64,
            });
        }
        let pending = self.unsynced.iter().rev().find_map(|(_, batch)| {
            batch
                .meta
                .iter()
                .rev()
                .find(|(stored, _)| stored.as_slice() == name)
                .map(|(_, value)| Bytes::from(value.clone()))
        });
        Ok(pending.or_else(|| self.durable.meta.get(name).cloned()))
    }

    fn scan_page(&self, request: &ScanRequest<'_>) -> Result<ScanPage> {
        let (lower, upper) = request.bounds();
        let upper_bound = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let view = self.view((Bound::Included(lower), upper_bound));
        let mut page = PageBuilder::new(request);
        for (key, value) in view {
            if page.is_full() {
                return Ok(page.finish(Some(key.clone())));
            }
            page.offer(key, || Ok(value.clone()))?;
        }
        Ok(page.finish(upper))
    }

    fn expired_keys(
        &self,
        arc: Arc,
        start: &[u8],
        now_ms: u64,
        examine_max: usize,
        keys_max: usize,
    ) -> Result<ExpiredKeys> {
        let Some(range) = SweepStep::range(arc, start) else {
            return Ok(ExpiredKeys::default());
        };
        let mut step = SweepStep::new(examine_max, keys_max);
        for (key, value) in self.view(range) {
            if step.is_full(key) {
                break;
            }
            if value.expires_at_ms != 0 {
                step.expiring(key, value.live_at(now_ms));
            }
        }
        Ok(step.finish())
    }

    fn record_bytes_max(&self) -> u64 {
        self.record_bytes_max
    }

    fn commit_apply(&mut self, batch: ApplyBatch) -> Result<()> {
        let previous = self.applied(batch.shard)?;
        batch.validate(previous, self.record_bytes_max)?;
        self.unsynced.push_back((self.committed, batch));
        self.committed += 1;
        Ok(())
    }

    fn journal_mark(&self) -> u64 {
        self.committed
    }

    fn batches_durable(&mut self, mark: u64) {
        while self
            .unsynced
            .front()
            .is_some_and(|(sequence, _)| *sequence < mark)
        {
            if let Some((_, batch)) = self.unsynced.pop_front() {
                self.durable.absorb(batch);
            }
        }
    }
}
