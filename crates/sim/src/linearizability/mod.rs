//! Linearizability checking for the data API beyond plain values: versions and TTL expiry
//! ([`versioned`]), on a search that allows an operation several successor states
//! ([`search`]). The simulator's own workload (plain values) is checked by
//! [`crate::checkers::linearizability`]; the node's end-to-end tests
//! (`crates/node/tests/linearizability.rs`) use [`versioned`].

pub mod search;
pub mod versioned;
