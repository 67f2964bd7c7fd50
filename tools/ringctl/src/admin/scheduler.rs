//! `ringctl scheduler list|enable|disable|set`: the placement schedulers' switches and settings.

use super::{call, print_json, state};
use crate::view;
use anyhow::{Result, anyhow, bail};
use ringkv_client::Client;
use ringkv_types::pd::{Command, SchedulerKind};
use std::process::ExitCode;

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
