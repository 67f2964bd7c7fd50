//! Shared helpers for the benchmarks in `benches/` and the load generator.

pub mod cpu;
pub mod failover;
#[cfg(feature = "check")]
pub mod linearizability;
pub mod load;
