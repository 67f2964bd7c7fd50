//! The arguments of the admin commands that wait for the placement driver (`--wait`,
//! `--timeout`, `--interval`), and the `scheduler` subcommands.

use crate::admin;
use clap::{Args, Subcommand};
use std::time::Duration;

/// How long commands wait.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Give up waiting after this many seconds (exit 4; PD keeps working).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// Seconds between progress polls.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub interval: u64,
}

impl WaitArgs {
    pub fn wait(&self, json: bool) -> admin::Wait {
        admin::Wait {
            timeout: Duration::from_secs(self.timeout),
            interval: Duration::from_secs(self.interval.max(1)),
            json,
        }
    }
}

/// Whether an operator command follows its operator to the end.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Wait until the operator finishes, printing its steps.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub limits: WaitArgs,
}

impl FollowArgs {
    pub fn wait(&self) -> Option<admin::Wait> {
        self.wait.then(|| self.limits.wait(false))
    }
}

#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Every scheduler's switch and the settings.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Turns a scheduler on: repair, drain, split, balance-replicas, balance-leaders.
    Enable {
        /// The scheduler.
        name: String,
    },
    /// Turns a scheduler off.
    Disable {
        /// The scheduler.
        name: String,
    },
    /// Sets one setting (as listed by `scheduler list`), e.g. `max_operators 8`.
    Set {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
}
