//! Measures durable group commits: sequential (one batch in flight, the worst case for the
//! durable mark, whose fsync then competes with the next journal fsync) and pipelined (two in
//! flight, as the node submits). Prints mean and percentiles; no assertion.
//!
//! Run: `cargo run --release -p ringkv-storage --example commit_cost [-- COMMITS [DIR]]`.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    missing_docs,
    reason = "example"
)]

use bytes::Bytes;
use ringkv_storage::{Store, StoreConfig, WriteBatchBuilder};
use ringkv_types::raft::{Entry, EntryPayload, HardState};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::time::{Duration, Instant};

fn batch(next: &mut u64, shards: u64) -> WriteBatchBuilder {
    let mut batch = WriteBatchBuilder::new();
    for shard in 1..=shards {
        let entries: Vec<Entry> = (*next..*next + 4)
            .map(|index| Entry {
                term: Term(1),
                index: LogIndex(index),
                payload: EntryPayload::Normal(Bytes::from(vec![0xab; 100])),
            })
            .collect();
        batch.append(ShardId(shard), &entries).unwrap();
        batch.set_hard_state(
            ShardId(shard),
            HardState {
                term: Term(1),
                vote: NodeId(1),
                commit: LogIndex(*next),
            },
        );
    }
    *next += 4;
    batch
}

fn report(name: &str, mut latencies: Vec<Duration>, total: Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{name}: {} commits in {:.2?}: {:.0} commits/s, p50 {:.0?}, p90 {:.0?}, p99 {:.0?}",
        latencies.len(),
        total,
        latencies.len() as f64 / total.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let commits: usize = args.next().map_or(2000, |n| n.parse().unwrap());
    let base = args.next().map(std::path::PathBuf::from);
    let dir = match &base {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut next = 1;
    for _ in 0..100 {
        store.write(batch(&mut next, 3)).unwrap();
    }
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(commits);
    for _ in 0..commits {
        let one = Instant::now();
        store.write(batch(&mut next, 3)).unwrap();
        latencies.push(one.elapsed());
    }
    report("sequential", latencies, started.elapsed());

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(commits);
    let mut in_flight = std::collections::VecDeque::new();
    for _ in 0..commits {
        if in_flight.len() == 2 {
            let (submitted, ticket): (Instant, ringkv_storage::Ticket) =
                in_flight.pop_front().unwrap();
            ticket.wait().unwrap();
            latencies.push(submitted.elapsed());
        }
        in_flight.push_back((Instant::now(), store.submit(batch(&mut next, 3)).unwrap()));
    }
    for (submitted, ticket) in in_flight {
        ticket.wait().unwrap();
        latencies.push(submitted.elapsed());
    }
    report("pipelined (2 in flight)", latencies, started.elapsed());
}
