//! Following the placement driver until a long command is done: one state read per
//! `--interval`, a progress line whenever it changes, an end on done, Ctrl-C (exit 130) or
//! `--timeout` (exit 4).

use super::Wait;
use anyhow::Result;
use ringkv_client::Client;
use ringkv_types::pd::{Operator, PdState};
use std::process::ExitCode;
use tokio::time::Instant;

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

/// What ended a wait.
pub(super) enum WaitEnd {
    Done,
    TimedOut,
    Interrupted,
}

/// Polls the PD state until `check` says done (returns `Some(final message)`), printing
/// `progress` lines when they change. Transient read failures are printed and retried. With
/// `plan`, each poll that finds no operator in flight also asks PD what its schedulers would
/// start (else `check` gets `None`).
pub(super) async fn poll<C, P>(
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

/// The exit code of a wait that ended with `end`, with a line on stderr unless it is done.
pub(super) fn end_code(end: WaitEnd, what: &str, wait: Wait) -> ExitCode {
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
