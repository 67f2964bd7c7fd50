//! Admin commands against the placement driver, through the client library: `nodes`, `shards`,
//! `rebalance`, `move-shard`, `transfer-leader`, `split-shard`, `drain-node`, `remove-node`,
//! `scheduler`.
//!
//! Reads come from [`Client::pd_state`] (and the schedulers' plan from [`Client::pd_plan`]: PD
//! plans, `ringctl` does not run the schedulers itself); changes are PD [`Command`]s sent with
//! [`Client::pd_call`] (the PD leader stamps their `now_ms`, so they go out as 0). Long commands
//! poll the state once per `--interval`, print a progress line whenever it changes, and stop
//! when done, on Ctrl-C (exit 130) or at `--timeout` (exit 4).
//!
//! One file per command family: `node.rs` (drain, remove), `operator.rs` (move, transfer,
//! split), `rebalance.rs`, `scheduler.rs`; `poll.rs` follows PD while a command waits and
//! `parse.rs` reads the ids the commands take. This file holds what they share: the PD calls,
//! the one-line explanation of a refusal, and the `nodes` and `shards` listings.

mod node;
mod operator;
mod parse;
mod poll;
mod rebalance;
mod scheduler;

pub use node::{drain_node, remove_node};
pub use operator::operator;
pub use parse::{parse_node, parse_position, parse_shard, parse_shard_or_pd};
pub use rebalance::rebalance;
pub use scheduler::{scheduler_list, scheduler_set, scheduler_switch};

use crate::view;
use anyhow::{Context, Result, anyhow};
use ringkv_client::Client;
use ringkv_types::WireError;
use ringkv_types::pd::{self, Command, PdState, RejectReason};
use std::process::ExitCode;
use std::time::Duration;

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

/// Sends one PD command; a refusal comes back as one clear line ([`explain`]).
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

/// Prints `value` as pretty JSON.
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

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::{NodeId, ShardId};

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
