//! Concurrent `ringkv_client::Client`s doing random get/put/delete/compare-and-swap on a few
//! keys while a test changes the cluster's placement under them, with the history recorded as
//! in `linearizability.rs` (ReadIndex and lease reads) and checked per key with `ringkv_sim`'s
//! checker. Also the counts
//! and waits the placement tests share. Every wait is bounded.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "test helpers: a failure is a test failure"
)]

use crate::common::{CLUSTER, Cluster};
use bytes::Bytes;
use ringkv_client::{Client, ClientConfig, Endpoint, RetryPolicy, TlsSource};
use ringkv_pd::{NodeState, PdState};
use ringkv_sim::checkers::linearizability::{KeyVerdict, check_key};
use ringkv_sim::history::Operation;
use ringkv_sim::kv::{Op, OpResult, Value};
use ringkv_types::{NodeId, ReadConsistency, ShardId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fast placement-driver timing for tests. Balancing starts off (tests turn it on through PD);
/// repair and drain on; automatic splits off (tests split on demand).
pub fn pd_config(max_down_time_ms: u64) -> String {
    crate::common::pd_config_with(false, max_down_time_ms)
}

/// Longest wait for any placement outcome.
pub const WAIT: Duration = Duration::from_secs(120);

/// Whether the longer variants run (`RINGKV_LONG_TESTS` set to anything but `0`).
pub fn long_variant() -> bool {
    std::env::var("RINGKV_LONG_TESTS").is_ok_and(|value| value != "0")
}

/// A client seeded with the first three nodes only: nodes that join later are learned from
/// the cluster (`GetNodes`), which is part of what these tests check. Generous budget: a call
/// must survive a move, a leader transfer or a split (and a leader's death) by retrying.
pub async fn connect(cluster: &Cluster) -> Client {
    let endpoints = cluster
        .addrs
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, addr)| Endpoint {
            node: NodeId(i as u64 + 1),
            addr: addr.to_string(),
        })
        .collect();
    let mut config = ClientConfig::new(
        endpoints,
        CLUSTER,
        TlsSource::Identity(cluster.client_identity.clone()),
    );
    config.bind_addr = "127.0.0.1:0".parse().unwrap();
    config.request_timeout = Duration::from_secs(20);
    config.attempt_timeout = Duration::from_secs(2);
    config.retry = RetryPolicy {
        attempts_max: 64,
        ..RetryPolicy::default()
    };
    Client::connect(config).await.unwrap()
}

/// Event times for the history: nanoseconds on the monotonic clock since the test started,
/// strictly increasing so that no two events tie.
pub struct Clock {
    start: Instant,
    last: Mutex<u64>,
}

impl Clock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            last: Mutex::new(0),
        }
    }

    pub fn now(&self) -> u64 {
        let mut last = self.last.lock().unwrap();
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap();
        *last = now.max(*last + 1);
        *last
    }
}

/// xorshift64*: the workload's randomness, seeded per client from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn key_name(key: u8) -> String {
    format!("lin-{key}")
}

fn encode(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

pub fn decode(bytes: Option<Bytes>) -> Option<Value> {
    bytes.map(|bytes| {
        std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("a value no client wrote: {bytes:?}"))
    })
}

/// What the clients saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub completed: u64,
    /// Writes that failed after the client's retries: applied or not, nobody knows.
    pub unknown_writes: u64,
    /// Reads that failed after the client's retries.
    pub failed_reads: u64,
    /// Reads served under the leader lease (`ReadConsistency::Lease`) that completed.
    pub lease_reads: u64,
}

impl Tally {
    pub fn failures(&self) -> u64 {
        self.unknown_writes + self.failed_reads
    }
}

/// Concurrent clients on `keys` keys, recording a history until [`Workload::finish`].
pub struct Workload {
    pub clock: Arc<Clock>,
    pub keys: u8,
    pub seed: u64,
    stop: Arc<AtomicBool>,
    /// Operations completed so far, over all clients (to wait for progress, not for time).
    pub progress: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<(Vec<Operation>, Tally)>>,
}

impl Workload {
    pub async fn start(cluster: &Cluster, clients: u64, keys: u8) -> Self {
        let seed = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % u128::from(u64::MAX),
        )
        .unwrap();
        println!("workload seed {seed}: {clients} clients on {keys} keys");
        let clock = Arc::new(Clock::new());
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for id in 0..clients {
            let client = connect(cluster).await;
            workers.push(tokio::spawn(run_client(
                id,
                client,
                keys,
                clock.clone(),
                stop.clone(),
                progress.clone(),
                seed,
            )));
        }
        Self {
            clock,
            keys,
            seed,
            stop,
            progress,
            workers,
        }
    }

    /// Waits (bounded) until the clients complete `count` more operations.
    pub async fn wait_for_progress(&self, count: u64) {
        let target = self.progress.load(Ordering::Relaxed) + count;
        let deadline = Instant::now() + WAIT;
        while self.progress.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the clients made no progress: {} of {target} operations",
                self.progress.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients, reads every key once more through `reader` (those reads join the
    /// history, so a lost acknowledged write fails the check), checks the history per key and
    /// returns the tally and the final values.
    pub async fn finish(self, reader: &Client) -> (Tally, BTreeMap<u8, Option<Value>>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = Vec::new();
        let mut tally = Tally::default();
        for worker in self.workers {
            let (operations, counts) = worker.await.expect("a client task panicked");
            history.extend(operations);
            tally.completed += counts.completed;
            tally.unknown_writes += counts.unknown_writes;
            tally.failed_reads += counts.failed_reads;
            tally.lease_reads += counts.lease_reads;
        }
        let mut finals = BTreeMap::new();
        for key in 0..self.keys {
            let name = key_name(key);
            let invoked_at = self.clock.now();
            let value = decode(
                reader
                    .get(name.clone())
                    .await
                    .unwrap_or_else(|error| panic!("final read of {name}: {error}")),
            );
            let returned_at = self.clock.now();
            finals.insert(key, value);
            history.push(Operation {
                client: u64::MAX,
                group: reader
                    .shard_for_key(name.as_bytes())
                    .map_or(ShardId(0), |d| d.id),
                op: Op::Get(key),
                invoked_at,
                completed: Some((returned_at, OpResult::Value(value))),
                discarded: false,
            });
        }
        println!("{} operations recorded: {tally:?}", history.len());
        assert!(
            tally.completed >= 200,
            "too few operations completed to mean anything: {tally:?}"
        );
        assert!(
            tally.lease_reads > 0,
            "no lease read completed: the lease went untested: {tally:?}"
        );
        let mut verdicts = BTreeMap::new();
        for key in 0..self.keys {
            let operations: Vec<&Operation> = history
                .iter()
                .filter(|operation| operation.op.key() == key)
                .collect();
            verdicts.insert(key, check_key(&operations));
        }
        assert!(
            verdicts.values().all(|v| *v == KeyVerdict::Linearizable),
            "seed {}: {verdicts:?}",
            self.seed
        );
        (tally, finals)
    }
}

/// One client: random operations until `stop`, each recorded with its invoke and return time.
async fn run_client(
    id: u64,
    client: Client,
    keys: u8,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    seed: u64,
) -> (Vec<Operation>, Tally) {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    // The last value this client saw per key: what its compare-and-swaps expect.
    let mut seen: BTreeMap<u8, Option<Value>> = BTreeMap::new();
    let mut writes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.below(u64::from(keys)) as u8;
        let name = key_name(key);
        let group = client
            .shard_for_key(name.as_bytes())
            .map_or(ShardId(0), |d| d.id);
        writes += 1;
        let fresh: Value = ((id + 1) << 32) | writes;
        let choice = rng.below(100);
        // Reads: 0..20 ReadIndex, 20..35 under the lease (check-quorum), which leadership
        // moves under the placement driver put to the test.
        let consistency = if choice < 20 {
            ReadConsistency::Linearizable
        } else {
            ReadConsistency::Lease
        };
        let op = match choice {
            0..35 => Op::Get(key),
            35..65 => Op::Put(key, fresh),
            65..75 => Op::Delete(key),
            _ => Op::Cas {
                key,
                expected: seen.get(&key).copied().flatten(),
                new: fresh,
            },
        };
        let invoked_at = clock.now();
        let result = match op {
            Op::Get(_) => client
                .get_with(name.clone(), consistency)
                .await
                .map(|value| {
                    let value = decode(value);
                    seen.insert(key, value);
                    OpResult::Value(value)
                }),
            Op::Put(_, value) => client
                .put(name.clone(), encode(value))
                .await
                .map(|()| OpResult::Done),
            Op::Delete(_) => client.delete(name.clone()).await.map(|()| OpResult::Done),
            Op::Cas { expected, new, .. } => client
                .compare_and_swap(name.clone(), expected.map(encode), Some(encode(new)))
                .await
                .map(|outcome| {
                    seen.insert(key, decode(outcome.previous));
                    OpResult::Swapped(outcome.succeeded)
                }),
        };
        let returned_at = clock.now();
        let completed = match result {
            Ok(result) => {
                tally.completed += 1;
                if matches!(op, Op::Get(_)) && consistency == ReadConsistency::Lease {
                    tally.lease_reads += 1;
                }
                progress.fetch_add(1, Ordering::Relaxed);
                Some((returned_at, result))
            }
            // A read that failed had no effect: leave it out (but count it).
            Err(error) if matches!(op, Op::Get(_)) => {
                println!("client {id}: get {name} failed: {error}");
                tally.failed_reads += 1;
                continue;
            }
            // A write that failed may or may not have been applied (never twice): its return
            // is unknown, which the checker places at infinity.
            Err(error) => {
                println!("client {id}: {op:?} failed, outcome unknown: {error}");
                tally.unknown_writes += 1;
                None
            }
        };
        history.push(Operation {
            client: id,
            group,
            op,
            invoked_at,
            completed,
            discarded: false,
        });
        let pause = rng.below(8);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    client.close().await;
    (history, tally)
}

/// Data replicas and leaderships per node, from the running nodes themselves.
pub async fn actual_counts(cluster: &mut Cluster) -> (BTreeMap<u64, u64>, BTreeMap<u64, u64>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for index in 0..cluster.nodes.len() {
        if cluster.nodes[index].is_none() {
            continue;
        }
        let Some(status) = cluster.try_status(index).await else {
            continue;
        };
        let node = status.node.get();
        let data = status.replicas.iter().filter(|r| r.shard.get() != 0);
        replicas.insert(node, data.clone().count() as u64);
        leaders.insert(node, data.filter(|r| r.is_leader).count() as u64);
    }
    (replicas, leaders)
}

pub fn spread(counts: &BTreeMap<u64, u64>) -> u64 {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min
}

/// PD's replica counts per `Up` node (zero for an `Up` node holding nothing).
pub fn pd_replicas(state: &PdState) -> BTreeMap<u64, u64> {
    let counts = state.replica_counts();
    state
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Up)
        .map(|n| (n.id.get(), counts.get(&n.id).copied().unwrap_or(0)))
        .collect()
}

/// PD's leader counts per `Up` node (zero for an `Up` node leading nothing).
pub fn pd_leaders(state: &PdState) -> BTreeMap<u64, u64> {
    let counts = state.leader_counts();
    state
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Up)
        .map(|n| (n.id.get(), counts.get(&n.id).copied().unwrap_or(0)))
        .collect()
}

/// Waits until `done` holds for PD's state; panics naming `what` after [`WAIT`].
pub async fn wait_for_pd(
    cluster: &mut Cluster,
    what: &str,
    mut done: impl FnMut(&PdState) -> bool,
) -> PdState {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = cluster.pd_state().await;
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; replicas {:?}, leaders {:?}, nodes {:?}, operators {:?}",
            state.replica_counts(),
            state.leader_counts(),
            state
                .nodes
                .values()
                .map(|n| (n.id, n.state))
                .collect::<Vec<_>>(),
            state.operators.values().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Copies the nodes' logs (`node-N.log` in the cluster directory) to a directory that outlives
/// the test when the test panics, and says where; does nothing otherwise. Declare it after the
/// cluster so that it is dropped first, while the cluster directory still exists.
pub struct KeepLogsOnPanic {
    from: std::path::PathBuf,
    name: &'static str,
}

impl KeepLogsOnPanic {
    pub fn new(cluster: &Cluster, name: &'static str) -> Self {
        Self {
            from: cluster.dir.path().to_path_buf(),
            name,
        }
    }
}

impl Drop for KeepLogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let to =
            std::env::temp_dir().join(format!("ringkv-{}-{}-logs", self.name, std::process::id()));
        if std::fs::create_dir_all(&to).is_err() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.from) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log" || e == "toml") {
                let _ = std::fs::copy(&path, to.join(entry.file_name()));
            }
        }
        eprintln!("node logs and configs kept in {}", to.display());
    }
}

/// Starts one more `ringkvd` that joins, and waits until PD registered it with its configured
/// id. Joining nodes must be started one at a time: `RegisterNode` carries no id, PD hands out
/// the next free one in the order registrations arrive, and a node given another id than its
/// config says stops ("PD assigned node id 5 to this address but the config says 4"), which
/// is what two processes started together run into.
pub async fn join_one(cluster: &mut Cluster) -> usize {
    let index = cluster.add_joining_node().await;
    let id = NodeId(index as u64 + 1);
    wait_for_pd(cluster, "the joining node registered", |state| {
        state.nodes.contains_key(&id)
    })
    .await;
    index
}

/// The value of preloaded key `i`: `size` bytes that name the key, so a mix-up shows.
fn bulk_value(i: u64, size: usize) -> Bytes {
    let mut value = format!("bulk-{i}:").into_bytes();
    value.resize(size.max(value.len()), b'x');
    Bytes::from(value)
}

/// Writes `count` keys `bulk-i` of `size` bytes through `client`, 16 at a time, so that moved
/// replicas carry real snapshots. Panics on a failed write.
pub async fn preload(client: &Client, count: u64, size: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut i = worker;
            while i < count {
                client
                    .put(format!("bulk-{i}"), bulk_value(i, size))
                    .await
                    .unwrap_or_else(|error| panic!("preload bulk-{i}: {error}"));
                i += 16;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a preload task panicked");
    }
}

/// Reads every preloaded key back (linearizably) and checks its value.
pub async fn check_preloaded(client: &Client, count: u64, size: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut i = worker;
            while i < count {
                let value = client
                    .get(format!("bulk-{i}"))
                    .await
                    .unwrap_or_else(|error| panic!("read bulk-{i}: {error}"));
                assert_eq!(value, Some(bulk_value(i, size)), "bulk-{i}");
                i += 16;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a check task panicked");
    }
}
