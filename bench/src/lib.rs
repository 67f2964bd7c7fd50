//! Shared helpers for the benchmarks in `benches/` and the load generator.

pub mod failover;
pub mod load;
