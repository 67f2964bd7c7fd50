//! One page of a key scan over a shard's arc, in storage order (ring position, then key).
//!
//! The cursor between pages is a storage key, the inclusive lower bound of the next page:
//! storage order does not depend on how the ring is cut into shards, so a cursor stays valid
//! across splits and moves, and pages that each start at their cursor never return a key twice
//! and never skip a key that stays in place (see `docs/data-model.md`).

use crate::error::Result;
use crate::store::{Store, decode_value};
use bytes::Bytes;
use ringkv_types::ring::Arc;
use std::ops::Bound;

/// What one page reads.
#[derive(Clone, Debug)]
pub struct ScanRequest<'a> {
    /// The shard's arc: the page never leaves it.
    pub arc: Arc,
    /// Inclusive lower bound, a storage key (position BE ‖ user key); empty = the arc's start.
    /// A bound below the arc's start is raised to it.
    pub start: &'a [u8],
    /// Only user keys starting with these bytes are returned (every key is still examined:
    /// keys are hashed, so a prefix is scattered over the ring).
    pub prefix: &'a [u8],
    /// Most items to return.
    pub limit: usize,
    /// Leave values out (versions are still returned).
    pub keys_only: bool,
    /// Most keys to examine (matching or not) before the page ends: bounds the work of one
    /// page when few keys match.
    pub examine_max: usize,
    /// The page ends once its keys and values reach this many bytes.
    pub bytes_max: usize,
    /// Log time of the read: values whose TTL has run out by then are left out (0 = keep
    /// every value).
    pub now_ms: u64,
}

/// One key of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanItem {
    /// The user key.
    pub key: Bytes,
    /// Its version (log index of its last write; 0 = written before versions).
    pub version: u64,
    /// Its value, unless the scan is keys-only.
    pub value: Option<Bytes>,
}

/// A page of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Matching keys, in storage order.
    pub items: Vec<ScanItem>,
    /// Where the next page starts (an inclusive storage-key bound): inside the arc when the
    /// page stopped early, else the arc's end. `None` when the arc reaches the top of the ring
    /// and was read to its end: the scan is complete.
    pub next: Option<Vec<u8>>,
}

impl ScanRequest<'_> {
    /// The storage-key range the page reads: from the larger of `start` and the arc's start,
    /// to the arc's end (`None` = the top of the ring).
    pub(crate) fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let (arc_lower, arc_upper) = self.arc.storage_bounds();
        let lower = if self.start > arc_lower.as_slice() {
            self.start.to_vec()
        } else {
            arc_lower
        };
        (lower, arc_upper)
    }
}

/// Builds one page from keys offered in storage order: the one place the page rules live
/// (limits, prefix, expiry), for every [`StateStore`](crate::StateStore) implementation.
pub(crate) struct PageBuilder<'r, 'a> {
    request: &'r ScanRequest<'a>,
    items: Vec<ScanItem>,
    bytes: usize,
    examined: usize,
}

impl<'r, 'a> PageBuilder<'r, 'a> {
    pub(crate) fn new(request: &'r ScanRequest<'a>) -> Self {
        Self {
            request,
            items: Vec::new(),
            bytes: 0,
            examined: 0,
        }
    }

    /// Whether the page is complete: the next key offered starts the next page instead.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= self.request.limit.max(1)
            || self.bytes >= self.request.bytes_max
            || self.examined >= self.request.examine_max.max(1)
    }

    /// Offers the next stored key (a storage key) with its value, decoded only when the key
    /// matches the prefix.
    ///
    /// # Errors
    /// The error of `value`.
    pub(crate) fn offer(
        &mut self,
        key: &[u8],
        value: impl FnOnce() -> Result<crate::value::Versioned>,
    ) -> Result<()> {
        self.examined += 1;
        let user_key = key.get(8..).unwrap_or_default();
        if !user_key.starts_with(self.request.prefix) {
            return Ok(());
        }
        let stored = value()?;
        if !stored.live_at(self.request.now_ms) {
            return Ok(());
        }
        self.bytes += user_key.len() + 8;
        let value = if self.request.keys_only {
            None
        } else {
            self.bytes += stored.value.len();
            Some(stored.value)
        };
        self.items.push(ScanItem {
            key: Bytes::copy_from_slice(user_key),
            version: stored.version,
            value,
        });
        Ok(())
    }

    /// The page, continuing at `next`.
    pub(crate) fn finish(self, next: Option<Vec<u8>>) -> ScanPage {
        ScanPage {
            items: self.items,
            next,
        }
    }
}

impl Store {
    /// Reads one page of `request` from one consistent view of the store. Callers serve it
    /// once the shard's applied state is as fresh as the read asks (the same rule as a get).
    ///
    /// # Errors
    /// [`Error::CorruptRecord`](crate::Error::CorruptRecord) for a value that fails its check;
    /// I/O.
    pub fn scan_page(&self, request: &ScanRequest<'_>) -> Result<ScanPage> {
        let shared = &self.shared;
        let view = shared.db.snapshot();
        let (lower, arc_upper) = request.bounds();
        let upper = arc_upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let max = shared.config.record_bytes_max;
        let mut page = PageBuilder::new(request);
        let range = fjall::Readable::range(&view, &shared.data, (Bound::Included(lower), upper));
        for guard in range {
            let (key, value) = guard.into_inner()?;
            if page.is_full() {
                return Ok(page.finish(Some(key.to_vec())));
            }
            page.offer(&key, || decode_value(&value, max))?;
        }
        Ok(page.finish(arc_upper))
    }
}

/// What [`Store::expired_keys`] found in one step of a sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpiredKeys {
    /// User keys whose TTL has run out, in storage order.
    pub keys: Vec<Bytes>,
    /// Where the next step starts (an inclusive storage-key bound inside the arc); `None` when
    /// this step reached the end of the arc (the next sweep starts again at its start).
    pub next: Option<Vec<u8>>,
    /// Whether the step examined any value with a TTL (expired or not): a pass over the whole
    /// arc that saw none tells the leader the shard holds no TTLs.
    pub expiring_seen: bool,
}

impl Store {
    /// One step of a sweep for expired keys over `arc`, from the storage key `start` (empty =
    /// the arc's start): examines at most `examine_max` keys and returns those whose TTL has run
    /// out at log time `now_ms` (at most `keys_max`). The shard's leader proposes their removal
    /// (`Operation::Expire`); reads already leave them out, so a sweep only frees space and
    /// makes the removal an event in the log.
    ///
    /// # Errors
    /// [`Error::CorruptRecord`](crate::Error::CorruptRecord); I/O.
    pub fn expired_keys(
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
        let max = self.shared.config.record_bytes_max;
        let mut step = SweepStep::new(examine_max, keys_max);
        for guard in self.shared.data.range::<Vec<u8>, _>(range) {
            let (key, value) = guard.into_inner()?;
            if step.is_full(&key) {
                break;
            }
            // Only format 3 carries an expiry: skip the others without decoding them.
            if value.first() != Some(&crate::value::FORMAT_EXPIRING) {
                continue;
            }
            step.expiring(&key, decode_value(&value, max)?.live_at(now_ms));
        }
        Ok(step.finish())
    }
}

/// A range of storage keys.
pub(crate) type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// One step of a sweep for expired keys, the same for every [`crate::StateStore`]: the range it
/// walks, and what it collects from the keys it examines.
pub(crate) struct SweepStep {
    found: ExpiredKeys,
    examined: usize,
    examine_max: usize,
    keys_max: usize,
}

impl SweepStep {
    /// The storage-key range of a step over `arc` from `start` (empty = the arc's start);
    /// `None` when the cursor is at or past the arc's end (the arc shrank in a split: the pass
    /// is over).
    pub(crate) fn range(arc: Arc, start: &[u8]) -> Option<KeyRange> {
        let (arc_lower, arc_upper) = arc.storage_bounds();
        let lower = if start > arc_lower.as_slice() {
            start.to_vec()
        } else {
            arc_lower
        };
        if arc_upper.as_ref().is_some_and(|upper| lower >= *upper) {
            return None;
        }
        let upper = arc_upper.map_or(Bound::Unbounded, Bound::Excluded);
        Some((Bound::Included(lower), upper))
    }

    /// A step that examines at most `examine_max` keys and collects at most `keys_max`.
    pub(crate) fn new(examine_max: usize, keys_max: usize) -> Self {
        Self {
            found: ExpiredKeys::default(),
            examined: 0,
            examine_max: examine_max.max(1),
            keys_max: keys_max.max(1),
        }
    }

    /// Whether the step is full before the storage key `key`, which is then where the next
    /// step starts; else `key` counts as examined.
    pub(crate) fn is_full(&mut self, key: &[u8]) -> bool {
        if self.examined >= self.examine_max || self.found.keys.len() >= self.keys_max {
            self.found.next = Some(key.to_vec());
            return true;
        }
        self.examined += 1;
        false
    }

    /// The value at storage key `key` carries a TTL; `live` whether it still holds.
    pub(crate) fn expiring(&mut self, key: &[u8], live: bool) {
        self.found.expiring_seen = true;
        if !live {
            self.found
                .keys
                .push(Bytes::copy_from_slice(key.get(8..).unwrap_or_default()));
        }
    }

    /// What the step found.
    pub(crate) fn finish(self) -> ExpiredKeys {
        self.found
    }
}
