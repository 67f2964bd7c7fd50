//! `ringkv-bench --check-linearizability`: closed-loop clients doing gets, puts, deletes and
//! compare-and-swaps on a few keys, every operation recorded with its invocation and return
//! time, then the history checked per key with the simulator's checker
//! (`ringkv_sim::checkers::linearizability`). A read that failed after the client's retries is
//! left out (it had no effect) and counted; a write that failed is kept with an unknown outcome
//! (it may have been applied, once) and counted. At the end every key is read once more and
//! those reads join the history, so a lost acknowledged write is a violation.

use bytes::Bytes;
use ringkv_client::Client;
use ringkv_sim::checkers::linearizability::{KeyVerdict, check_key};
use ringkv_sim::history::Operation;
use ringkv_sim::kv::{Op, OpResult, Value};
use ringkv_types::ShardId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Event times: nanoseconds since the run started, strictly increasing (no two events tie).
struct Clock {
    start: Instant,
    last: Mutex<u64>,
}

impl Clock {
    fn now(&self) -> u64 {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = now.max(last.saturating_add(1));
        *last
    }
}

/// What the run saw and what the checker said.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Operations that completed.
    pub ops: u64,
    /// Reads that failed after the client's retries.
    pub failed_reads: u64,
    /// Writes that failed after the client's retries (outcome unknown).
    pub unknown_writes: u64,
    /// Keys whose history admits no linearization.
    pub violations: Vec<u8>,
    /// Keys the checker could not decide within its budget.
    pub inconclusive: Vec<u8>,
    /// The last client error, if any.
    pub last_error: Option<String>,
}

impl Outcome {
    /// `linearizable`, `violation` or `inconclusive`.
    pub fn verdict(&self) -> &'static str {
        if !self.violations.is_empty() {
            "violation"
        } else if !self.inconclusive.is_empty() {
            "inconclusive"
        } else {
            "linearizable"
        }
    }
}

fn key_name(run: u64, key: u8) -> String {
    format!("lin-{run:x}-{key}")
}

fn encode(value: Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// A value read back; `Err` for bytes no client of this run wrote.
fn decode(bytes: Option<Bytes>) -> Result<Option<Value>, String> {
    match bytes {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("a value no client wrote: {bytes:?}")),
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

struct ClientRun {
    history: Vec<Operation>,
    ops: u64,
    failed_reads: u64,
    unknown_writes: u64,
    last_error: Option<String>,
}

#[allow(clippy::too_many_arguments, reason = "one task's parameters")]
async fn run_client(
    id: u64,
    client: Client,
    run: u64,
    keys: u8,
    clock: Arc<Clock>,
    seed: u64,
    deadline: tokio::time::Instant,
) -> Result<ClientRun, String> {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = ClientRun {
        history: Vec::new(),
        ops: 0,
        failed_reads: 0,
        unknown_writes: 0,
        last_error: None,
    };
    let mut seen: BTreeMap<u8, Option<Value>> = BTreeMap::new();
    let mut writes = 0u64;
    while tokio::time::Instant::now() < deadline {
        let key = u8::try_from(rng.below(u64::from(keys))).unwrap_or(0);
        let name = key_name(run, key);
        let group = client
            .shard_for_key(name.as_bytes())
            .map_or(ShardId(0), |d| d.id);
        writes += 1;
        let fresh: Value = ((id + 1) << 32) | writes;
        let op = match rng.below(100) {
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
            Op::Get(_) => match client.get(name.clone()).await {
                Ok(value) => {
                    let value = decode(value)?;
                    seen.insert(key, value);
                    Ok(OpResult::Value(value))
                }
                Err(error) => Err(error),
            },
            Op::Put(_, value) => client
                .put(name.clone(), encode(value))
                .await
                .map(|()| OpResult::Done),
            Op::Delete(_) => client.delete(name.clone()).await.map(|()| OpResult::Done),
            Op::Cas { expected, new, .. } => {
                match client
                    .compare_and_swap(name.clone(), expected.map(encode), Some(encode(new)))
                    .await
                {
                    Ok(outcome) => {
                        seen.insert(key, decode(outcome.previous)?);
                        Ok(OpResult::Swapped(outcome.succeeded))
                    }
                    Err(error) => Err(error),
                }
            }
        };
        let returned_at = clock.now();
        let completed = match result {
            Ok(result) => {
                out.ops += 1;
                Some((returned_at, result))
            }
            Err(error) if matches!(op, Op::Get(_)) => {
                out.failed_reads += 1;
                out.last_error = Some(format!("get {name}: {error}"));
                continue;
            }
            Err(error) => {
                out.unknown_writes += 1;
                out.last_error = Some(format!("{op:?} on {name}: {error}"));
                None
            }
        };
        out.history.push(Operation {
            client: id,
            group,
            op,
            invoked_at,
            completed,
            discarded: false,
        });
        tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
    }
    Ok(out)
}

/// Runs `clients` clients on `keys` fresh keys for `duration`, then checks the history.
///
/// # Errors
/// A value no client wrote, a client task that failed, or a final read that failed.
pub async fn run(
    client: &Client,
    clients: usize,
    keys: u8,
    duration: Duration,
    seed: u64,
) -> Result<Outcome, String> {
    // Fresh keys per run: the checker starts every key absent.
    let run = seed
        ^ u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() % u128::from(u64::MAX)),
        )
        .unwrap_or(0);
    let clock = Arc::new(Clock {
        start: Instant::now(),
        last: Mutex::new(0),
    });
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..clients as u64 {
        tasks.spawn(run_client(
            id,
            client.clone(),
            run,
            keys,
            clock.clone(),
            seed,
            deadline,
        ));
    }
    let mut outcome = Outcome::default();
    let mut history = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let done = joined.map_err(|error| format!("a client task failed: {error}"))??;
        outcome.ops += done.ops;
        outcome.failed_reads += done.failed_reads;
        outcome.unknown_writes += done.unknown_writes;
        if done.last_error.is_some() {
            outcome.last_error = done.last_error;
        }
        history.extend(done.history);
    }
    for key in 0..keys {
        let name = key_name(run, key);
        let invoked_at = clock.now();
        let value = client
            .get(name.clone())
            .await
            .map_err(|error| format!("final read of {name}: {error}"))?;
        let value = decode(value)?;
        history.push(Operation {
            client: u64::MAX,
            group: client
                .shard_for_key(name.as_bytes())
                .map_or(ShardId(0), |d| d.id),
            op: Op::Get(key),
            invoked_at,
            completed: Some((clock.now(), OpResult::Value(value))),
            discarded: false,
        });
    }
    for key in 0..keys {
        let operations: Vec<&Operation> = history.iter().filter(|o| o.op.key() == key).collect();
        match check_key(&operations) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::Violation => outcome.violations.push(key),
            KeyVerdict::Inconclusive => outcome.inconclusive.push(key),
        }
    }
    Ok(outcome)
}
