//! Scans: the keys of the client's namespace (optionally under a prefix) in ring order, page
//! by page, each page from the shard that owns the cursor.
//!
//! The cursor is a storage key (`position BE ‖ key`), the inclusive start of the next page.
//! Storage order does not depend on how the ring is cut, so the cursor survives splits and
//! moves: a page sent with an outdated map is refused (`EpochMismatch`, `KeyNotInShard`) and
//! re-sent to the shard that owns the cursor now. Keys are hashed, so the order is by ring
//! position, not by key, and a prefix scan examines every key of every shard.

use super::*;
use std::collections::VecDeque;

/// How a scan reads.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Keys per page asked of the server (it caps pages at 1000 keys and about 1 MiB).
    pub page_size: u32,
    /// Leave values out.
    pub keys_only: bool,
    /// Freshness of each page.
    pub consistency: ReadConsistency,
    /// Resume from this cursor (from [`Scan::cursor`]); `None` starts at the ring's start.
    pub cursor: Option<Bytes>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            page_size: 100,
            keys_only: false,
            consistency: ReadConsistency::Linearizable,
            cursor: None,
        }
    }
}

/// One key of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    /// The key (without the client's namespace).
    pub key: Bytes,
    /// Its version (log index of its last write).
    pub version: u64,
    /// Its value; `None` for a keys-only scan.
    pub value: Option<Bytes>,
}

/// A scan in progress: call [`Scan::next`] (or [`Scan::next_page`]) until it answers `None`.
///
/// Guarantees (the same as Redis `SCAN`'s): a key present for the whole scan is returned
/// exactly once; a key written or deleted during the scan may or may not be. Each page is read
/// with the asked consistency at one point of its shard's history.
#[derive(Debug)]
pub struct Scan {
    client: Client,
    prefix: Bytes,
    strip: usize,
    options: ScanOptions,
    /// Where the next page starts; `None` once the ring's end is reached.
    cursor: Option<Bytes>,
    buffered: VecDeque<ScanEntry>,
}

impl Client {
    /// Starts a scan of the keys starting with `prefix` (empty: every key) in the client's
    /// namespace. Nothing is sent until the first [`Scan::next`].
    ///
    /// # Errors
    /// [`Error::Config`] when the prefix cannot be namespaced.
    pub fn scan(&self, prefix: impl Into<Bytes>, options: ScanOptions) -> Result<Scan> {
        let prefix = self.wire_key(prefix.into())?;
        let strip = self.namespace().map_or(0, |ns| 1 + ns.len());
        let cursor = Some(options.cursor.clone().unwrap_or_default());
        Ok(Scan {
            client: self.clone(),
            prefix,
            strip,
            options,
            cursor,
            buffered: VecDeque::new(),
        })
    }
}

impl Scan {
    /// The next key, fetching pages as needed; `None` when the scan is complete.
    ///
    /// # Errors
    /// See [`Error`]; the scan can be resumed from [`Scan::cursor`] afterwards.
    pub async fn next(&mut self) -> Result<Option<ScanEntry>> {
        loop {
            if let Some(entry) = self.buffered.pop_front() {
                return Ok(Some(entry));
            }
            match self.next_page().await? {
                Some(page) => self.buffered.extend(page),
                None => return Ok(None),
            }
        }
    }

    /// The next non-empty page (skipping pages with no matching keys); `None` when the scan
    /// is complete. Keys buffered by [`Scan::next`] come first.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn next_page(&mut self) -> Result<Option<Vec<ScanEntry>>> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        while let Some(start) = self.cursor.clone() {
            let position = start
                .first_chunk::<8>()
                .map_or(0, |bytes| u64::from_be_bytes(*bytes));
            let op = KvOp::Scan {
                start,
                prefix: self.prefix.clone(),
                limit: self.options.page_size.max(1),
                keys_only: self.options.keys_only,
                consistency: self.options.consistency,
            };
            let KvResult::ScanPage { items, next, .. } =
                self.client.execute(position, op, None).await?
            else {
                return Err(Error::UnexpectedResponse { request: "scan" });
            };
            self.cursor = next;
            let page: Vec<ScanEntry> = items
                .into_iter()
                .map(|item| ScanEntry {
                    key: item.key.slice(self.strip.min(item.key.len())..),
                    version: item.version.0,
                    value: item.value,
                })
                .collect();
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }

    /// Where the scan resumes: pass it as [`ScanOptions::cursor`] to continue later (keys
    /// fetched but not yet returned by [`Scan::next`] are returned again). `None` when the
    /// scan is complete.
    pub fn cursor(&self) -> Option<Bytes> {
        if self.buffered.is_empty() {
            self.cursor.clone()
        } else {
            self.resume_point()
        }
    }

    /// The storage key of the first buffered entry: the scan resumes there.
    fn resume_point(&self) -> Option<Bytes> {
        let entry = self.buffered.front()?;
        let mut wire = self
            .prefix
            .slice(..self.strip.min(self.prefix.len()))
            .to_vec();
        wire.extend_from_slice(&entry.key);
        Some(Bytes::from(ringkv_types::ring::storage_key(&wire)))
    }
}
