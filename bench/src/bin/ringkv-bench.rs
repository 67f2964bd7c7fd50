//! `ringkv-bench`: a closed-loop load generator for a running cluster.
//!
//! `--clients` tasks share one [`Client`] (one connection per node) and each keeps one
//! operation in flight, so `--clients` is the number of concurrent operations. The run lasts
//! `--duration` seconds (at most one hour), then prints throughput, latency percentiles
//! (hdrhistogram, microsecond resolution), errors, and the CPU time each operation cost the
//! servers (summed over the `ringkvd` processes, see `--server-pids`) and the load generator,
//! as one line, or JSON with `--json`. See `docs/perf.md`.
//!
//! `--failover-report EVENTS`: each task owns one key and records every interval without a
//! completed operation on it; the run ends at `--duration` or when the events file (written
//! by `bench/failover-bench.sh`, which injects the faults) says `end`; then one line per fault
//! event with its outage and a summary per kind (see `ringkv_bench::failover`).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use ringkv_bench::cpu;
use ringkv_bench::failover::{self, GAP_RECORD_MIN_MS, Gap};
use ringkv_bench::load::{KeyChooser, Rng, Workload};
use ringkv_client::{Client, ClientConfig, ReadConsistency, TlsSource};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Longest run accepted.
const DURATION_MAX_SECS: u64 = 3600;
/// Most concurrent operations accepted.
const CLIENTS_MAX: usize = 65_536;
/// Largest value accepted.
const VALUE_SIZE_MAX: usize = 16 * 1024 * 1024;
/// Time allowed for the key load before the run.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Load generator for a ringkv cluster (reads `ringctl.toml`).
#[derive(Debug, Parser)]
#[command(name = "ringkv-bench", version, about)]
struct Args {
    /// The ringctl config (default: $RINGCTL_CONFIG, else ./data/local/ringctl.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// put, get, mixed (80 % get), ycsb-a (50 % read, Zipfian), ycsb-b (95 %), ycsb-c (100 %).
    #[arg(long, default_value = "mixed")]
    workload: Workload,
    /// Concurrent operations.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Run time in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Read consistency: linearizable, lease or stale.
    #[arg(long, default_value = "linearizable")]
    consistency: String,
    /// Skip writing every key before a workload that reads.
    #[arg(long)]
    no_preload: bool,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of one line.
    #[arg(long)]
    json: bool,
    /// Instead of a workload: gets, puts, deletes and compare-and-swaps on `--check-keys` fresh
    /// keys, the history checked for linearizability (exit 1 unless linearizable). Needs a
    /// build with `--features check`.
    #[arg(long)]
    check_linearizability: bool,
    /// Keys of `--check-linearizability` (1 to 64).
    #[arg(long, default_value_t = 8)]
    check_keys: u8,
    /// Failover mode: one key per task, per-key gaps without a completed operation, matched
    /// to the fault events in this file (`<unix ms> <kind> <node>` lines, `end` to stop).
    #[arg(long, value_name = "EVENTS")]
    failover_report: Option<PathBuf>,
    /// Server processes whose CPU time is reported per operation (comma-separated pids).
    /// Default: the `ringkvd` processes whose config lies under the ringctl config's directory
    /// (the nodes of `ringctl local up`).
    #[arg(long, value_name = "PIDS", value_delimiter = ',')]
    server_pids: Vec<u32>,
}

/// The parts of `ringctl.toml` the load generator needs.
#[derive(Debug, Deserialize)]
struct RingctlFile {
    cluster: String,
    endpoints: Vec<String>,
    tls: TlsFiles,
}

#[derive(Debug, Deserialize)]
struct TlsFiles {
    ca_cert: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The ringctl config file: `--config`, else `$RINGCTL_CONFIG`, else the local cluster's.
fn config_path(explicit: Option<&Path>) -> PathBuf {
    match (explicit, std::env::var_os("RINGCTL_CONFIG")) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from("data/local/ringctl.toml"),
    }
}

fn client_config(path: &Path) -> Result<ClientConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (start a cluster with `ringctl local up`)",
            path.display()
        )
    })?;
    let file: RingctlFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_path_buf()
        }
    };
    let tls = TlsSource::Files {
        ca_cert: resolve(&file.tls.ca_cert),
        cert: resolve(&file.tls.cert),
        key: resolve(&file.tls.key),
    };
    let endpoints = ClientConfig::parse_endpoints(&file.endpoints)?;
    Ok(ClientConfig::new(endpoints, file.cluster, tls))
}

fn parse_consistency(text: &str) -> Result<ReadConsistency> {
    Ok(match text {
        "linearizable" => ReadConsistency::Linearizable,
        "lease" => ReadConsistency::Lease,
        "stale" => ReadConsistency::Stale,
        other => bail!("unknown consistency {other:?} (linearizable, lease, stale)"),
    })
}

/// One task's results.
struct Tally {
    latency_us: Histogram<u64>,
    reads: u64,
    writes: u64,
    errors: u64,
    last_error: Option<String>,
    /// Failover mode: the gaps of the task's key.
    gaps: Vec<Gap>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            reads: 0,
            writes: 0,
            errors: 0,
            last_error: None,
            gaps: Vec::new(),
        })
    }
}

/// Now, in unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Failover mode: a closed loop on key `failover-<task>`, recording gaps between completions.
async fn failover_worker(
    client: Client,
    workload: Workload,
    consistency: ReadConsistency,
    value: Bytes,
    task: u64,
    deadline: Instant,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<Tally> {
    let mut rng = Rng::new(task.wrapping_add(17));
    let mut tally = Tally::new()?;
    let key = format!("failover-{task}");
    let mut last_done = unix_ms();
    while Instant::now() < deadline && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let read = rng.below(100) < workload.read_percent();
        let started = Instant::now();
        let outcome = if read {
            tally.reads += 1;
            client.get_with(key.clone(), consistency).await.map(|_| ())
        } else {
            tally.writes += 1;
            client.put(key.clone(), value.clone()).await
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => {
                tally.latency_us.saturating_record(micros.max(1));
                let now = unix_ms();
                if now.saturating_sub(last_done) >= GAP_RECORD_MIN_MS {
                    tally.gaps.push(Gap {
                        key: task,
                        from_ms: last_done,
                        to_ms: now,
                    });
                }
                last_done = now;
            }
            Err(error) => {
                tally.errors += 1;
                tally.last_error = Some(error.to_string());
            }
        }
    }
    // An outage still open at the end counts up to now.
    let now = unix_ms();
    if now.saturating_sub(last_done) >= GAP_RECORD_MIN_MS {
        tally.gaps.push(Gap {
            key: task,
            from_ms: last_done,
            to_ms: now,
        });
    }
    Ok(tally)
}

/// Sets `stop` once the events file says `end`.
async fn watch_events(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ended = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| failover::parse_events(&text).ok())
            .is_some_and(|(_, ended)| ended);
        if ended {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
    }
}

/// Writes every key once, `clients` at a time.
async fn preload(client: &Client, keys: u64, clients: usize, value: &Bytes) -> Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients
        .min(usize::try_from(keys).unwrap_or(usize::MAX))
        .max(1)
    {
        let (client, next, value) = (client.clone(), next.clone(), value.clone());
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= keys {
                    return Ok::<(), ringkv_client::Error>(());
                }
                client.put(KeyChooser::key(index), value.clone()).await?;
            }
        });
    }
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            joined.context("preload task")??;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(PRELOAD_TIMEOUT, all)
        .await
        .context("preloading took too long")?
        .context("preloading keys")
}

async fn worker(
    client: Client,
    workload: Workload,
    chooser: KeyChooser,
    consistency: ReadConsistency,
    value: Bytes,
    seed: u64,
    deadline: Instant,
) -> Result<Tally> {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::new()?;
    while Instant::now() < deadline {
        let key = KeyChooser::key(chooser.next_index(&mut rng));
        let read = rng.below(100) < workload.read_percent();
        let started = Instant::now();
        let outcome = if read {
            tally.reads += 1;
            client.get_with(key, consistency).await.map(|_| ())
        } else {
            tally.writes += 1;
            client.put(key, value.clone()).await
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => tally.latency_us.saturating_record(micros.max(1)),
            Err(error) => {
                tally.errors += 1;
                tally.last_error = Some(error.to_string());
            }
        }
    }
    Ok(tally)
}

async fn run(args: Args) -> Result<()> {
    if args.duration == 0 || args.duration > DURATION_MAX_SECS {
        bail!("--duration must be 1..={DURATION_MAX_SECS} seconds");
    }
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be 1..={CLIENTS_MAX}");
    }
    if args.value_size > VALUE_SIZE_MAX {
        bail!("--value-size must be at most {VALUE_SIZE_MAX}");
    }
    if args.keys == 0 {
        bail!("--keys must be positive");
    }
    let consistency = parse_consistency(&args.consistency)?;
    let path = config_path(args.config.as_deref());
    let config = client_config(&path)?;
    let server_pids = if args.server_pids.is_empty() {
        cpu::local_cluster_pids(path.parent().unwrap_or(Path::new(".")))
    } else {
        args.server_pids.clone()
    };
    let request_timeout = config.request_timeout;
    let client = Client::connect(config).await.context("connecting")?;
    if args.check_linearizability {
        return check_linearizability(&args, &client).await;
    }
    let value = Bytes::from(vec![b'v'; args.value_size]);
    if args.workload.needs_preload() && !args.no_preload && args.failover_report.is_none() {
        if !args.json {
            eprintln!("loading {} keys", args.keys);
        }
        preload(&client, args.keys, args.clients, &value).await?;
    }
    let chooser = KeyChooser::new(args.keys, args.workload.zipfian());
    let server_before = cpu::Sample::take(&server_pids);
    let client_before = cpu::own_ticks();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = args
        .failover_report
        .clone()
        .map(|path| tokio::spawn(watch_events(path, stop.clone())));
    for task in 0..args.clients {
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(task as u64);
        if args.failover_report.is_some() {
            tasks.spawn(failover_worker(
                client.clone(),
                args.workload,
                consistency,
                value.clone(),
                task as u64,
                deadline,
                stop.clone(),
            ));
            continue;
        }
        tasks.spawn(worker(
            client.clone(),
            args.workload,
            chooser.clone(),
            consistency,
            value.clone(),
            seed,
            deadline,
        ));
    }
    let mut total = Tally::new()?;
    // Every worker stops issuing at the deadline; its last call ends within the request timeout.
    let hard_stop = deadline + request_timeout + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(joined)) => {
                let tally = joined.context("worker task")??;
                total.latency_us.add(&tally.latency_us)?;
                total.reads += tally.reads;
                total.writes += tally.writes;
                total.errors += tally.errors;
                total.gaps.extend(tally.gaps);
                if tally.last_error.is_some() {
                    total.last_error = tally.last_error;
                }
            }
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                bail!("workers did not stop in time");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cost = CpuCost {
        servers: server_pids.len(),
        server_seconds: server_before.seconds_until(&cpu::Sample::take(&server_pids)),
        client_seconds: client_before
            .zip(cpu::own_ticks())
            .and_then(|(before, after)| after.checked_sub(before))
            .map(|ticks| ticks as f64 / cpu::TICKS_PER_SEC as f64),
    };
    client.close().await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    if let Some(path) = &args.failover_report {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the events file {}", path.display()))?;
        let (events, _) = failover::parse_events(&text)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        print!("{}", failover::report(&events, &total.gaps));
    }
    report(&args, &total, elapsed, &cost)
}

/// CPU spent during the measured run (the preload excluded).
struct CpuCost {
    /// How many server processes were read.
    servers: usize,
    /// CPU seconds of the servers, summed; `None` without servers or if one could not be read.
    server_seconds: Option<f64>,
    /// CPU seconds of this load generator (all its threads).
    client_seconds: Option<f64>,
}

#[cfg(feature = "check")]
async fn check_linearizability(args: &Args, client: &Client) -> Result<()> {
    if args.check_keys == 0 || args.check_keys > 64 {
        bail!("--check-keys must be 1..=64");
    }
    let started = Instant::now();
    let outcome = ringkv_bench::linearizability::run(
        client,
        args.clients,
        args.check_keys,
        Duration::from_secs(args.duration),
        args.seed,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let elapsed = started.elapsed().as_secs_f64();
    client.close().await;
    if args.json {
        let document = serde_json::json!({
            "mode": "check-linearizability",
            "clients": args.clients,
            "keys": args.check_keys,
            "duration_secs": elapsed,
            "ops": outcome.ops,
            "failed_reads": outcome.failed_reads,
            "unknown_writes": outcome.unknown_writes,
            "verdict": outcome.verdict(),
            "violations": outcome.violations,
            "inconclusive": outcome.inconclusive,
            "last_error": outcome.last_error,
        });
        println!("{document}");
    } else {
        let last = outcome
            .last_error
            .as_deref()
            .map(|e| format!(" last_error={e:?}"))
            .unwrap_or_default();
        println!(
            "check-linearizability clients={} keys={} duration={elapsed:.1}s ops={} \
             failed_reads={} unknown_writes={} verdict={}{last}",
            args.clients,
            args.check_keys,
            outcome.ops,
            outcome.failed_reads,
            outcome.unknown_writes,
            outcome.verdict()
        );
    }
    if outcome.verdict() != "linearizable" {
        bail!(
            "history not linearizable: violations on keys {:?}, inconclusive {:?}",
            outcome.violations,
            outcome.inconclusive
        );
    }
    Ok(())
}

#[cfg(not(feature = "check"))]
async fn check_linearizability(_args: &Args, _client: &Client) -> Result<()> {
    bail!(
        "this ringkv-bench was built without the checker: \
         cargo build -p ringkv-bench --features check --bin ringkv-bench"
    )
}

fn report(args: &Args, total: &Tally, elapsed: f64, cost: &CpuCost) -> Result<()> {
    let ops = total.latency_us.len();
    let server_us = cpu::micros_per_op(cost.server_seconds, ops);
    let client_us = cpu::micros_per_op(cost.client_seconds, ops);
    let ops_per_sec = ops as f64 / elapsed.max(f64::EPSILON);
    let ms = |quantile: f64| total.latency_us.value_at_quantile(quantile) as f64 / 1000.0;
    if args.json {
        let document = serde_json::json!({
            "workload": args.workload.to_string(),
            "clients": args.clients,
            "value_size": args.value_size,
            "keys": args.keys,
            "consistency": args.consistency,
            "duration_secs": elapsed,
            "ops": ops,
            "ops_per_sec": ops_per_sec,
            "reads": total.reads,
            "writes": total.writes,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": total.latency_us.max() as f64 / 1000.0,
            "errors": total.errors,
            "last_error": total.last_error,
            "servers": cost.servers,
            "server_cpu_secs": cost.server_seconds,
            "server_cpu_us_per_op": server_us,
            "client_cpu_secs": cost.client_seconds,
            "client_cpu_us_per_op": client_us,
        });
        println!("{document}");
    } else {
        let last = total
            .last_error
            .as_deref()
            .map(|e| format!(" last_error={e:?}"))
            .unwrap_or_default();
        println!(
            "workload={} clients={} value_size={} keys={} consistency={} duration={elapsed:.1}s \
             ops={ops} ops/s={ops_per_sec:.0} reads={} writes={} p50={:.2}ms p99={:.2}ms \
             p999={:.2}ms max={:.2}ms errors={} server_cpu/op={} ({} servers) \
             client_cpu/op={}{last}",
            args.workload,
            args.clients,
            args.value_size,
            args.keys,
            args.consistency,
            total.reads,
            total.writes,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            total.latency_us.max() as f64 / 1000.0,
            total.errors,
            per_op(server_us),
            cost.servers,
            per_op(client_us),
        );
    }
    Ok(())
}

/// `12.3us`, or `n/a` without a reading.
fn per_op(micros: Option<f64>) -> String {
    micros.map_or_else(|| "n/a".to_owned(), |us| format!("{us:.1}us"))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
