//! Identifier and index newtypes shared by every crate.
//!
//! A bare `u64` invites swapped arguments (`(term, index)` vs `(index, term)`), so every id and
//! every Raft counter that crosses a crate boundary has its own type.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            #[inline]
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            #[inline]
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// A node (one `ringkvd` process with one data dir). `NodeId(0)` means "none".
    NodeId,
    "n"
);
id_type!(
    /// A shard, and therefore the Raft group that replicates it. The placement driver is group 0.
    ShardId,
    "s"
);

impl NodeId {
    /// The "no node" value: used for `vote` when no vote was cast and `leader` when unknown.
    pub const NONE: NodeId = NodeId(0);

    /// Whether this is a real node id.
    #[inline]
    pub const fn is_some(self) -> bool {
        self.0 != 0
    }
}

/// Node ids must be below this bound: a Raft member id packs the node id in its high 32 bits.
pub const NODE_ID_LIMIT: u64 = 1 << 32;

/// The Raft member id of `node`'s `incarnation`-th replica of a shard: `(node << 32) |
/// incarnation`.
///
/// Raft member ids are distinct from node ids because a node removed from a shard and added
/// back must join as a NEW member: with its old id, votes and acknowledgements its previous
/// incarnation gave could be counted again, and a stale configuration could elect a leader that
/// lacks committed entries (the simulator found exactly this, seed 185). Replicas created at
/// bootstrap (and by a split) are incarnation 1; a learner added by a configuration change is
/// incarnation `conf_ver` of the descriptor that adds it, fresh within the shard because
/// `conf_ver` only grows.
///
/// `node` must be below [`NODE_ID_LIMIT`] (the node's config validation enforces it); higher bits
/// are dropped.
pub const fn member_id(node: NodeId, incarnation: u32) -> NodeId {
    NodeId(((node.0 & 0xFFFF_FFFF) << 32) | incarnation as u64)
}

/// The node of a Raft member id (see [`member_id`]).
pub const fn member_node(member: NodeId) -> NodeId {
    NodeId(member.0 >> 32)
}

/// The incarnation of a Raft member id (see [`member_id`]).
pub const fn member_incarnation(member: NodeId) -> u32 {
    (member.0 & 0xFFFF_FFFF) as u32
}

impl ShardId {
    /// The placement driver's Raft group.
    pub const PD: ShardId = ShardId(0);
}

macro_rules! counter_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        id_type!($(#[$doc])* $name, $prefix);

        impl $name {
            /// Zero: before the first term / entry.
            pub const ZERO: $name = $name(0);

            /// The next value. Panics on overflow, which would take 2^64 terms or entries.
            #[inline]
            #[must_use]
            pub fn next(self) -> Self {
                Self(self.0.checked_add(1).expect(concat!(stringify!($name), " overflow")))
            }

            /// The previous value, saturating at zero.
            #[inline]
            #[must_use]
            pub fn prev(self) -> Self {
                Self(self.0.saturating_sub(1))
            }

            /// `self + n`, panicking on overflow.
            #[inline]
            #[must_use]
            pub fn plus(self, n: u64) -> Self {
                Self(self.0.checked_add(n).expect(concat!(stringify!($name), " overflow")))
            }

            /// `self - n`, saturating at zero.
            #[inline]
            #[must_use]
            pub fn saturating_minus(self, n: u64) -> Self {
                Self(self.0.saturating_sub(n))
            }

            /// The distance `self - other`, or 0 when `other > self`.
            #[inline]
            pub fn distance_from(self, other: Self) -> u64 {
                self.0.saturating_sub(other.0)
            }
        }
    };
}

counter_type!(
    /// A Raft term. Terms only grow (Raft §5.1).
    Term,
    "t"
);
counter_type!(
    /// A position in a Raft log. Index 0 is before the first entry.
    LogIndex,
    "i"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_step_and_saturate() {
        assert_eq!(LogIndex(4).next(), LogIndex(5));
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(Term(3).plus(2), Term(5));
        assert_eq!(LogIndex(3).distance_from(LogIndex(7)), 0);
        assert_eq!(LogIndex(9).distance_from(LogIndex(7)), 2);
    }

    #[test]
    fn member_ids_pack_node_and_incarnation() {
        let member = member_id(NodeId(7), 3);
        assert_eq!(member, NodeId((7 << 32) | 3));
        assert_eq!(member_node(member), NodeId(7));
        assert_eq!(member_incarnation(member), 3);
        assert_eq!(
            member_node(member_id(NodeId(u32::MAX as u64), u32::MAX)).get(),
            u32::MAX as u64
        );
        assert_ne!(member_id(NodeId(1), 1), member_id(NodeId(1), 2));
        assert!(member_id(NodeId(1), 1).is_some());
    }

    #[test]
    fn ids_print_with_prefix() {
        assert_eq!(NodeId(3).to_string(), "n3");
        assert_eq!(format!("{:?}", ShardId(12)), "s12");
        assert!(!NodeId::NONE.is_some());
    }
}
