//! The node's one store: a fjall database with the five keyspaces, the per-group caches and the
//! group-commit writer.

use crate::codec;
use crate::config::StoreConfig;
use crate::error::LostShard;
use crate::error::{Error, Result};
use crate::group_state::AppliedState;
use crate::group_storage::GroupStorage;
use crate::keys::{
    self, KEYSPACE_DATA, KEYSPACE_META, KEYSPACE_RAFT_LOG, KEYSPACE_RAFT_STATE, KEYSPACE_STAGING,
};
use crate::mark::{self, Mark, Marker};
use crate::session_table::SessionTables;
use crate::space::{SpaceMonitor, SpaceStatus};
pub(crate) use crate::store_shared::{Shared, lock_group};
use crate::value::Versioned;
use crate::write_batch::WriteBatchBuilder;
use crate::writer::{Durable, Ticket, WriterHandle};
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use ringkv_types::raft::ConfState;
use ringkv_types::{LogIndex, ShardId, ring};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The node's storage: Raft logs and small state of every group, shard data, sessions and
/// snapshots, in one fjall database with one journal.
///
/// Cheap to clone. Reads may come from any thread. Raft log writes go through the single
/// group-commit writer ([`Store::submit`]); state-machine writes through [`Store::apply`] on the
/// thread that applies each shard (one applier per shard at a time).
///
/// Dropping the last clone stops the writer after it finished the queued batches. All
/// [`GroupStorage`] handles must be dropped too before the same directory can be opened again.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
}

impl Store {
    /// Opens (creating when missing) the store in `config.path`, recovering the journal.
    ///
    /// # Errors
    /// Invalid config; fjall errors (the directory is locked by another process, journal
    /// recovery failed, I/O).
    pub fn open(config: StoreConfig) -> Result<Store> {
        config.validate()?;
        let created = !config.path.exists();
        std::fs::create_dir_all(&config.path)?;
        if created && let Some(parent) = config.path.parent() {
            // A new directory's name is durable only once its parent is fsync'd.
            sync_dir(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?;
        }
        // fjall 3.1 ignores `max_write_buffer_size`: the store bounds the memtables itself
        // (see `write_buffer`).
        let db = Database::builder(&config.path)
            .cache_size(config.cache_bytes)
            .open()?;
        let keyspace = |name: &str| -> Result<Keyspace> {
            keys::validate_keyspace_name(name)?;
            Ok(db.keyspace(name, KeyspaceCreateOptions::default)?)
        };
        let raft_log = keyspace(KEYSPACE_RAFT_LOG)?;
        let raft_state = keyspace(KEYSPACE_RAFT_STATE)?;
        let data = keyspace(KEYSPACE_DATA)?;
        let meta = keyspace(KEYSPACE_META)?;
        let staging = keyspace(KEYSPACE_STAGING)?;
        // IMPORTANT: fjall 3.1 creates each keyspace's folder under `keyspaces/` and fsyncs
        // that folder's contents but never `keyspaces/` itself, so the keyspaces' names are
        // not durable: a power cut can lose every keyspace of a new store (the power-loss
        // tests on powerfs caught it). Cheap, and needed once only, but done on every open.
        sync_dir(&config.path.join("keyspaces"))?;
        sync_dir(&config.path)?;
        let commit_seq = check_mark(&config, &meta, &raft_log)?;
        let poisoned = Arc::new(AtomicBool::new(false));
        let poison = poisoned.clone();
        // IMPORTANT: a failed write or fsync of the mark file poisons the store like a failed
        // journal fsync: the disk is failing and the mark can no longer be trusted.
        let marker = Marker::spawn(&config.path, commit_seq, move |_| {
            poison.store(true, Ordering::Release);
        })?;
        let shared = Arc::new(Shared {
            marker,
            commit_seq: AtomicU64::new(commit_seq),
            raft_log,
            raft_state,
            data,
            meta,
            staging,
            next_staging: AtomicU64::new(1),
            staging_garbage: Mutex::new(Vec::new()),
            install_fault: Mutex::new(None),
            db,
            space: SpaceMonitor::new(config.space_reserve_bytes),
            config,
            poisoned,
            groups: Mutex::new(HashMap::new()),
            sessions: SessionTables::default(),
            #[cfg(test)]
            fail_fsyncs: AtomicU64::new(0),
        });
        // IMPORTANT: a snapshot install interrupted by a crash is finished (or its unmarked
        // staging deleted) before anything reads a group.
        shared.recover_installs()?;
        let writer = Arc::new(WriterHandle::spawn(shared.clone())?);
        Ok(Store { shared, writer })
    }

    /// Bytes in fjall's memtables (active and sealed, all keyspaces): what
    /// `StoreConfig::write_buffer_bytes` bounds (for metrics and the memory benchmarks).
    pub fn write_buffer_bytes(&self) -> u64 {
        self.shared.db.write_buffer_size()
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// A cheap handle on `shard`'s log for the Raft core (it implements
    /// [`ringkv_raft::Storage`]). A group with nothing persisted starts empty.
    ///
    /// # Errors
    /// Corruption or I/O while loading the group's state on first use.
    pub fn group(&self, shard: ShardId) -> Result<GroupStorage> {
        Ok(GroupStorage::new(
            self.shared.clone(),
            shard,
            self.shared.group(shard)?,
        ))
    }

    /// Every shard with a log entry or a state record on disk, ascending, for the node's
    /// restart. Costs one seek per shard per keyspace.
    ///
    /// # Errors
    /// Malformed keys; I/O.
    pub fn groups(&self) -> Result<Vec<ShardId>> {
        let mut shards = std::collections::BTreeSet::new();
        for (keyspace, name) in [
            (&self.shared.raft_log, KEYSPACE_RAFT_LOG),
            (&self.shared.raft_state, KEYSPACE_RAFT_STATE),
        ] {
            let mut from = Some(0u64);
            while let Some(start) = from {
                let Some(guard) = keyspace.range(start.to_be_bytes()..).next() else {
                    break;
                };
                let key = guard.key()?;
                let prefix: [u8; 8] =
                    key.get(..8)
                        .and_then(|p| p.try_into().ok())
                        .ok_or(Error::MalformedKey {
                            keyspace: name,
                            len: key.len(),
                        })?;
                let shard = u64::from_be_bytes(prefix);
                shards.insert(ShardId(shard));
                from = shard.checked_add(1);
            }
        }
        Ok(shards.into_iter().collect())
    }

    /// Hands a filled batch to the group-commit writer. See [`WriteBatchBuilder`] for the
    /// durability contract. Blocks while `writer_queue_depth` batches are already queued.
    ///
    /// # Errors
    /// [`Error::Poisoned`] once any earlier write failed; [`Error::WriterStopped`].
    pub fn submit(&self, batch: WriteBatchBuilder) -> Result<Ticket> {
        self.shared.check_writable()?;
        self.writer.submit(batch)
    }

    /// [`Store::submit`] and wait for the result.
    ///
    /// # Errors
    /// As [`Store::submit`] and [`Ticket::wait`].
    pub fn write(&self, batch: WriteBatchBuilder) -> Result<Durable> {
        self.submit(batch)?.wait()
    }

    /// Waits until the durable mark covers every group commit so far and returns its commit
    /// sequence. The mark normally lags by about one commit; tests call this before damaging
    /// a journal on purpose.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when writing the mark failed.
    pub fn sync_mark(&self) -> Result<u64> {
        self.shared.marker.flush().map_err(|_| Error::Poisoned)
    }

    /// Free space on the data dir's filesystem and the low-space alarm (see
    /// [`StoreConfig::space_reserve_bytes`]). Measured at most every 100 ms unless `fresh`.
    ///
    /// # Errors
    /// I/O (statvfs).
    pub fn space(&self, fresh: bool) -> Result<SpaceStatus> {
        self.shared.space.status(&self.shared.config.path, fresh)
    }

    /// Whether a write failed and the store refuses all writes.
    pub fn is_poisoned(&self) -> bool {
        self.shared.check_writable().is_err()
    }

    /// The value of a user key, from whichever shard holds it.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`] when the stored value fails its checksum; I/O.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key)?.map(|versioned| versioned.value))
    }

    /// The value of a user key and its version (the log index of its last write; 0 for a value
    /// written before versions existed), from whichever shard holds it.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_versioned(&self, key: &[u8]) -> Result<Option<Versioned>> {
        match self.shared.data.get(ring::storage_key(key))? {
            Some(bytes) => decode_value(&bytes, self.shared.config.record_bytes_max).map(Some),
            None => Ok(None),
        }
    }

    /// [`Store::get_versioned`] as a read at log time `now_ms` sees it: a value whose TTL has
    /// run out by then is absent (it is still stored until its shard's leader removes it through
    /// the log). The node reads with its notion of the shard's log time (docs/data-model.md).
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_live(&self, key: &[u8], now_ms: u64) -> Result<Option<Versioned>> {
        Ok(self
            .get_versioned(key)?
            .filter(|found| found.live_at(now_ms)))
    }

    /// Whether a user key has a value, ignoring expiry, from whichever shard holds it. Cheaper than
    /// [`Store::get`] for large values: the value is neither copied nor checksummed.
    ///
    /// # Errors
    /// I/O.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        Ok(self.shared.data.contains_key(ring::storage_key(key))?)
    }

    /// Bytes (user key + stored value) and number of keys in the data of `arc`, by a scan of
    /// the range at one point in time. Linear in the shard's size: meant for periodic size
    /// reports (placement driver split decisions), off the event loop.
    ///
    /// # Errors
    /// I/O while scanning.
    pub fn data_size(&self, arc: ring::Arc) -> Result<DataSize> {
        let (lower, upper) = arc.storage_bounds();
        let upper = upper.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut size = DataSize::default();
        for guard in self
            .shared
            .data
            .range::<Vec<u8>, _>((std::ops::Bound::Included(lower), upper))
        {
            let (key, value) = guard.into_inner()?;
            // The storage key is the 8-byte ring position followed by the user key.
            size.bytes += (key.len().saturating_sub(8) + value.len()) as u64;
            size.keys += 1;
        }
        Ok(size)
    }

    /// The applied position of `shard` (zero for a new shard).
    ///
    /// # Errors
    /// Corruption or I/O while loading the group.
    pub fn applied(&self, shard: ShardId) -> Result<AppliedState> {
        let state = self.shared.group(shard)?;
        let applied = lock_group(&state).applied;
        Ok(applied)
    }

    /// The configuration saved with the applied position, if any.
    ///
    /// # Errors
    /// Corruption or I/O while loading the group.
    pub fn conf_state(&self, shard: ShardId) -> Result<Option<ConfState>> {
        let state = self.shared.group(shard)?;
        let conf = lock_group(&state).conf.clone();
        Ok(conf)
    }

    /// Makes every write so far durable (one fdatasync of the journal). Apply batches are
    /// written without an fsync of their own; they become durable with the next group commit
    /// or this call.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; a failed fsync poisons the store.
    pub fn persist(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared
            .db
            .persist(PersistMode::SyncData)
            .map_err(|error| {
                self.shared.poison();
                self.shared.write_error(error)
            })?;
        #[cfg(test)]
        self.shared.injected_fsync_failure()?;
        Ok(())
    }

    /// Seals every keyspace's memtable, so fjall's background workers flush them into table
    /// files (and compact those) now rather than when a memtable is full. For tests of flushes
    /// and compactions (a full disk); the node never calls it.
    ///
    /// # Errors
    /// fjall errors (the database was stopped by an earlier failure).
    #[doc(hidden)]
    pub fn rotate_memtables(&self) -> Result<()> {
        for keyspace in [
            &self.shared.raft_log,
            &self.shared.raft_state,
            &self.shared.data,
            &self.shared.meta,
        ] {
            keyspace
                .rotate_memtable()
                .map_err(|error| self.shared.write_error(error))?;
        }
        Ok(())
    }
}

/// Compares the commit sequence recovered from the database with the durable mark, creating the
/// mark for a store that has none yet. Returns the recovered commit sequence.
fn check_mark(config: &StoreConfig, meta: &Keyspace, raft_log: &Keyspace) -> Result<u64> {
    let recovered: Option<u64> = match meta.get(keys::COMMIT_SEQ_KEY)? {
        Some(bytes) => Some(
            codec::decode(&bytes, 64)
                .map_err(|reason| Error::corrupt_record("commit_seq", None, reason))?,
        ),
        None => None,
    };
    match (mark::read(&config.path)?, recovered) {
        (Some(marked), recovered) if recovered.unwrap_or(0) < marked.commit_seq => {
            let mut shards = Vec::with_capacity(marked.shards.len());
            for (shard, marked_last) in marked.shards {
                let recovered_last = match raft_log.prefix(keys::shard_prefix(shard)).next_back() {
                    Some(guard) => keys::parse_log_key(&guard.key()?)?.1,
                    None => LogIndex::ZERO,
                };
                shards.push(LostShard {
                    shard,
                    marked_last,
                    recovered_last,
                });
            }
            Err(Error::LostWrites {
                path: config.path.clone(),
                recovered: recovered.unwrap_or(0),
                marked: marked.commit_seq,
                shards,
                more: marked.more,
            })
        }
        (Some(_), recovered) => Ok(recovered.unwrap_or(0)),
        (None, Some(recovered)) => Err(Error::MarkMissing {
            path: config.path.join(mark::MARK_FILE),
            reason: format!(
                "the file does not exist, but the database holds group commit {recovered}"
            ),
        }),
        // A new store, or one written before marks existed: start marking from here.
        (None, None) => {
            mark::create(&config.path, &Mark::default())?;
            Ok(0)
        }
    }
}

/// Decodes a `data` value of either stored format (see `value`).
pub(crate) fn decode_value(bytes: &[u8], max: u64) -> Result<Versioned> {
    crate::value::decode(bytes, max)
}

/// What [`Store::data_size`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSize {
    /// User key and stored value bytes.
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
}

/// fsyncs a directory, which makes the names in it durable.
fn sync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}
