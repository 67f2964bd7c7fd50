//! ringkv's deterministic simulator.
//!
//! One `u64` seed decides everything about a run: cluster size (3, 5 or 7 nodes), how many Raft
//! groups share the nodes (multi-Raft), network faults (drop, duplicate, reorder through random
//! delay, symmetric and one-way partitions), crash-restarts that lose everything not yet
//! persisted, membership changes (random, or decided by the placement driver `ringkv-pd` in odd
//! seeds with spare nodes: repair, drain, balancing) and leader transfers in the middle of it
//! all, tiny snapshot thresholds, and clients doing put/get/delete/compare-and-swap with
//! ReadIndex and lease reads. Half of the seeds run with quiescence: idle windows in the client
//! load let groups go quiet, a node-liveness input reports peers that could not be heard from
//! for a while, and a leader of a quiet group is killed on purpose.
//! The production Raft core runs unmodified; only the world around it is simulated, at the
//! sans-IO boundary. Rerunning a seed reproduces the run exactly (same trace hash).
//!
//! Checkers (one per file in `checkers/`): election safety, log matching, leader completeness,
//! state machine safety, commit monotonicity, linearizability of the client history, and leader
//! liveness (a connected majority gets a leader within a bound). Two phases: chaos, then heal,
//! after which every group must elect a leader and commit within a bounded number of ticks.
//! [`core_world`] runs the real node core (`ringkv-node`'s `NodeCore` over memory) instead of
//! bare Raft cores, for data shards with fixed membership (`ringkv-sim --node-core`).
//! `World::idle` counts what idle groups cost with and without quiescence; [`pdscale`] drives
//! the placement driver's real code over a modelled cluster of up to thousands of shards.

pub mod checkers;
pub mod core_world;
pub mod history;
pub mod kv;
pub mod linearizability;
pub mod params;
pub mod pdscale;
pub mod replica;
pub mod trace;
pub mod world;

pub use checkers::Violation;
pub use world::{IdleReport, PlantedBug, SeedReport, World};

/// Runs one seed; a panic inside the run (a Raft invariant assertion) is reported as a
/// violation.
pub fn run_seed(seed: u64, bug: Option<PlantedBug>) -> SeedReport {
    let outcome = std::panic::catch_unwind(|| World::new(seed, bug).run());
    match outcome {
        Ok(report) => report,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            SeedReport {
                seed,
                violation: Some(Violation {
                    check: "invariant assertion",
                    detail: message,
                }),
                ops_checked: 0,
                elections: 0,
                snapshots: 0,
                conf_changes: 0,
                inconclusive_keys: 0,
                trace_hash: 0,
                trace_events: 0,
                nodes: 0,
                pd_orders: 0,
                quiesce: false,
                ticks_run: 0,
                ticks_skipped: 0,
                longest_leaderless: 0,
                quiescent_reports: 0,
                quiet_leaders_killed: 0,
            }
        }
    }
}
