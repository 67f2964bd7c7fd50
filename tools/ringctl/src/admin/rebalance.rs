//! `ringctl rebalance`: turn the balance schedulers on and follow them until replica and leader
//! counts are even (or the schedulers have nothing left to move).

use super::poll::{end_code, poll};
use super::{Wait, call, print_json, state};
use crate::view::{self, Balance};
use anyhow::{Context, Result};
use ringkv_client::Client;
use ringkv_types::pd::{Command, Operator, PdState, SchedulerKind};
use std::process::ExitCode;
use tokio::time::Instant;

/// Polls without a change in the "nothing left to schedule" state before `rebalance` says the
/// cluster settled short of perfect balance.
const SETTLED_POLLS: u32 = 3;

/// `ringctl rebalance [--dry-run]`.
pub async fn rebalance(client: &Client, dry_run: bool, wait: Wait) -> Result<ExitCode> {
    let current = state(client).await?;
    let balance = Balance::of(&current);
    // What PD would plan with both balance schedulers on: what `rebalance` turns on.
    let plan = client
        .pd_plan(true)
        .await
        .context("asking the placement driver for its plan")?;
    if dry_run {
        if wait.json {
            print_json(&serde_json::json!({
                "balance": balance.json(),
                "plan": view::operators_json(&plan),
            }))?;
        } else {
            println!("now:  {}", balance.line());
            if plan.is_empty() {
                println!("plan: nothing to do");
            } else {
                println!(
                    "plan: {} operator(s) the next scheduling pass would create",
                    plan.len()
                );
                print!("{}", view::operators_table(&plan));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for kind in [
        SchedulerKind::BalanceReplicas,
        SchedulerKind::BalanceLeaders,
    ] {
        if !current.settings.enabled(kind) {
            call(
                client,
                Command::SetScheduler {
                    scheduler: kind,
                    enabled: true,
                },
            )
            .await?;
            if wait.json {
                println!(
                    "{}",
                    serde_json::json!({ "enabled_scheduler": view::scheduler_name(kind) })
                );
            } else {
                println!("enabled scheduler {}", view::scheduler_name(kind));
            }
        }
    }
    if !wait.json {
        println!("now:  {}", balance.line());
        println!("plan: {} operator(s) to start with", plan.len());
        if !plan.is_empty() {
            print!("{}", view::operators_table(&plan));
        }
    }
    let mut settled_polls = 0u32;
    let started = Instant::now();
    let check = |state: &PdState, plan: Option<&[Operator]>| {
        let balance = Balance::of(state);
        let elapsed = started.elapsed().as_secs();
        if balance.is_balanced() {
            return Some(done_line(wait.json, "balanced", elapsed, &balance));
        }
        let idle = state.operators.is_empty() && plan.is_some_and(<[Operator]>::is_empty);
        settled_polls = if idle { settled_polls + 1 } else { 0 };
        (settled_polls >= SETTLED_POLLS).then(|| done_line(wait.json, "settled", elapsed, &balance))
    };
    let progress = |state: &PdState, elapsed: u64| {
        let balance = Balance::of(state);
        if wait.json {
            let mut value = balance.json();
            value["elapsed_secs"] = elapsed.into();
            value.to_string()
        } else {
            format!("[{elapsed:>4}s] {}", balance.line())
        }
    };
    let end = poll(client, wait, true, check, progress).await?;
    Ok(end_code(end, "rebalancing", wait))
}

/// The last line of a rebalance: `result` is `balanced` or `settled`.
fn done_line(json: bool, result: &str, elapsed: u64, balance: &Balance) -> String {
    if json {
        let mut value = balance.json();
        value["result"] = result.into();
        value["elapsed_secs"] = elapsed.into();
        return value.to_string();
    }
    match result {
        "balanced" => format!("balanced after {elapsed} s: {}", balance.line()),
        _ => format!(
            "settled after {elapsed} s: the schedulers have nothing left to move (replica spread \
             {}, leader spread {}): {}",
            balance.replica_spread(),
            balance.leader_spread(),
            balance.line()
        ),
    }
}
