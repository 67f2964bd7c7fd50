//! `ringkv-sim --seeds N [--start S] [--plant-bug NAME] [--verbose]`: runs seeds S..S+N.
//! `--plant-bug` needs a build with `--features planted-bugs` (never part of a release build).

use anyhow::{Context, bail};
use ringkv_sim::{PlantedBug, run_seed};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut bug = None;
    let mut bug_name: Option<String> = None;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seeds" => seeds = args.next().context("--seeds needs a number")?.parse()?,
            "--start" => start = args.next().context("--start needs a number")?.parse()?,
            "--plant-bug" => {
                let name = args.next().context("--plant-bug needs a name")?;
                if !ringkv_raft::PlantedBugs::COMPILED {
                    bail!(
                        "--plant-bug needs the planted bugs compiled in: \
                         cargo run -p ringkv-sim --features planted-bugs -- --plant-bug {name}"
                    );
                }
                bug = Some(match name.as_str() {
                    "commit-previous-term" => PlantedBug::CommitPreviousTerm,
                    "vote-without-log-check" => PlantedBug::VoteWithoutLogCheck,
                    "ack-before-persist" => PlantedBug::AckBeforePersist,
                    "lease-without-quorum" => PlantedBug::LeaseWithoutQuorum,
                    other => bail!("unknown bug {other:?}"),
                });
                bug_name = Some(name);
            }
            "--verbose" => verbose = true,
            "--help" | "-h" => {
                println!(
                    "usage: ringkv-sim --seeds N [--start S] [--plant-bug commit-previous-term|\
                     vote-without-log-check|ack-before-persist|lease-without-quorum] [--verbose]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    // Panics inside a seed are caught and reported as violations; keep their output short.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let (mut ops, mut elections, mut snapshots, mut conf_changes, mut violations) = (0, 0, 0, 0, 0);
    let mut pd_orders = 0;
    for seed in start..start.saturating_add(seeds) {
        let report = run_seed(seed, bug);
        ops += report.ops_checked;
        elections += report.elections;
        snapshots += report.snapshots;
        conf_changes += report.conf_changes;
        pd_orders += report.pd_orders;
        if verbose {
            println!(
                "seed {seed}: nodes {} ops {} elections {} snapshots {} conf changes {} PD orders {} \
                 trace {:016x}",
                report.nodes,
                report.ops_checked,
                report.elections,
                report.snapshots,
                report.conf_changes,
                report.pd_orders,
                report.trace_hash
            );
        }
        if let Some(violation) = report.violation {
            violations += 1;
            eprintln!("VIOLATION seed {seed}: {violation}");
            let planted = bug_name
                .as_deref()
                .map(|b| format!(" --plant-bug {b}"))
                .unwrap_or_default();
            eprintln!("reproduce: ringkv-sim --seeds 1 --start {seed}{planted}");
        }
    }
    eprintln!(
        "ran {seeds} seeds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "seeds: {seeds}, violations: {violations}, ops checked: {ops}, elections: {elections}, \
         snapshots: {snapshots}, conf changes: {conf_changes}, PD orders: {pd_orders}"
    );
    if violations > 0 {
        std::process::exit(1);
    }
    Ok(())
}
