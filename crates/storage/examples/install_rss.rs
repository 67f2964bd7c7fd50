//! Peak memory of a large snapshot install in one store, without a cluster: a source store is
//! filled with MIB MiB of 128 KiB values for one shard; then a target store stages the
//! source's snapshot stream and installs it. Prints the process's peak RSS (VmHWM, reset
//! before each phase) and the largest fjall write buffer seen, per phase. No assertion.
//!
//! Run: `cargo run --release -p ringkv-storage --example install_rss [-- MIB [BUFFER [DIR]]]`
//! (BUFFER: both stores' `write_buffer_bytes` in MiB, default 256; DIR defaults to /tmp and
//! needs about 3 x MIB of free space; env CACHE_MIB sets both block caches). The last line,
//! RSS once both stores are dropped, tells memory the allocator kept from what the stores held.
//! `ringkvd` runs with glibc malloc tunables (`crates/node/src/allocator.rs`); to measure what
//! a node sees, run the example with the same `GLIBC_TUNABLES` value.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    missing_docs,
    reason = "example"
)]

use bytes::Bytes;
use ringkv_storage::{AppliedState, Command, Operation, Store, StoreConfig, WriteBatchBuilder};
use ringkv_types::raft::ConfState;
use ringkv_types::ring::{self, Arc};
use ringkv_types::{LogIndex, NodeId, ShardId, Term};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

const SHARD: ShardId = ShardId(1);
const VALUE_BYTES: usize = 128 << 10;

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.trim().strip_suffix("kB"))
        .map_or(0, |kb| kb.trim().parse().unwrap())
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn fill(store: &Store, arc: Arc, mib: usize) {
    let value = Bytes::from(vec![0x5a; VALUE_BYTES]);
    let count = mib * (1 << 20) / VALUE_BYTES;
    let mut n = 0u64;
    let mut written = 0;
    let mut index = 1;
    while written < count {
        let mut operations = Vec::new();
        while operations.len() < 64 && written < count {
            let key = format!("key-{n}").into_bytes();
            n += 1;
            if arc.contains(ring::position(&key)) {
                operations.push(Operation::Put {
                    key: Bytes::from(key),
                    value: value.clone(),
                });
                written += 1;
            }
        }
        let command = Command {
            session: None,
            operations,
        };
        let applied = AppliedState {
            index: LogIndex(index),
            term: Term(1),
        };
        let voters = ConfState::with_voters([NodeId(1)]);
        store
            .apply(SHARD, &[command], applied, Some(&voters))
            .unwrap();
        index += 1;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |n| n.parse().unwrap());
    let buffer_mib: u64 = args.next().map_or(256, |n| n.parse().unwrap());
    let config = |path: std::path::PathBuf| {
        let mut config = StoreConfig::new(path);
        config.write_buffer_bytes = buffer_mib << 20;
        config.snapshot_bytes_max = 1 << 40;
        if let Ok(cache) = std::env::var("CACHE_MIB") {
            config.cache_bytes = cache.parse::<u64>().unwrap() << 20;
        }
        config
    };
    let temp = tempfile::tempdir_in(args.next().unwrap_or_else(|| "/tmp".into())).unwrap();
    let arc = Arc::split_even(1)[0];
    let source_path = temp.path().join("source");
    let start = Instant::now();
    fill(
        &Store::open(StoreConfig::new(&source_path)).unwrap(),
        arc,
        mib,
    );
    println!("filled {mib} MiB in {:.1?}", start.elapsed());

    let source = Store::open(config(source_path)).unwrap();
    let target = Store::open(config(temp.path().join("target"))).unwrap();
    let buffer_max = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let sampler = {
        let (target, buffer_max, stop) = (target.clone(), buffer_max.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                buffer_max.fetch_max(target.write_buffer_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let phase = |name: &str, start: Instant| {
        println!(
            "{name}: {:.1?}, peak RSS {} MB, largest write buffer {} MB, RSS now {} MB",
            start.elapsed(),
            status_kb("VmHWM:") * 1024 / 1_000_000,
            buffer_max.swap(0, Ordering::Relaxed) / 1_000_000,
            status_kb("VmRSS:") * 1024 / 1_000_000
        );
        reset_peak();
    };
    reset_peak();
    println!("before: RSS {} MB", status_kb("VmRSS:") * 1024 / 1_000_000);
    let start = Instant::now();
    let mut stager = target.snapshot_stager(SHARD);
    for chunk in source.snapshot_chunks(SHARD, arc).unwrap() {
        stager.push(&chunk.unwrap()).unwrap();
    }
    let prepared = stager.finish().unwrap();
    phase("stage", start);
    let start = Instant::now();
    let mut batch = WriteBatchBuilder::new();
    batch.install_snapshot(prepared);
    target.write(batch).unwrap();
    phase("install", start);
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!(
        "2 s later: RSS {} MB",
        status_kb("VmRSS:") * 1024 / 1_000_000
    );
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    drop(target);
    drop(source);
    std::thread::sleep(std::time::Duration::from_secs(1));
    println!(
        "stores dropped: RSS {} MB",
        status_kb("VmRSS:") * 1024 / 1_000_000
    );
}
