//! Types shared by every ringkv crate: ids and Raft counters, Raft log and message types, the ring
//! (key positions and shard arcs) and the on-disk / on-wire record envelope. No I/O.

pub mod envelope;
pub mod ids;
pub mod raft;
pub mod ring;

pub use ids::{LogIndex, NodeId, ShardId, Term};
