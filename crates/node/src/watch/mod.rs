//! Watches (`Request::Watch`): every replica keeps a bounded history of the changes its shards
//! applied ([`hub::WatchHub`]); a shard's leader serves watches from it, catch-up first and then
//! live as it applies, each watcher through its own bounded queue ([`feed::Feed`]).
//!
//! The event loop feeds the hub: the changes of every applied run (in log order), splits, and
//! role changes. The client service registers watchers straight in the hub (no trip through
//! the event loop): registration and recording hold the same lock, so a watcher gets every
//! change after its resume point exactly once.
//!
//! - Only applied entries are recorded, and entries are applied only once committed: no event
//!   shown was not committed.
//! - The history starts empty when a replica starts (or installs a snapshot): a resume before
//!   the first change it recorded ends with `Compacted`. Its size is bounded by
//!   `limits.watch_history_bytes` per shard.
//! - A watcher's queue is bounded by `limits.watch_buffer_bytes_max`; a watcher that falls
//!   behind is cancelled with `SlowWatcher` (its queue is dropped).

pub mod feed;
pub mod hub;
mod shard_history;

#[cfg(test)]
mod hub_test;

pub use feed::Feed;
pub use hub::{WatchHub, WatchLimits};
