//! Admin operators (`move-shard`, `transfer-leader`, `split-shard`): created at the placement
//! driver, then (with `--wait`) followed until their effect shows.

use super::poll::{end_code, poll};
use super::{Wait, call, state};
use crate::view;
use anyhow::{Result, bail};
use ringkv_client::Client;
use ringkv_types::pd::{self, AdminOperator, Command, Operator, PdState};
use std::process::ExitCode;

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
