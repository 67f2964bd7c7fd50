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
    fn ids_print_with_prefix() {
        assert_eq!(NodeId(3).to_string(), "n3");
        assert_eq!(format!("{:?}", ShardId(12)), "s12");
        assert!(!NodeId::NONE.is_some());
    }
}
