//! The shard map: every shard's descriptor, sorted by arc, covering the ring exactly once.

use crate::ring;
use crate::shard::ShardDescriptor;
use serde::{Deserialize, Serialize};

/// The shard map as a node (or a client's cache) knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Monotonic version of the map at the placement driver.
    pub version: u64,
    /// Descriptors sorted by arc start, covering the ring once.
    pub shards: Vec<ShardDescriptor>,
}

impl ShardMap {
    /// The shard owning ring `position` (binary search), or `None` if the map has a hole there.
    pub fn shard_for_position(&self, position: u64) -> Option<&ShardDescriptor> {
        let after = self
            .shards
            .partition_point(|shard| shard.arc.start <= position);
        let candidate = self.shards.get(after.checked_sub(1)?)?;
        candidate.arc.contains(position).then_some(candidate)
    }

    /// The shard owning `key`.
    pub fn shard_for_key(&self, key: &[u8]) -> Option<&ShardDescriptor> {
        self.shard_for_position(ring::position(key))
    }

    /// Whether the arcs are sorted, contiguous, and cover the ring exactly once. A map received
    /// from the network is checked before it is used for routing.
    pub fn covers_ring(&self) -> bool {
        let Some(first) = self.shards.first() else {
            return false;
        };
        if first.arc.start != 0 {
            return false;
        }
        let contiguous = self.shards.windows(2).all(|pair| match pair {
            [low, high] => low.arc.end == Some(high.arc.start) && high.arc.start > low.arc.start,
            _ => false,
        });
        contiguous
            && self
                .shards
                .last()
                .is_some_and(|last| last.arc.end.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;
    use crate::ring::Arc;
    use crate::shard::Epoch;

    fn map(arcs: Vec<Arc>) -> ShardMap {
        let shards = arcs
            .into_iter()
            .enumerate()
            .map(|(i, arc)| ShardDescriptor {
                id: ShardId(i as u64 + 1),
                arc,
                epoch: Epoch::default(),
                replicas: Vec::new(),
            })
            .collect();
        ShardMap { version: 1, shards }
    }

    #[test]
    fn lookup_finds_the_owning_arc() {
        let map = map(Arc::split_even(4));
        assert!(map.covers_ring());
        let quarter = 1u64 << 62;
        let cases = [
            (0, 1),
            (quarter - 1, 1),
            (quarter, 2),
            (3 * quarter, 4),
            (u64::MAX, 4),
        ];
        for (position, shard) in cases {
            assert_eq!(
                map.shard_for_position(position).map(|s| s.id),
                Some(ShardId(shard)),
                "{position}"
            );
        }
        assert!(map.shard_for_key(b"any key").is_some());
    }

    #[test]
    fn holes_and_overlaps_are_detected() {
        assert!(!ShardMap::default().covers_ring());
        let hole = map(vec![
            Arc {
                start: 0,
                end: Some(10),
            },
            Arc {
                start: 20,
                end: None,
            },
        ]);
        assert!(!hole.covers_ring());
        assert!(hole.shard_for_position(15).is_none());
        let open_end = map(vec![Arc {
            start: 0,
            end: Some(10),
        }]);
        assert!(!open_end.covers_ring());
        assert!(open_end.shard_for_position(10).is_none());
    }
}
