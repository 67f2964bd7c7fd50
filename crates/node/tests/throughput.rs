//! A rough throughput probe (ignored by default; benchmarks measure, tests assert):
//! `cargo test -p ringkv-node --release --test throughput -- --ignored --nocapture`.

mod common;

use common::{Cluster, get, kv, put};
use ringkv_types::{ReadConsistency, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn probe_writes_and_reads_per_second() {
    let shards = 16;
    let mut cluster = Cluster::start_with(3, shards, "", true).await;
    let leaders = cluster
        .wait_for_leaders(shards, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    let mut connections = Vec::new();
    for index in 0..3 {
        connections.push(cluster.connection(index).await.unwrap());
    }
    let leader_of: std::collections::BTreeMap<_, _> = leaders.into_iter().collect();
    for read_phase in [false, true] {
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for worker in 0..256u64 {
            let connections = connections.clone();
            let map = map.clone();
            let leader_of = leader_of.clone();
            let done = done.clone();
            let errors = errors.clone();
            tasks.push(tokio::spawn(async move {
                let mut sequence = 0;
                while Instant::now() < stop {
                    sequence += 1;
                    let key = format!("w{worker}-{}", sequence % 100);
                    let descriptor = map.shard_for_key(key.as_bytes()).unwrap();
                    let leader = leader_of[&descriptor.id];
                    let op = if read_phase {
                        get(&key, ReadConsistency::Linearizable)
                    } else {
                        put(&key, &"x".repeat(100))
                    };
                    let request = kv(descriptor, Some((worker + 1, sequence)), op);
                    match connections[leader]
                        .call(&request, Duration::from_secs(5))
                        .await
                    {
                        Ok(Response::Kv(_)) => done.fetch_add(1, Ordering::Relaxed),
                        _ => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        println!(
            "{}: {} ops/s, {} errors",
            if read_phase {
                "linearizable reads"
            } else {
                "writes"
            },
            done.load(Ordering::Relaxed) / 3,
            errors.load(Ordering::Relaxed)
        );
    }
    cluster.stop_all().await;
}
