//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use bytes::Bytes;
use ringkv_storage::{Store, StoreConfig};
use ringkv_types::raft::{Entry, EntryPayload};
use ringkv_types::{LogIndex, Term};
use std::path::Path;

pub fn open(path: &Path) -> Store {
    Store::open(StoreConfig::new(path)).expect("open store")
}

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from(format!("entry {index} of term {term}"))),
    }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

/// A small deterministic RNG (splitmix64) so failures print a seed that reproduces them.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
