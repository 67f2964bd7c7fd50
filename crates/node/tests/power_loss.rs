//! Power loss with real `ringkvd` processes: each node's data dir is a `powerfs` mount
//! (crates/powerfs), which keeps every write in memory until it is fsync'd and, when the power
//! is cut, kills the node (SIGKILL) and throws away everything it did not fsync, the way a
//! machine that loses power loses its page cache. Kill -9 alone cannot see a missing fsync:
//! the kernel still holds the writes.
//!
//! Under concurrent clients (the linearizability workload) and a sequential writer of unique
//! keys (the ledger), the power is cut on the leader of a shard, then (5-node variant) on two
//! nodes at once, then on every node; each time the nodes restart on what was durable. Every
//! acknowledged ledger write must be read back and the history must be linearizable.
//! `RINGKV_LONG_TESTS=1` runs the 5-node variant with the minority cut.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failure is a test failure"
)]

mod common;
mod workload;

use common::{Cluster, Running};
use ringkv_client::Client;
use ringkv_powerfs::{CutReport, PowerFs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::{KeepLogsOnPanic, Workload, connect};

/// A cluster whose data dirs are `powerfs` mounts. Field order is drop order: the mounts go
/// first (killing the nodes still on them), then the cluster and its directory.
struct PoweredCluster {
    disks: Vec<PowerFs>,
    cluster: Cluster,
    /// Unsynced pages thrown away over all cuts (printed).
    discarded_pages: u64,
}

impl PoweredCluster {
    async fn start(nodes: u64, shards: u64) -> Self {
        let mut cluster = Cluster::prepare(nodes, shards, "", true);
        let mut disks = Vec::new();
        for id in 1..=nodes {
            let dir = cluster.dir.path().join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            disks.push(PowerFs::mount(&dir).unwrap());
        }
        for index in 0..nodes as usize {
            cluster.start_node(index).await;
        }
        cluster
            .wait_for_leaders(shards, Duration::from_secs(60))
            .await;
        Self {
            disks,
            cluster,
            discarded_pages: 0,
        }
    }

    /// Panics, with the end of its log, if node `index` is not running (a node that finds
    /// acknowledged writes missing at start refuses to run).
    fn assert_running(&mut self, index: usize) -> u32 {
        let exited = match &mut self.cluster.nodes[index] {
            Some(Running::Process(child)) => match child.0.try_wait().unwrap() {
                None => return child.0.id(),
                Some(status) => format!("exited: {status}"),
            },
            _ => "not started".to_string(),
        };
        let log = std::fs::read_to_string(
            self.cluster
                .dir
                .path()
                .join(format!("node-{}.log", index + 1)),
        )
        .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        panic!(
            "node {} is not running ({exited}); log ends {tail:?}",
            index + 1
        );
    }

    /// Cuts the power of the nodes `indexes`, one right after the other, without restarting.
    fn cut(&mut self, indexes: &[usize]) {
        for &index in indexes {
            let pid = self.assert_running(index);
            let report: CutReport =
                tokio::task::block_in_place(|| self.disks[index].power_cut(&[pid]).unwrap());
            assert!(report.killed.contains(&pid), "{report:?}");
            // Reaps the killed process.
            self.cluster.kill_node(index);
            self.discarded_pages += report.discarded.pages;
            println!("power cut on node {}: {report:?}", index + 1);
        }
    }

    async fn restart(&mut self, indexes: &[usize], shards: u64) {
        for &index in indexes {
            self.cluster.start_node(index).await;
        }
        self.cluster
            .wait_for_leaders(shards, Duration::from_secs(60))
            .await;
        // Every restarted node is up and answering, not only a quorum.
        for &index in indexes {
            let deadline = Instant::now() + Duration::from_secs(60);
            while self.cluster.try_status(index).await.is_none() {
                self.assert_running(index);
                assert!(
                    Instant::now() < deadline,
                    "node {} never answered",
                    index + 1
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A client writing unique keys one after the other, remembering which were acknowledged.
struct Ledger {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<u64>,
}

fn ledger_key(n: u64) -> String {
    format!("ledger-{n:06}")
}

impl Ledger {
    async fn start(cluster: &Cluster) -> Self {
        let client = connect(cluster).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            async move {
                let mut failed = 0;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match client.put(ledger_key(n), format!("value-{n}")).await {
                        Ok(()) => acknowledged.lock().unwrap().push(n),
                        Err(_) => failed += 1,
                    }
                }
                failed
            }
        });
        Self {
            stop,
            acknowledged,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits (bounded) until `more` further writes are acknowledged.
    async fn wait_for(&self, more: usize) {
        let target = self.count() + more;
        let deadline = Instant::now() + workload::WAIT;
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "the ledger made no progress: {} of {target}",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writer and reads back every acknowledged key.
    async fn check(self, reader: &Client) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.task.await.unwrap();
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let mut lost = Vec::new();
        for &n in &acknowledged {
            let value = reader.get(ledger_key(n)).await.unwrap();
            if value.as_deref() != Some(format!("value-{n}").as_bytes()) {
                lost.push((n, value));
            }
        }
        println!(
            "ledger: {} acknowledged writes read back, {failed} failed after retries",
            acknowledged.len()
        );
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged ledger writes lost or wrong, first: {:?}",
            lost.len(),
            acknowledged.len(),
            &lost[..lost.len().min(10)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_power_cuts_of_one_node_a_minority_and_every_node() {
    let (nodes, shards, clients) = match workload::long_variant() {
        true => (5, 4, 6),
        false => (3, 3, 4),
    };
    let mut powered = PoweredCluster::start(nodes, shards).await;
    let _logs = KeepLogsOnPanic::new(&powered.cluster, "power-loss");
    let all: Vec<usize> = (0..nodes as usize).collect();
    let load = Workload::start(&powered.cluster, clients, 8).await;
    let ledger = Ledger::start(&powered.cluster).await;
    load.wait_for_progress(100).await;
    ledger.wait_for(20).await;

    // One node: the leader of the first data shard.
    let map = powered.cluster.shard_map(0).await;
    let victim = powered.cluster.leader_of(map.shards[0].id).await;
    powered.cut(&[victim]);
    ledger.wait_for(20).await;
    powered.restart(&[victim], shards).await;
    load.wait_for_progress(100).await;
    ledger.wait_for(20).await;

    // A minority of the cluster at once (with 3 nodes that is the one node above).
    if nodes >= 5 {
        let minority = [victim, (victim + 1) % nodes as usize];
        powered.cut(&minority);
        powered.restart(&minority, shards).await;
        load.wait_for_progress(100).await;
        ledger.wait_for(20).await;
    }

    // Every node.
    powered.cut(&all);
    powered.restart(&all, shards).await;
    load.wait_for_progress(100).await;
    ledger.wait_for(20).await;

    let reader = connect(&powered.cluster).await;
    ledger.check(&reader).await;
    let (tally, _) = load.finish(&reader).await;
    println!("workload: {tally:?}");
    // Not asserted: a node fsyncs nearly everything at once, so a cut often finds nothing
    // unsynced (the storage power-cut test and the planted missing fsync show the cuts bite).
    println!(
        "unsynced pages thrown away over all cuts: {}",
        powered.discarded_pages
    );
    for (index, disk) in powered.disks.iter().enumerate() {
        println!("node {} disk: {:?}", index + 1, disk.counters());
    }
}
