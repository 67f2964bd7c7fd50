//! Admin commands against the placement driver, through the client library: `nodes`, `shards`,
//! `rebalance`, `move-shard`, `transfer-leader`, `split-shard`, `drain-node`, `remove-node`,
//! `scheduler`.
//!
//! Reads come from [`Client::pd_state`] (and the schedulers' plan from [`Client::pd_plan`]: PD
//! plans, `ringctl` does not run the schedulers itself); changes are PD [`Command`]s sent with
//! [`Client::pd_call`] (the PD leader stamps their `now_ms`, so they go out as 0). Long commands
//! poll the state once per `--interval`, print a progress line whenever it changes, and stop
//! when done, on Ctrl-C (exit 130) or at `--timeout` (exit 4).

use crate::view::{self, Balance};
use anyhow::{Context, Result, anyhow, bail};
use ringkv_client::Client;
use ringkv_types::pd::{
    self, AdminOperator, Command, NodeState, Operator, PdState, RejectReason, SchedulerKind,
};
use ringkv_types::{NodeId, ShardId, WireError};
use std::process::ExitCode;
use std::time::Duration;
use tokio::time::Instant;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;
/// Polls without a change in the "nothing left to schedule" state before `rebalance` says the
/// cluster settled short of perfect balance.
const SETTLED_POLLS: u32 = 3;

/// How a long command waits.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// Give up after this long.
    pub timeout: Duration,
    /// Time between polls.
    pub interval: Duration,
    /// Print JSON lines instead of text.
    pub json: bool,
}

/// Parses a shard id: `3` or `s3`. Shard 0 is the placement driver and is refused.
pub fn parse_shard(text: &str) -> std::result::Result<ShardId, String> {
    let digits = text.trim().trim_start_matches(['s', 'S']);
    let id: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a shard id (e.g. 3 or s3)"))?;
    if id == 0 {
        return Err("shard 0 is the placement driver's own group, not a data shard".into());
    }
    Ok(ShardId(id))
}

/// Parses a shard id for the inspector: `3`, `s3`, or `0` / `pd` for the placement driver's
/// group.
pub fn parse_shard_or_pd(text: &str) -> std::result::Result<ShardId, String> {
    if text.trim().eq_ignore_ascii_case("pd") {
        return Ok(ShardId::PD);
    }
    let digits = text.trim().trim_start_matches(['s', 'S']);
    digits
        .parse()
        .map(ShardId)
        .map_err(|_| format!("{text:?} is not a shard id (e.g. 3, s3, or pd)"))
}

/// Parses a node id: `4` or `n4`.
pub fn parse_node(text: &str) -> std::result::Result<NodeId, String> {
    let digits = text.trim().trim_start_matches(['n', 'N']);
    let id: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a node id (e.g. 4 or n4)"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    Ok(NodeId(id))
}

/// Parses a ring position: decimal, or hex with `0x`.
pub fn parse_position(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a ring position (0 to 2^64-1, decimal or 0x hex)"))
}

/// A PD refusal as one clear line; other errors unchanged, except a node that cannot decode
/// PD requests at all (a `ringkvd` older than this ringctl).
pub fn explain(error: ringkv_client::Error) -> anyhow::Error {
    if let ringkv_client::Error::Server(WireError::InvalidRequest { reason }) = &error
        && reason.contains("decode")
    {
        return anyhow!(
            "the node cannot decode placement-driver requests ({reason}); is ringkvd older \
             than ringctl?"
        );
    }
    let ringkv_client::Error::Pd(pd) = &error else {
        return anyhow!(error);
    };
    match pd {
        pd::Error::OperatorRejected { shard, reason } => {
            let why = match reason {
                RejectReason::SourceHasNoReplica => "the source node holds no replica of it",
                RejectReason::TargetHasReplica => "the target node already holds a replica of it",
                RejectReason::TargetNotUp => "the target node is not Up",
                RejectReason::TargetNotVoter => "the target node holds no voter of it",
                RejectReason::SplitOutsideArc => "the split position is not inside its arc",
                RejectReason::NoChange => "that would change nothing",
                RejectReason::TooManyOperators => {
                    "too many operators are in flight; try again later"
                }
                RejectReason::SourceIsLearner => "the replica to move is a learner",
                _ => "the placement driver refused it",
            };
            anyhow!("cannot change shard {}: {why}", shard.get())
        }
        pd::Error::ShardBusy { shard, operator } => anyhow!(
            "shard {} is busy with operator {operator}; wait for it (`ringctl shards`) or try again",
            shard.get()
        ),
        _ => anyhow!(error),
    }
}

async fn call(client: &Client, command: Command) -> Result<pd::Response> {
    client.pd_call(command).await.map_err(explain)
}

/// PD's state, or an error that says what went wrong in one line.
pub async fn state(client: &Client) -> Result<PdState> {
    client
        .pd_state()
        .await
        .map_err(explain)
        .context("reading the placement driver's state")
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `ringctl nodes [--json]`.
pub async fn nodes(client: &Client, json: bool) -> Result<ExitCode> {
    let state = state(client).await?;
    let pd_leader = client.cached_pd_leader();
    if json {
        print_json(&view::nodes_json(&state, pd_leader))?;
    } else {
        if let Some(leader) = pd_leader.filter(|_| !view::is_simple()) {
            println!("placement driver leader: node {}", leader.get());
        }
        print!("{}", view::nodes_table(&state));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ringctl shards [--json]`.
pub async fn shards(client: &Client, json: bool) -> Result<ExitCode> {
    let state = state(client).await?;
    if json {
        print_json(&view::shards_json(&state))?;
    } else if !view::is_simple() {
        println!(
            "shard map version {}, {} shards, {} operator(s) in flight",
            state.shard_map.version,
            state.shard_map.shards.len(),
            state.operators.len()
        );
        print!("{}", view::shards_table(&state));
    } else {
        print!("{}", view::shards_table(&state));
    }
    Ok(ExitCode::SUCCESS)
}

/// What ended a wait.
enum WaitEnd {
    Done,
    TimedOut,
    Interrupted,
}

/// Polls the PD state until `check` says done (returns `Some(final message)`), printing
/// `progress` lines when they change. Transient read failures are printed and retried.
/// Polls the PD state until `check` says done. With `plan`, each poll that finds no operator in
/// flight also asks PD what its schedulers would start (else `check` gets `None`).
async fn poll<C, P>(
    client: &Client,
    wait: Wait,
    plan: bool,
    mut check: C,
    progress: P,
) -> Result<WaitEnd>
where
    C: FnMut(&PdState, Option<&[Operator]>) -> Option<String>,
    P: Fn(&PdState, u64) -> String,
{
    let started = Instant::now();
    let deadline = started + wait.timeout;
    let signal = tokio::signal::ctrl_c();
    tokio::pin!(signal);
    let mut last_line = String::new();
    loop {
        let elapsed = started.elapsed().as_secs();
        match client.pd_state().await {
            Ok(state) => {
                let planned = if plan && state.operators.is_empty() {
                    // A failed plan call counts as "not idle": the next poll asks again.
                    client.pd_plan(false).await.ok()
                } else {
                    None
                };
                if let Some(message) = check(&state, planned.as_deref()) {
                    if !message.is_empty() {
                        println!("{message}");
                    }
                    return Ok(WaitEnd::Done);
                }
                let line = progress(&state, elapsed);
                // Print on change (ignoring the elapsed-time prefix).
                let key = line.split_once(']').map_or(line.as_str(), |(_, rest)| rest);
                if key != last_line {
                    println!("{line}");
                    last_line = key.to_string();
                }
            }
            Err(error) => println!("[{elapsed:>4}s] placement driver unavailable: {error}"),
        }
        let wake = (Instant::now() + wait.interval).min(deadline);
        tokio::select! {
            _ = &mut signal => return Ok(WaitEnd::Interrupted),
            () = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= deadline {
            return Ok(WaitEnd::TimedOut);
        }
    }
}

fn end_code(end: WaitEnd, what: &str, wait: Wait) -> ExitCode {
    match end {
        WaitEnd::Done => ExitCode::SUCCESS,
        WaitEnd::TimedOut => {
            eprintln!(
                "error: {what} not finished after {} s (--timeout); the placement driver keeps \
                 working on it",
                wait.timeout.as_secs()
            );
            ExitCode::from(crate::exit::UNAVAILABLE)
        }
        WaitEnd::Interrupted => {
            eprintln!(
                "interrupted; the placement driver keeps working on {what} in the background"
            );
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}

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

/// An admin operator: created, then (with `--wait`) followed until it leaves PD.
pub async fn operator(
    client: &Client,
    operator: AdminOperator,
    wait: Option<Wait>,
) -> Result<ExitCode> {
    let shard = match operator {
        AdminOperator::MoveReplica { shard, .. }
        | AdminOperator::TransferLeader { shard, .. }
        | AdminOperator::SplitShard { shard, .. } => shard,
    };
    let before = state(client).await?;
    let Some(arc_before) = before.descriptor(shard).map(|d| d.arc) else {
        bail!("unknown shard {}; see `ringctl shards`", shard.get());
    };
    let id = match call(
        client,
        Command::AddOperator {
            operator,
            now_ms: 0,
        },
    )
    .await?
    {
        pd::Response::Operator(id) => id,
        other => bail!("unexpected answer from the placement driver: {other:?}"),
    };
    let description = match operator {
        AdminOperator::MoveReplica { from, to, .. } => {
            format!("move shard {} from {from} to {to}", shard.get())
        }
        AdminOperator::TransferLeader { to, .. } => {
            format!("transfer the leadership of shard {} to {to}", shard.get())
        }
        AdminOperator::SplitShard { at, .. } => match at {
            Some(at) => format!("split shard {} at {at:016x}", shard.get()),
            None => format!("split shard {} (leader's hint or midpoint)", shard.get()),
        },
    };
    println!("created operator {id}: {description}");
    let Some(wait) = wait else {
        println!("follow it with `ringctl shards`");
        return Ok(ExitCode::SUCCESS);
    };
    let mut gone = None;
    let check = |state: &PdState, _: Option<&[Operator]>| {
        if state.operators.get(&shard).is_some_and(|o| o.id == id) {
            return None;
        }
        gone = Some(state.clone());
        Some(String::new())
    };
    let progress = |state: &PdState, elapsed: u64| {
        let step = state
            .operators
            .get(&shard)
            .map_or_else(String::new, view::operator_text);
        format!("[{elapsed:>4}s] {step}")
    };
    let end = poll(client, wait, false, check, progress).await?;
    let Some(after) = gone else {
        return Ok(end_code(end, &format!("operator {id}"), wait));
    };
    let descriptor = after.descriptor(shard);
    let done = match operator {
        AdminOperator::MoveReplica { from, to, .. } => {
            descriptor.is_some_and(|d| d.replica_on(to).is_some() && d.replica_on(from).is_none())
        }
        AdminOperator::TransferLeader { to, .. } => after.leader(shard) == Some(to),
        AdminOperator::SplitShard { .. } => descriptor.is_some_and(|d| d.arc != arc_before),
    };
    if done {
        println!("operator {id} finished: {description}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: operator {id} ended without its effect (cancelled or rolled back); see \
             `ringctl shards`"
        );
        Ok(ExitCode::from(crate::exit::OTHER))
    }
}

/// `ringctl drain-node N [--no-wait]`.
pub async fn drain_node(client: &Client, node: NodeId, wait: Option<Wait>) -> Result<ExitCode> {
    let current = state(client).await?;
    let Some(info) = current.nodes.get(&node) else {
        bail!("unknown node {}; see `ringctl nodes`", node.get());
    };
    match info.state {
        NodeState::Removed => bail!("node {} was removed; there is nothing to drain", node.get()),
        NodeState::Draining => println!("node {} is already draining", node.get()),
        NodeState::Up | NodeState::Down => {
            call(
                client,
                Command::SetNodeState {
                    node,
                    state: NodeState::Draining,
                    now_ms: 0,
                },
            )
            .await?;
            println!("node {} is draining", node.get());
        }
    }
    if !current.settings.drain {
        println!(
            "warning: the drain scheduler is disabled, so nothing moves; enable it with \
             `ringctl scheduler enable drain`"
        );
    }
    let Some(wait) = wait else {
        return Ok(ExitCode::SUCCESS);
    };
    let left = |state: &PdState| state.replica_counts().get(&node).copied().unwrap_or(0);
    let check = |state: &PdState, _: Option<&[Operator]>| {
        (left(state) == 0).then(|| {
            format!(
                "node {} holds no replicas; remove it with `ringctl remove-node {}`",
                node.get(),
                node.get()
            )
        })
    };
    let progress = |state: &PdState, elapsed: u64| {
        format!(
            "[{elapsed:>4}s] node {}: {} replica(s) left, {} operator(s) in flight",
            node.get(),
            left(state),
            state.operators.len()
        )
    };
    let end = poll(client, wait, false, check, progress).await?;
    Ok(end_code(
        end,
        &format!("draining node {}", node.get()),
        wait,
    ))
}

/// `ringctl remove-node N`: refused while the node holds replicas.
pub async fn remove_node(client: &Client, node: NodeId) -> Result<ExitCode> {
    let current = state(client).await?;
    let Some(info) = current.nodes.get(&node) else {
        bail!("unknown node {}; see `ringctl nodes`", node.get());
    };
    if info.state == NodeState::Removed {
        println!("node {} is already removed", node.get());
        return Ok(ExitCode::SUCCESS);
    }
    let replicas = current.replica_counts().get(&node).copied().unwrap_or(0);
    if replicas > 0 {
        bail!(
            "node {} still holds {replicas} replica(s); drain it first with `ringctl drain-node {}`",
            node.get(),
            node.get()
        );
    }
    call(
        client,
        Command::SetNodeState {
            node,
            state: NodeState::Removed,
            now_ms: 0,
        },
    )
    .await?;
    println!(
        "node {} removed; its id is never reused. Stop its ringkvd process.",
        node.get()
    );
    Ok(ExitCode::SUCCESS)
}

/// `ringctl scheduler list [--json]`.
pub async fn scheduler_list(client: &Client, json: bool) -> Result<ExitCode> {
    let state = state(client).await?;
    if json {
        print_json(&view::schedulers_json(&state.settings))?;
    } else {
        print!("{}", view::schedulers_table(&state.settings));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ringctl scheduler enable|disable NAME`.
pub async fn scheduler_switch(client: &Client, name: &str, enabled: bool) -> Result<ExitCode> {
    let Some(scheduler) = view::parse_scheduler(name) else {
        let names: Vec<&str> = SchedulerKind::ALL
            .into_iter()
            .map(view::scheduler_name)
            .collect();
        bail!(
            "unknown scheduler {name:?}; schedulers are: {}",
            names.join(", ")
        );
    };
    call(client, Command::SetScheduler { scheduler, enabled }).await?;
    println!(
        "scheduler {} {}",
        view::scheduler_name(scheduler),
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `ringctl scheduler set KEY VALUE`: one setting, the others unchanged (PD validates).
pub async fn scheduler_set(client: &Client, key: &str, value: &str) -> Result<ExitCode> {
    let current = state(client).await?;
    let settings = view::set_setting(&current.settings, key, value).map_err(|e| anyhow!(e))?;
    call(client, Command::SetSettings(settings)).await?;
    println!("set {key} = {value}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_positions_parse() {
        assert_eq!(parse_shard("3"), Ok(ShardId(3)));
        assert_eq!(parse_shard("s12"), Ok(ShardId(12)));
        assert!(parse_shard("0").is_err());
        assert!(parse_shard("x").is_err());
        assert_eq!(parse_node("n4"), Ok(NodeId(4)));
        assert!(parse_node("0").is_err());
        assert!(parse_node("-1").is_err());
        assert_eq!(parse_position("0x8000_0000_0000_0000"), Ok(1 << 63));
        assert_eq!(parse_position("42"), Ok(42));
        assert!(parse_position("0x1_0000_0000_0000_0000").is_err());
        assert!(parse_position("").is_err());
    }

    #[test]
    fn refusals_read_as_one_line() {
        let error = explain(ringkv_client::Error::Pd(pd::Error::OperatorRejected {
            shard: ShardId(3),
            reason: RejectReason::TargetHasReplica,
        }));
        assert_eq!(
            error.to_string(),
            "cannot change shard 3: the target node already holds a replica of it"
        );
        let error = explain(ringkv_client::Error::Pd(pd::Error::UnknownNode {
            node: NodeId(9),
        }));
        assert_eq!(error.to_string(), "placement driver: unknown node n9");
        assert!(!error.to_string().contains('\n'));
        let error = explain(ringkv_client::Error::Server(WireError::InvalidRequest {
            reason: "cannot decode Request".into(),
        }));
        assert!(error.to_string().contains("is ringkvd older than ringctl"));
    }
}
