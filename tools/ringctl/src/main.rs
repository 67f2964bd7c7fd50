//! `ringctl`: start and grow a local cluster, read and write keys, show the cluster's status,
//! administer placement (nodes, shards, rebalancing, moves, splits, drains, schedulers), inspect
//! a node's store, create certificates.
//!
//! Global flags follow etcdctl's habits: `--endpoints host:port,...`, `--cacert/--cert/--key`,
//! `--cluster`, `-w table|json|simple`, each with an environment twin (`RINGCTL_ENDPOINTS`, ...);
//! flags win over the environment, which wins over the config file (`--config`).
//!
//! `cli/` parses the command line, `run.rs` carries a command out through the module that does
//! the work (`kv`, `admin`, `status`, `inspect`, `local`, `certs`, `user`, `auth`); this file
//! starts the runtime and turns a failure into its exit code.

mod admin;
mod auth;
mod certs;
mod cli;
mod config;
mod exit;
mod inspect;
mod kv;
mod kv_read;
mod kv_watch;
mod local;
mod run;
mod status;
mod user;
mod view;

use clap::Parser;
use cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    auth::set_access(auth::Access {
        token: cli.globals.token.clone().map(ringkv_types::Secret::new),
        namespace: cli.globals.namespace.clone(),
    });
    match runtime.block_on(run::run(cli)) {
        Ok(code) => code,
        Err(error) => failure(&error),
    }
}

/// `ringctl status | head` closes stdout early, and `println!` (or clap_complete's writer) then
/// panics on the broken pipe. A reader that stopped reading is not an error of ours: end quietly
/// with exit code 0 (as a process killed by SIGPIPE would end silently) instead of printing a
/// panic. ringctl writes to no other pipe (its network traffic is QUIC over UDP).
fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// The one place a failed command ends: the error on stderr, and its exit code.
fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    exit::exit(exit::code_of(error))
}
