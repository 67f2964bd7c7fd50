//! Taking a node out: `drain-node` (its replicas move away) and `remove-node` (for good, once
//! it holds none).

use super::poll::{end_code, poll};
use super::{Wait, call, state};
use crate::view;
use anyhow::{Result, bail};
use ringkv_client::Client;
use ringkv_types::NodeId;
use ringkv_types::pd::{Command, NodeState, Operator, PdState};
use std::process::ExitCode;

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
            "[{elapsed:>4}s] node {}: {} replica(s) left, {} operator(s) in flight{}",
            node.get(),
            left(state),
            state.operators.len(),
            view::few_operators_text(state)
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
