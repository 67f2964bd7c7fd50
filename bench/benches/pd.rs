//! Criterion benchmarks for the placement driver's per-entry cost as the number of shards
//! grows (issue 16): what one applied shard report costs a PD replica with format-1 saving (the
//! whole state re-encoded, `pd/state`) and with per-record saving (`pd_records`: the head and
//! the touched shard), and what the PD leader's in-memory triage of a node heartbeat costs.
//!
//! Run: `cargo bench -p ringkv-bench --bench pd`. Figures are in `docs/perf.md`.

#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ringkv_node::core::pd_machine::PdHost;
use ringkv_pd::{
    Apply, Command, LeaderStats, NodeRegistration, NodeStats, PdState, Settings, ShardReport,
    ShardStats, StoreHeartbeat,
};
use ringkv_types::{LogIndex, NodeId, Term};
use std::collections::BTreeMap;
use std::hint::black_box;

fn state(shards: u64) -> PdState {
    let nodes: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut state = PdState::new();
    let registration = |id: u64| NodeRegistration {
        addr: format!("127.0.0.1:{}", 7000 + id),
        labels: BTreeMap::new(),
        capacity_bytes: 0,
    };
    state
        .apply(&Command::Bootstrap {
            cluster_id: 1,
            cluster_name: "bench".into(),
            nodes: nodes
                .iter()
                .map(|&id| (id, registration(id.get())))
                .collect(),
            shard_map: ringkv_node::bootstrap::initial_shard_map(&nodes, shards, 3),
            settings: Settings::default(),
            now_ms: 0,
        })
        .unwrap();
    // Every shard reported once, as a running cluster's state is.
    for descriptor in state.shard_map.shards.clone() {
        let report = report(&descriptor, 0);
        state.apply(&Command::ShardReport(report)).unwrap();
    }
    state
}

fn report(descriptor: &ringkv_types::ShardDescriptor, size_bytes: u64) -> ShardReport {
    ShardReport {
        leader: descriptor.voters().next().unwrap(),
        descriptor: descriptor.clone(),
        stats: ShardStats {
            size_bytes,
            ..ShardStats::default()
        },
        caught_up_learners: vec![],
        split_hint: None,
        now_ms: 1,
    }
}

fn apply_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("pd_apply_shard_report");
    for shards in [100_u64, 1_000, 10_000] {
        let base = state(shards);
        let descriptor = base.shard_map.shards[base.shard_map.shards.len() / 2].clone();
        let mut size = 0;
        // Format 1: apply, then encode the whole state (what was saved with every entry).
        let mut full = base.clone();
        group.bench_with_input(BenchmarkId::new("full_state", shards), &shards, |b, _| {
            b.iter(|| {
                size += 1;
                full.apply(&Command::ShardReport(report(&descriptor, size)))
                    .unwrap();
                black_box(ringkv_node::pd_host::encode_state(&full).unwrap());
            })
        });
        // Format 2: the replica's apply, returning the records to save.
        let mut host = PdHost::new(base.clone());
        let mut index = 0;
        group.bench_with_input(BenchmarkId::new("per_record", shards), &shards, |b, _| {
            b.iter(|| {
                index += 1;
                let command = Command::ShardReport(report(&descriptor, index));
                black_box(
                    host.apply(vec![(LogIndex(index), Term(1), command)])
                        .unwrap(),
                );
            })
        });
        // The PD leader's triage of a heartbeat carrying one changed report (no log).
        let mut stats = LeaderStats::new();
        let mut now = 1;
        group.bench_with_input(
            BenchmarkId::new("heartbeat_triage", shards),
            &shards,
            |b, _| {
                b.iter(|| {
                    now += 1;
                    let heartbeat = StoreHeartbeat {
                        node: descriptor.voters().next().unwrap(),
                        stats: NodeStats::default(),
                        shards: vec![report(&descriptor, now)],
                        full: false,
                        now_ms: now,
                    };
                    black_box(stats.handle(&base, &heartbeat, now));
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, apply_cost);
criterion_main!(benches);
