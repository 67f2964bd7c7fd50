//! `ringkv-sim --seeds N [--start S] [--plant-bug NAME] [--verbose]`: runs seeds S..S+N.
//! `--plant-bug` needs a build with `--features planted-bugs` (never part of a release build).
//! `ringkv-sim --node-core --seeds N [--start S] [--plant-bug NAME] [--verbose]`: the same,
//! over the real node core (see `core_world`), with the node-core bugs for `--plant-bug`.
//! `ringkv-sim --idle GROUPS [--nodes N] [--ticks T]`: what idle groups cost with and without
//! quiescence (replica ticks and Raft messages over the second half of the run).
//! `ringkv-sim --pd-scale [--nodes N] [--shards S] [--start SEED] [--scenario join|drain|kill]
//! [--limit-s SECONDS]`:
//! the placement driver balancing a modelled cluster (`ringkv_sim::pdscale`), with the time it
//! takes.

use anyhow::{Context, bail};
use ringkv_sim::core_world::planted::NodeBug;
use ringkv_sim::{PlantedBug, World, run_seed};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut bug = None;
    let mut bug_name: Option<String> = None;
    let mut verbose = false;
    let mut idle_groups: Option<u64> = None;
    let mut idle_nodes = 3u64;
    let mut idle_ticks = 400u64;
    let mut pd_scale = false;
    let mut nodes_given = None;
    let mut shards = 10_000u64;
    let mut scenario = "join".to_string();
    let mut limit_s = None;
    let mut node_core = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => seeds = args.next().context("--seeds needs a number")?.parse()?,
            "--start" => start = args.next().context("--start needs a number")?.parse()?,
            "--plant-bug" => {
                bug_name = Some(args.next().context("--plant-bug needs a name")?);
            }
            "--verbose" => verbose = true,
            "--idle" => idle_groups = Some(args.next().context("--idle needs a number")?.parse()?),
            "--nodes" => {
                idle_nodes = args.next().context("--nodes needs a number")?.parse()?;
                nodes_given = Some(idle_nodes);
            }
            "--pd-scale" => pd_scale = true,
            "--node-core" => node_core = true,
            "--shards" => shards = args.next().context("--shards needs a number")?.parse()?,
            "--scenario" => scenario = args.next().context("--scenario needs a name")?,
            "--limit-s" => {
                limit_s = Some(args.next().context("--limit-s needs a number")?.parse()?)
            }
            "--ticks" => idle_ticks = args.next().context("--ticks needs a number")?.parse()?,
            "--help" | "-h" => {
                println!("usage: ringkv-sim --seeds N [--start S] [--plant-bug NAME] [--verbose]");
                println!("       ringkv-sim --idle GROUPS [--nodes N] [--ticks T]");
                println!(
                    "       ringkv-sim --node-core --seeds N [--start S] [--plant-bug NAME] \
                     [--verbose]"
                );
                println!(
                    "       ringkv-sim --pd-scale [--nodes N] [--shards S] [--start SEED] \
                     [--scenario join|drain|kill] [--limit-s SIMULATED_SECONDS]"
                );
                println!();
                println!(
                    "Runs seeds S..S+N; prints `VIOLATION seed S: <checker>: <detail>` for each"
                );
                println!("seed that breaks a property and exits 1 if any did.");
                println!();
                println!(
                    "--plant-bug NAME switches on a known protocol bug; each is caught by one"
                );
                println!("checker:");
                for planted in PlantedBug::ALL {
                    println!("  {:<28} caught by {}", planted.name(), planted.checker());
                }
                println!();
                println!("With --node-core, the node-core bugs instead:");
                for planted in NodeBug::ALL {
                    println!("  {:<28} caught by {}", planted.name(), planted.checker());
                }
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if pd_scale {
        return run_pd_scale(
            start,
            nodes_given.unwrap_or(100),
            shards,
            &scenario,
            limit_s,
        );
    }
    if let Some(groups) = idle_groups {
        return run_idle(start, idle_nodes, groups, idle_ticks);
    }
    if let Some(name) = &bug_name {
        let compiled = if node_core {
            ringkv_node::core::planted::PlantedNodeBugs::COMPILED
        } else {
            ringkv_raft::PlantedBugs::COMPILED
        };
        if !compiled {
            let node_core = if node_core { " --node-core" } else { "" };
            bail!(
                "--plant-bug needs the planted bugs compiled in: \
                 cargo run -p ringkv-sim --features planted-bugs --{node_core} --plant-bug {name}"
            );
        }
        if !node_core {
            bug = Some(
                PlantedBug::from_name(name)
                    .with_context(|| format!("unknown bug {name:?} (try --help)"))?,
            );
        }
    }
    if node_core {
        let bug = match &bug_name {
            Some(name) => Some(
                NodeBug::from_name(name)
                    .with_context(|| format!("unknown node-core bug {name:?} (try --help)"))?,
            ),
            None => None,
        };
        return run_node_core(start, seeds, bug, verbose);
    }
    // Panics inside a seed are caught and reported as violations; keep their output short.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut ops, mut elections, mut snapshots, mut conf_changes, mut violations) = (0, 0, 0, 0, 0);
    let mut inconclusive = 0;
    let mut pd_orders = 0;
    let (mut quiet_seeds, mut ticks_run, mut ticks_skipped, mut longest_leaderless) = (0, 0, 0, 0);
    let mut quiet_leaders_killed = 0;
    for seed in start..start.saturating_add(seeds) {
        let report = run_seed(seed, bug);
        ops += report.ops_checked;
        elections += report.elections;
        snapshots += report.snapshots;
        conf_changes += report.conf_changes;
        pd_orders += report.pd_orders;
        inconclusive += report.inconclusive_keys;
        quiet_seeds += u64::from(report.quiesce);
        ticks_run += report.ticks_run;
        ticks_skipped += report.ticks_skipped;
        longest_leaderless = longest_leaderless.max(report.longest_leaderless);
        quiet_leaders_killed += report.quiet_leaders_killed;
        if verbose {
            println!(
                "seed {seed}: nodes {} ops {} inconclusive keys {} elections {} snapshots {} conf \
                 changes {} PD orders {} quiesce {} ticks skipped {}/{} longest leaderless {} \
                 trace {:016x}",
                report.nodes,
                report.ops_checked,
                report.inconclusive_keys,
                report.elections,
                report.snapshots,
                report.conf_changes,
                report.pd_orders,
                report.quiesce,
                report.ticks_skipped,
                report.ticks_run + report.ticks_skipped,
                report.longest_leaderless,
                report.trace_hash
            );
        }
        if let Some(violation) = report.violation {
            violations += 1;
            eprintln!("VIOLATION seed {seed}: {violation}");
            // A planted bug runs only in a build with the feature: say how to get one.
            let (features, planted) =
                bug_name
                    .as_deref()
                    .map_or((String::new(), String::new()), |b| {
                        (
                            " --features planted-bugs".to_owned(),
                            format!(" --plant-bug {b}"),
                        )
                    });
            eprintln!(
                "reproduce: cargo run -p ringkv-sim{features} -- --seeds 1 --start {seed}{planted}"
            );
        }
    }
    eprintln!(
        "ran {seeds} seeds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "seeds: {seeds}, violations: {violations}, ops checked: {ops}, inconclusive keys: \
         {inconclusive}, elections: {elections}, snapshots: {snapshots}, conf changes: \
         {conf_changes}, PD orders: {pd_orders}"
    );
    println!(
        "quiescing seeds: {quiet_seeds}, replica ticks skipped: {ticks_skipped} of {}, quiescent \
         leaders killed: {quiet_leaders_killed}, longest leaderless stretch with a connected \
         majority: {longest_leaderless} ticks",
        ticks_run + ticks_skipped
    );
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `--node-core`: seeds of the simulator running the real node core (`core_world`).
fn run_node_core(
    start: u64,
    seeds: u64,
    bug: Option<NodeBug>,
    verbose: bool,
) -> anyhow::Result<()> {
    let planted = bug.map(NodeBug::switches).unwrap_or_default();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut ops, mut completed, mut snapshots, mut crashes, mut lost, mut violations) =
        (0, 0, 0, 0, 0, 0);
    let (mut kept, mut compared) = (0, 0);
    let (mut splits, mut split_crashes, mut writes) = (0, 0, 0);
    for seed in start..start.saturating_add(seeds) {
        let report = ringkv_sim::core_world::run_core_seed_planted(seed, planted);
        ops += report.ops_checked;
        completed += report.ops_completed;
        snapshots += report.snapshots;
        crashes += report.crashes;
        lost += report.apply_batches_lost;
        kept += report.turn_batches_kept;
        compared += report.states_compared;
        splits += u64::from(report.split);
        split_crashes += report.split_crashes;
        writes += report.writes_compared;
        if verbose {
            println!(
                "seed {seed}: ops {} completed {} snapshots {} crashes {} apply batches lost {} \
                 turn batches kept {} states compared {} split {} split crashes {} trace {:016x}",
                report.ops_checked,
                report.ops_completed,
                report.snapshots,
                report.crashes,
                report.apply_batches_lost,
                report.turn_batches_kept,
                report.states_compared,
                report.split,
                report.split_crashes,
                report.trace_hash
            );
        }
        if let Some(violation) = report.violation {
            violations += 1;
            eprintln!("VIOLATION seed {seed}: {violation}");
            let (features, planted) = bug.map_or((String::new(), String::new()), |b| {
                (
                    " --features planted-bugs".to_owned(),
                    format!(" --plant-bug {}", b.name()),
                )
            });
            eprintln!(
                "reproduce: cargo run -p ringkv-sim{features} -- --node-core --seeds 1 \
                 --start {seed}{planted}"
            );
        }
    }
    eprintln!(
        "ran {seeds} node-core seeds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "node-core seeds: {seeds}, violations: {violations}, ops checked: {ops}, completed: \
         {completed}, snapshots: {snapshots}, crashes: {crashes}, apply batches lost: {lost}, \
         unsynced turn batches kept by crashes: {kept}, applied states compared: {compared}, \
         seeds that split: {splits}, crashes right after a split's new group: {split_crashes}, \
         applied writes checked exactly-once: {writes}"
    );
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `--idle`: the same idle cluster with and without quiescence.
fn run_idle(seed: u64, nodes: u64, groups: u64, ticks: u64) -> anyhow::Result<()> {
    for quiesce in [false, true] {
        let started = Instant::now();
        let report = World::idle(seed, nodes, groups, ticks, quiesce)
            .map_err(|v| anyhow::anyhow!("violation: {v}"))?;
        let half = ticks / 2;
        println!(
            "{groups} idle groups on {nodes} nodes, quiescence {}: over the last {half} ticks \
             {} replica ticks run, {} skipped ({:.2}% skipped), {} Raft messages ({:.2} per \
             group per tick); {} of {groups} groups led; {:.1} s",
            if quiesce { "on" } else { "off" },
            report.ticks_run,
            report.ticks_skipped,
            100.0 * report.skipped_fraction(),
            report.messages,
            report.messages as f64 / (groups * half.max(1)) as f64,
            report.led_groups,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `--pd-scale`: one scenario of PD balancing a modelled cluster.
fn run_pd_scale(
    seed: u64,
    nodes: u64,
    shards: u64,
    scenario: &str,
    limit_s: Option<u64>,
) -> anyhow::Result<()> {
    use ringkv_sim::pdscale::{PdScale, PdScaleConfig, Scenario};
    let scenario = match scenario {
        "join" => Scenario::Join,
        "drain" => Scenario::Drain { node: nodes },
        "kill" => Scenario::Kill { node: nodes },
        other => bail!("unknown scenario {other:?} (join, drain or kill)"),
    };
    let mut config = PdScaleConfig::new(nodes, shards, scenario);
    config.seed = seed;
    if let Some(limit) = limit_s {
        config.limit_ms = limit.saturating_mul(1000);
    }
    let started = Instant::now();
    let report = PdScale::new(config)?.run()?;
    println!("{report}");
    eprintln!("ran in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
