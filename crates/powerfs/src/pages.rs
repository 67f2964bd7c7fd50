//! File contents as sparse, copy-on-write pages (the live and durable copies of a file share
//! pages until one of them is written).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Size of one page of file data.
pub const PAGE: usize = 4096;
pub(crate) const PAGE_U64: u64 = PAGE as u64;

/// File contents as sparse pages: a missing page reads as zeros. Pages are shared between the
/// live and durable copies until written (copy on write), so an fsync copies page pointers only.
#[derive(Clone, Debug, Default)]
pub struct Pages {
    pub size: u64,
    pub(crate) pages: BTreeMap<u64, Arc<[u8; PAGE]>>,
}

impl Pages {
    pub(crate) fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        if offset >= self.size {
            return Vec::new();
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = vec![0u8; (end - offset) as usize];
        let mut position = offset;
        while position < end {
            let index = position / PAGE_U64;
            let within = (position % PAGE_U64) as usize;
            let take = (PAGE - within).min((end - position) as usize);
            if let Some(page) = self.pages.get(&index) {
                let at = (position - offset) as usize;
                out[at..at + take].copy_from_slice(&page[within..within + take]);
            }
            position += take as u64;
        }
        out
    }

    /// Writes `data` at `offset`; returns the pages touched.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8], dirty: &mut BTreeSet<u64>) {
        let mut position = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = position / PAGE_U64;
            let within = (position % PAGE_U64) as usize;
            let take = (PAGE - within).min(rest.len());
            let page = self
                .pages
                .entry(index)
                .or_insert_with(|| Arc::new([0u8; PAGE]));
            Arc::make_mut(page)[within..within + take].copy_from_slice(&rest[..take]);
            dirty.insert(index);
            rest = &rest[take..];
            position += take as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    pub(crate) fn truncate(&mut self, size: u64, dirty: &mut BTreeSet<u64>) {
        if size < self.size {
            let keep = size.div_ceil(PAGE_U64);
            for index in self.pages.split_off(&keep).into_keys() {
                dirty.insert(index);
            }
            let within = (size % PAGE_U64) as usize;
            if within != 0
                && let Some(page) = self.pages.get_mut(&(size / PAGE_U64))
            {
                Arc::make_mut(page)[within..].fill(0);
                dirty.insert(size / PAGE_U64);
            }
        }
        self.size = size;
    }

    pub(crate) fn allocated(&self) -> u64 {
        self.pages.len() as u64 * PAGE_U64
    }
}
