//! Small configurations of the PD-at-scale model: PD converges within a bound of simulated
//! time, keeps every rule on the way, and stops moving things once balanced.

use super::*;
use crate::pdscale::{PdScaleConfig, Scenario};

/// Bounds of simulated time: the measured runs took 761 s (join) and 110 s (drain); the
/// bounds leave room for latency changes, not for a scheduler that stalls or thrashes.
const BOUND_JOIN_MS: u64 = 1_200_000;
const BOUND_DRAIN_MS: u64 = 300_000;

fn small(scenario: Scenario) -> PdScaleConfig {
    let mut config = PdScaleConfig::new(10, 500, scenario);
    config.check_invariants = true;
    config.settings.max_down_time_ms = 60_000;
    config
}

fn assert_balanced(report: &PdScaleReport, bound_ms: u64) {
    let took = report.balanced_after_ms.unwrap_or(u64::MAX);
    assert!(took <= bound_ms, "{report}");
    assert!(
        report.replica_spread.1 <= report.replica_spread.0 + 1,
        "{report}"
    );
    assert!(
        report.leader_spread.1 <= report.leader_spread.0 + 1,
        "{report}"
    );
    assert_eq!(report.operators_after_balanced, 0, "thrash: {report}");
    assert!(report.counts.max_operators <= 16, "{report}");
}

/// 500 shards on 3 of 10 nodes; 7 empty nodes join: PD spreads replicas (1,500 over 10
/// nodes: 150 each) and leaders (50 each).
#[test]
fn joining_nodes_get_their_share_of_replicas_and_leaders() {
    let report = PdScale::new(small(Scenario::Join)).unwrap().run().unwrap();
    assert_balanced(&report, BOUND_JOIN_MS);
    assert_eq!(report.replica_spread, (150, 150), "{report}");
    assert_eq!(report.leader_spread, (50, 50), "{report}");
    // Every move is an add, a promote and a remove: at least 1,050 replicas left nodes 1-3.
    assert!(report.counts.removals >= 1_050, "{report}");
}

/// A drained node ends with nothing; the other nine share its replicas and leaders.
#[test]
fn a_drained_node_is_emptied_and_the_rest_stays_balanced() {
    let report = PdScale::new(small(Scenario::Drain { node: 10 }))
        .unwrap()
        .run()
        .unwrap();
    assert_balanced(&report, BOUND_DRAIN_MS);
    // 1,500 replicas over the 9 nodes left: 166 or 167 each.
    assert_eq!(report.replica_spread, (166, 167), "{report}");
}

/// A killed node's shards elect new leaders, and once it has been down `max_down_time_ms`
/// (60 s here) repair rebuilds its replicas elsewhere; shards run on two live voters in
/// between, which the rule allows only because a node died.
#[test]
fn a_dead_node_is_replaced_after_max_down_time() {
    let report = PdScale::new(small(Scenario::Kill { node: 10 }))
        .unwrap()
        .run()
        .unwrap();
    assert!(report.balanced_after_ms.unwrap_or(0) >= 60_000, "{report}");
    assert_balanced(&report, 60_000 + BOUND_DRAIN_MS);
}

/// The same seed gives the same run (PD's CPU time aside).
#[test]
fn runs_are_deterministic() {
    let run = |seed| {
        let mut config = small(Scenario::Join);
        config.seed = seed;
        config.shards = 120;
        let r = PdScale::new(config).unwrap().run().unwrap();
        (
            r.balanced_after_ms,
            r.counts,
            r.operators_finished,
            r.pd_state_bytes,
        )
    };
    assert_eq!(run(3), run(3));
}

/// The rule checks fire against a PD that breaks them: PD's own limit raised behind the
/// configuration's back lets it run more operators than configured.
#[test]
fn too_many_operators_are_caught() {
    let mut config = small(Scenario::Join);
    config.shards = 120;
    let mut model = PdScale::new(config).unwrap();
    model.pd.settings.max_operators = 40;
    let broken = model.run().unwrap_err();
    assert!(broken.rule.contains("operators in flight"), "{broken}");
}

/// ... and PD's replication factor lowered behind the configuration's back makes repair trim
/// a voter from every shard, which the replication rule catches.
#[test]
fn a_shard_below_its_replication_factor_is_caught() {
    let mut model = PdScale::new(small(Scenario::Join)).unwrap();
    model.pd.settings.replication_factor = 2;
    let broken = model.run().unwrap_err();
    assert!(broken.rule.contains("voters"), "{broken}");
}
