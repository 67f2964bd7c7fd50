//! Shared helpers for the benchmarks in `benches/` and the load generator.

#[cfg(feature = "check")]
pub mod linearizability;
pub mod failover;
pub mod load;
