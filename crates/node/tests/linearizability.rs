//! Sixteen concurrent `ringkv_client::Client`s do random get/put/delete/compare-and-swap on a
//! few keys of a 3-process cluster while a nemesis kills (-9) and restarts nodes and isolates
//! nodes with the transport's fault hook. Puts answer their version, some carry a TTL (200 ms
//! to 2 s), half of the reads return versions, and some compare-and-swaps compare the version
//! instead of the value. The recorded history (monotonic invoke and return times, results;
//! writes whose outcome is unknown recorded as such) must be linearizable per key under the
//! simulator's versioned checker (`ringkv_sim::linearizability::versioned`: reads show the
//! version of the write they observe, versions grow, a version CAS swaps iff the version
//! matches, a TTL key is absent once its time is up and not before), final reads after
//! healing are part of that history (so an acknowledged write that was lost fails the check),
//! and every replica ends with the same data.
//!
//! The TTL check compares the servers' log time (their wall clocks) with the history's
//! monotonic clock: all processes run on this machine, so they agree to within
//! [`CLOCK_SLACK`].
//!
//! Reads are ReadIndex or lease reads. The nemesis asserts that each fault took
//! effect: a killed node came back as a new process, and the shard a killed or isolated leader
//! led got a new leader among the other nodes.
//!
//! `RINGKV_CHAOS_ROUNDS` (default 2) sets the number of kill + isolate rounds; each round is
//! about ten seconds. Every wait is bounded and the nodes are killed when the test ends.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a failure is a test failure"
)]

mod common;

use bytes::Bytes;
use common::{CLUSTER, Cluster, FAULT_INJECTION, get, kv};
use ringkv_client::{Client, ClientConfig, Endpoint, RetryPolicy, TlsSource};
use ringkv_sim::checkers::linearizability::KeyVerdict;
use ringkv_sim::kv::Value;
use ringkv_sim::linearizability::versioned::{
    VersionedOp as Op, VersionedOperation as Operation, VersionedResult as OpResult,
    check_versioned_key, first_violation,
};
use ringkv_types::{KvResult, NodeId, ReadConsistency, Response, ShardId, ShardMap};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: u64 = 2;
const CLIENTS: u64 = 16;
const KEYS: u8 = 8;
/// How far the servers' log times (wall clock, whole milliseconds) may be from the history's
/// monotonic clock over one run on one machine, in nanoseconds: a millisecond of truncation
/// plus the drift a clock slew could add over a minute (500 ppm, 30 ms), rounded up.
const CLOCK_SLACK: u64 = 50_000_000;
/// The longest TTL the workload writes.
const TTL_MAX: Duration = Duration::from_millis(2000);

/// Event times for the history: nanoseconds on the monotonic clock since the test started,
/// made strictly increasing so that no two events tie (the checker orders events by time).
struct Clock {
    start: Instant,
    last: Mutex<u64>,
}

impl Clock {
    fn now(&self) -> u64 {
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

fn key_name(key: u8) -> String {
    format!("lin-{key}")
}

fn encode(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn decode_one(bytes: Bytes) -> Value {
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a value no client wrote: {bytes:?}"))
}

fn decode(bytes: Option<Bytes>) -> Option<Value> {
    bytes.map(decode_one)
}

async fn connect(cluster: &Cluster) -> Client {
    let endpoints = cluster
        .addrs
        .iter()
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
    config.request_timeout = Duration::from_secs(4);
    config.attempt_timeout = Duration::from_secs(1);
    config.retry = RetryPolicy {
        attempts_max: 32,
        ..RetryPolicy::default()
    };
    Client::connect(config).await.unwrap()
}

/// Counts of what the clients saw, printed with the verdict.
#[derive(Debug, Default)]
struct Tally {
    completed: u64,
    unknown_writes: u64,
    failed_reads: u64,
    /// Reads served under the leader lease (`ReadConsistency::Lease`) that completed.
    lease_reads: u64,
    /// Puts with a TTL that were acknowledged.
    ttl_puts: u64,
    /// Compare-and-swaps on the version that were answered (swapped or not).
    version_cases: u64,
}

/// One client: random operations until `stop`, each recorded with its invoke and return time.
async fn run_client(
    id: u64,
    client: Client,
    clock: Arc<Clock>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (Vec<Operation>, Tally) {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    // The last value and version this client saw per key: what its compare-and-swaps expect.
    let mut seen: BTreeMap<u8, Option<(Value, u64)>> = BTreeMap::new();
    let mut writes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.below(u64::from(KEYS)) as u8;
        let name = key_name(key);
        writes += 1;
        let fresh: Value = ((id + 1) << 32) | writes;
        let choice = rng.below(100);
        // Reads: 0..20 ReadIndex, 20..35 under the lease (check-quorum), which the kills and
        // isolations of leaders put to the test; even choices ask for the version.
        let consistency = if choice < 20 {
            ReadConsistency::Linearizable
        } else {
            ReadConsistency::Lease
        };
        let last = seen.get(&key).copied().flatten();
        let op = match choice {
            0..35 => Op::Get(key),
            35..55 => Op::Put { key, value: fresh },
            55..63 => Op::PutTtl {
                key,
                value: fresh,
                // Whole milliseconds (what the server counts), in nanoseconds.
                ttl: (200 + rng.below(1801)) * 1_000_000,
            },
            63..73 => Op::Delete(key),
            73..87 => Op::Cas {
                key,
                expected: last.map(|(value, _)| value),
                new: fresh,
            },
            _ => Op::CasVersion {
                key,
                expected: last.map_or(0, |(_, version)| version),
                new: fresh,
            },
        };
        let invoked_at = clock.now();
        let result = match op {
            Op::Get(_) if choice.is_multiple_of(2) => client
                .get_versioned(name.clone(), consistency)
                .await
                .map(|found| {
                    let found = found.map(|found| (decode_one(found.value), found.version));
                    seen.insert(key, found);
                    OpResult::Read(found)
                }),
            Op::Get(_) => client
                .get_with(name.clone(), consistency)
                .await
                .map(|value| OpResult::Value(decode(value))),
            Op::Put { value, .. } => client
                .put_versioned(name.clone(), encode(value))
                .await
                .map(OpResult::Written),
            Op::PutTtl { value, ttl, .. } => client
                .put_with_ttl(name.clone(), encode(value), Duration::from_nanos(ttl))
                .await
                .map(|version| {
                    tally.ttl_puts += 1;
                    OpResult::Written(version)
                }),
            Op::Delete(_) => client
                .delete(name.clone())
                .await
                .map(|()| OpResult::Deleted),
            Op::Cas { expected, new, .. } => client
                .compare_and_swap(name.clone(), expected.map(encode), Some(encode(new)))
                .await
                .map(|outcome| OpResult::Swapped {
                    succeeded: outcome.succeeded,
                    previous: decode(outcome.previous),
                }),
            Op::CasVersion { expected, new, .. } => client
                .compare_version_and_swap(name.clone(), expected, Some(encode(new)))
                .await
                .map(|outcome| {
                    tally.version_cases += 1;
                    let previous = decode(outcome.previous).map(|v| (v, outcome.previous_version));
                    seen.insert(
                        key,
                        if outcome.succeeded {
                            Some((new, outcome.index))
                        } else {
                            previous
                        },
                    );
                    OpResult::VersionSwapped {
                        succeeded: outcome.succeeded,
                        previous,
                        index: outcome.index,
                    }
                }),
        };
        let returned_at = clock.now();
        let completed = match result {
            Ok(result) => {
                tally.completed += 1;
                if matches!(op, Op::Get(_)) && consistency == ReadConsistency::Lease {
                    tally.lease_reads += 1;
                }
                Some((returned_at, result))
            }
            // A read that failed had no effect: leave it out.
            Err(_) if matches!(op, Op::Get(_)) => {
                tally.failed_reads += 1;
                continue;
            }
            // A write that failed may or may not have been applied (never twice): its return
            // is unknown, which the checker places at infinity.
            Err(_) => {
                tally.unknown_writes += 1;
                None
            }
        };
        history.push(Operation {
            client: id,
            op,
            invoked_at,
            completed,
        });
        let pause = rng.below(8);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    client.close().await;
    (history, tally)
}

/// The term of `shard` on node `index`, if it answers and hosts the shard.
async fn term_on(cluster: &mut Cluster, index: usize, shard: ShardId) -> Option<u64> {
    let status = cluster.try_status(index).await?;
    let replica = status.replicas.iter().find(|r| r.shard == shard)?;
    Some(replica.term.get())
}

/// The nemesis: per round, kill -9 a node (the leader of one shard in even rounds, node 3 in
/// odd ones) and restart it, then isolate the leader of another shard and heal. Each fault
/// must take effect: the shard a killed or isolated leader led gets a leader among the other
/// nodes, in a higher term; a killed node answers again as a new process.
async fn nemesis(cluster: &mut Cluster, map: &ShardMap, rounds: usize) {
    let all = [0, 1, 2];
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..rounds {
        let shard = map.shards[round % map.shards.len()].id;
        let leader = cluster.leader_among(shard, &all).await;
        let victim = if round % 2 == 1 { 2 } else { leader };
        let term_before = term_on(cluster, leader, shard).await.unwrap_or(0);
        eprintln!(
            "round {round}: kill -9 node {} (node {} leads {shard} in term {term_before})",
            victim + 1,
            leader + 1
        );
        let killed_at = Instant::now();
        cluster.kill_node(victim);
        tokio::time::sleep(Duration::from_secs(2)).await;
        if victim == leader {
            let others: Vec<usize> = all.into_iter().filter(|&i| i != victim).collect();
            let successor = cluster.leader_among(shard, &others).await;
            let term = term_on(cluster, successor, shard).await.unwrap_or(0);
            assert!(
                term > term_before,
                "round {round}: {shard} led by node {} in term {term} after its leader (term \
                 {term_before}) was killed",
                successor + 1
            );
            eprintln!(
                "round {round}: node {} leads {shard} in term {term}",
                successor + 1
            );
        }
        cluster.start_node(victim).await;
        let uptime = cluster.status(victim).await.uptime_secs;
        assert!(
            Duration::from_secs(uptime) <= killed_at.elapsed(),
            "round {round}: node {} was up {uptime} s: the kill did not take",
            victim + 1
        );
        tokio::time::sleep(Duration::from_secs(3)).await;

        let shard = map.shards[(round + 1) % map.shards.len()].id;
        let victim = cluster.leader_among(shard, &all).await;
        let term_before = term_on(cluster, victim, shard).await.unwrap_or(0);
        eprintln!(
            "round {round}: isolate node {} (leader of {shard} in term {term_before})",
            victim + 1
        );
        cluster.isolate(victim).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let others: Vec<usize> = all.into_iter().filter(|&i| i != victim).collect();
        let successor = cluster.leader_among(shard, &others).await;
        let term = term_on(cluster, successor, shard).await.unwrap_or(0);
        assert!(
            term > term_before,
            "round {round}: {shard} led by node {} in term {term} while its leader (term \
             {term_before}) was isolated",
            successor + 1
        );
        eprintln!(
            "round {round}: node {} leads {shard} in term {term}",
            successor + 1
        );
        cluster.heal().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits (bounded) until every node reports the same applied index for every group.
async fn wait_until_replicas_agree(cluster: &mut Cluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut applied: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
        for index in 0..cluster.nodes.len() {
            if let Some(status) = cluster.try_status(index).await {
                for replica in status.replicas {
                    applied
                        .entry(replica.shard)
                        .or_default()
                        .push(replica.applied.get());
                }
            }
        }
        if applied
            .values()
            .all(|all| all.len() == cluster.nodes.len() && all.windows(2).all(|w| w[0] == w[1]))
            && applied.len() as u64 == SHARDS + 1
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never agreed: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the operations around the earliest point where the key's history stops being
/// linearizable: what to read to see why.
fn explain_violation(operations: &[&Operation]) {
    let Some(at) = first_violation(operations, CLOCK_SLACK) else {
        eprintln!("  no prefix is a violation (the search was undecided)");
        return;
    };
    eprintln!("  the history stops being linearizable at {at} ns; operations around it:");
    let mut around: Vec<&&Operation> = operations
        .iter()
        .filter(|operation| operation.invoked_at <= at)
        .filter(|operation| {
            operation
                .completed
                .is_none_or(|(returned, _)| returned + 50_000_000 >= at)
        })
        .collect();
    around.sort_by_key(|operation| operation.invoked_at);
    for operation in around.iter().rev().take(40).rev() {
        eprintln!(
            "  client {:2} [{} .. {}] {:?} -> {:?}",
            operation.client,
            operation.invoked_at,
            operation
                .completed
                .map_or("?".to_string(), |(at, _)| at.to_string()),
            operation.op,
            operation.completed.map(|(_, result)| result)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_through_kills_and_partitions_stay_linearizable() {
    let rounds: usize = std::env::var("RINGKV_CHAOS_ROUNDS").ok().map_or(2, |text| {
        text.parse().expect("RINGKV_CHAOS_ROUNDS is a number")
    });
    let seed = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % u128::from(u64::MAX),
    )
    .unwrap();
    eprintln!("workload seed {seed}, {rounds} rounds");
    let mut cluster = Cluster::start_with(3, SHARDS, FAULT_INJECTION, true).await;
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let map = cluster.shard_map(0).await;
    let clock = Arc::new(Clock {
        start: Instant::now(),
        last: Mutex::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for id in 0..CLIENTS {
        let client = connect(&cluster).await;
        workers.push(tokio::spawn(run_client(
            id,
            client,
            clock.clone(),
            stop.clone(),
            seed,
        )));
    }

    nemesis(&mut cluster, &map, rounds).await;
    eprintln!("nemesis done after {:?}", clock.start.elapsed());
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    let mut tally = Tally::default();
    for worker in workers {
        let (operations, counts) = worker.await.unwrap();
        history.extend(operations);
        tally.completed += counts.completed;
        tally.unknown_writes += counts.unknown_writes;
        tally.failed_reads += counts.failed_reads;
        tally.lease_reads += counts.lease_reads;
        tally.ttl_puts += counts.ttl_puts;
        tally.version_cases += counts.version_cases;
    }

    // Every TTL written is up (or was replaced) before the final reads, so they and the stale
    // reads below see the same settled data.
    tokio::time::sleep(TTL_MAX + Duration::from_millis(500)).await;

    // Final reads, after healing and with every node up, join the history: an acknowledged
    // write that was lost cannot be linearized before them.
    cluster
        .wait_for_leaders(SHARDS, Duration::from_secs(30))
        .await;
    let reader = connect(&cluster).await;
    let mut finals = BTreeMap::new();
    for key in 0..KEYS {
        let name = key_name(key);
        let deadline = Instant::now() + Duration::from_secs(30);
        let (invoked_at, value, returned_at) = loop {
            let invoked_at = clock.now();
            match reader.get(name.clone()).await {
                Ok(value) => break (invoked_at, decode(value), clock.now()),
                Err(error) => assert!(Instant::now() < deadline, "final read of {name}: {error}"),
            }
        };
        finals.insert(key, value);
        history.push(Operation {
            client: CLIENTS,
            op: Op::Get(key),
            invoked_at,
            completed: Some((returned_at, OpResult::Value(value))),
        });
    }
    reader.close().await;
    eprintln!(
        "{} operations recorded after {:?}: {tally:?}",
        history.len(),
        clock.start.elapsed()
    );
    assert!(
        tally.completed >= 200,
        "too few operations completed to mean anything: {tally:?}"
    );
    assert!(
        tally.lease_reads >= 20,
        "too few lease reads completed to test the lease: {tally:?}"
    );
    assert!(
        tally.ttl_puts >= 10 && tally.version_cases >= 10,
        "too few TTL puts or version compare-and-swaps to test them: {tally:?}"
    );

    let mut verdicts = BTreeMap::new();
    for key in 0..KEYS {
        let operations: Vec<&Operation> = history
            .iter()
            .filter(|operation| operation.op.key() == key)
            .collect();
        let started = Instant::now();
        let verdict = check_versioned_key(&operations, CLOCK_SLACK);
        eprintln!(
            "key {key}: {} operations, {verdict:?} in {:?}",
            operations.len(),
            started.elapsed()
        );
        if verdict == KeyVerdict::Violation {
            explain_violation(&operations);
        }
        verdicts.insert(key, verdict);
    }
    assert!(
        verdicts.values().all(|v| *v == KeyVerdict::Linearizable),
        "seed {seed}: {verdicts:?}"
    );

    // Every replica applied the same data: stale reads on every node match the final reads.
    wait_until_replicas_agree(&mut cluster).await;
    eprintln!("replicas agree after {:?}", clock.start.elapsed());
    for key in 0..KEYS {
        let name = key_name(key);
        let descriptor = map.shard_for_key(name.as_bytes()).unwrap().clone();
        for index in 0..3 {
            let request = kv(&descriptor, None, get(&name, ReadConsistency::Stale));
            match cluster.call(index, request).await {
                Response::Kv(KvResult::Value { value, .. }) => {
                    assert_eq!(decode(value), finals[&key], "{name} on node {}", index + 1)
                }
                other => panic!("stale read of {name} on node {}: {other:?}", index + 1),
            }
        }
    }
    eprintln!("stale reads done after {:?}", clock.start.elapsed());
    cluster.stop_all().await;
    eprintln!("stopped after {:?}", clock.start.elapsed());
}
