//! The hash ring: where a key lives.
//!
//! `position(key) = xxh3_64(key)`. Clients and servers must agree on it forever, so it is pinned
//! by a golden-value test. The ring `[0, 2^64)` is cut into contiguous arcs, one per shard.
//! A shard's data is stored under `position (8 bytes, big-endian) ‖ key`, so one shard is one
//! contiguous key range in the LSM tree.

use serde::{Deserialize, Serialize};

/// The ring position of a user key.
#[inline]
pub fn position(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The storage key of a user key: `position BE ‖ key`.
pub fn storage_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&position(key).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// One contiguous arc `[start, end)` of the ring. `end == None` means the top of the ring
/// (2^64), which does not fit in a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arc {
    /// First position in the arc.
    pub start: u64,
    /// One past the last position, or `None` for the top of the ring.
    pub end: Option<u64>,
}

impl Arc {
    /// The whole ring.
    pub const FULL: Arc = Arc {
        start: 0,
        end: None,
    };

    /// Whether `position` falls in this arc.
    #[inline]
    pub fn contains(&self, position: u64) -> bool {
        position >= self.start && self.end.is_none_or(|end| position < end)
    }

    /// Whether this arc and `other` share a position.
    pub fn overlaps(&self, other: &Arc) -> bool {
        let below = |arc: &Arc, start: u64| arc.end.is_none_or(|end| start < end);
        below(self, other.start) && below(other, self.start)
    }

    /// Number of positions in the arc, as `u128` (the full ring has 2^64).
    pub fn width(&self) -> u128 {
        self.end.map_or(1u128 << 64, u128::from) - u128::from(self.start)
    }

    /// Cuts the arc at `at`, giving `[start, at)` and `[at, end)`. `None` unless `at` lies
    /// strictly inside the arc.
    pub fn split_at(&self, at: u64) -> Option<(Arc, Arc)> {
        if at <= self.start || !self.contains(at) {
            return None;
        }
        Some((
            Arc {
                start: self.start,
                end: Some(at),
            },
            Arc {
                start: at,
                end: self.end,
            },
        ))
    }

    /// The middle position, a natural split point.
    pub fn midpoint(&self) -> u64 {
        // width / 2 < 2^63 so the sum fits.
        self.start + (self.width() / 2) as u64
    }

    /// The ring cut into `count` equal arcs (the last absorbs the remainder). `count` of 0 is
    /// treated as 1.
    pub fn split_even(count: u64) -> Vec<Arc> {
        let count = count.max(1);
        let step = (1u128 << 64) / u128::from(count);
        (0..count)
            .map(|i| {
                let start = (step * u128::from(i)) as u64;
                let end = if i + 1 == count {
                    None
                } else {
                    Some((step * u128::from(i + 1)) as u64)
                };
                Arc { start, end }
            })
            .collect()
    }

    /// The storage-key range `[lower, upper)` that holds this arc's data; `upper == None` means
    /// "to the end of the keyspace".
    pub fn storage_bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            self.start.to_be_bytes().to_vec(),
            self.end.map(|end| end.to_be_bytes().to_vec()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values (cross-checked against the reference xxHash implementation's Python binding):
    /// if these change, every existing cluster's data is in the wrong shard.
    #[test]
    fn position_is_pinned() {
        let cases: [(&[u8], u64); 3] = [
            (b"", 0x2d06800538d394c2),
            (b"a", 0xe6c632b61e964e1f),
            (b"ringkv", 0x115c485cf2d256c6),
        ];
        for (key, expected) in cases {
            assert_eq!(
                position(key),
                expected,
                "position({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn even_split_covers_the_ring_once() {
        for count in [1u64, 2, 3, 16, 7] {
            let arcs = Arc::split_even(count);
            assert_eq!(arcs.len() as u64, count);
            assert_eq!(arcs[0].start, 0);
            assert_eq!(arcs.last().unwrap().end, None);
            for pair in arcs.windows(2) {
                assert_eq!(pair[0].end, Some(pair[1].start));
            }
            let total: u128 = arcs.iter().map(Arc::width).sum();
            assert_eq!(total, 1u128 << 64);
        }
    }

    #[test]
    fn split_and_contains() {
        let full = Arc::FULL;
        let mid = full.midpoint();
        assert_eq!(mid, 1 << 63);
        let (low, high) = full.split_at(mid).unwrap();
        assert!(low.contains(0) && low.contains(mid - 1) && !low.contains(mid));
        assert!(high.contains(mid) && high.contains(u64::MAX));
        assert!(full.split_at(0).is_none());
        assert!(low.split_at(mid).is_none());
    }

    #[test]
    fn storage_key_prefixes_position() {
        let key = storage_key(b"k");
        assert_eq!(&key[..8], &position(b"k").to_be_bytes());
        assert_eq!(&key[8..], b"k");
    }
}
