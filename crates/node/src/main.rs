//! `ringkvd [--config FILE] [flags]`: runs one ringkv node until SIGTERM or Ctrl-C; SIGHUP
//! reloads its certificate, key and CA bundle.
//!
//! The configuration is layered: flags > `RINGKV_*` environment variables > the TOML file >
//! defaults (see `ringkv_node::config_layers` and docs/deploy.md).

use anyhow::Context as _;
use clap::Parser;
use ringkv_node::LogFormat;
use ringkv_node::config_layers::ConfigInputs;
use std::path::PathBuf;
use std::process::ExitCode;

/// The ringkv server.
#[derive(Debug, Parser)]
#[command(
    name = "ringkvd",
    version,
    about = "ringkv node: a sharded, replicated key-value store server"
)]
struct Args {
    /// The node's TOML configuration (see config/node.example.toml); optional when the
    /// environment and flags give every required field.
    #[arg(long, short, env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration and where each value came from, then exit.
    #[arg(long)]
    print_config: bool,
    /// Set any config field: `--set raft.tick_ms=50` (dotted for tables; repeatable).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// `node_id`.
    #[arg(long)]
    node_id: Option<String>,
    /// `cluster`.
    #[arg(long)]
    cluster: Option<String>,
    /// `listen_addr`: the UDP address to bind (`0.0.0.0:7100` in containers).
    #[arg(long)]
    listen_addr: Option<String>,
    /// `advertise_addr`: the `host:port` peers and clients dial (a DNS name or an IP).
    #[arg(long)]
    advertise_addr: Option<String>,
    /// `data_dir`.
    #[arg(long)]
    data_dir: Option<String>,
    /// `initial_cluster`: comma-separated `<id>@<host:port>`.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `join`: comma-separated `host:port` of running nodes.
    #[arg(long)]
    join: Option<String>,
    /// Stop (SIGTERM) when the process `PID`, our parent, dies, even by SIGKILL; refuse to
    /// start if it is already gone. `ringctl local up` passes its own pid so that no node
    /// outlives it. Linux only (PR_SET_PDEATHSIG).
    #[arg(long, value_name = "PID")]
    exit_with_parent: Option<u32>,
}

impl Args {
    /// The flags as (field, value, flag) in precedence order (later wins).
    fn overrides(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for (field, value) in [
            ("node_id", &self.node_id),
            ("cluster", &self.cluster),
            ("listen_addr", &self.listen_addr),
            ("advertise_addr", &self.advertise_addr),
            ("data_dir", &self.data_dir),
            ("initial_cluster", &self.initial_cluster),
            ("join", &self.join),
        ] {
            if let Some(value) = value {
                out.push((
                    field.to_string(),
                    value.clone(),
                    format!("--{}", field.replace('_', "-")),
                ));
            }
        }
        for item in &self.set {
            let (field, value) = item
                .split_once('=')
                .with_context(|| format!("--set `{item}`: expected FIELD=VALUE"))?;
            out.push((
                field.trim().to_string(),
                value.to_string(),
                format!("--set {}", field.trim()),
            ));
        }
        Ok(out)
    }
}

fn main() -> ExitCode {
    // First, before any thread starts: returns only if it did not re-execute the process.
    let reexec_error = ringkv_node::allocator::reexec_with_tunables().err();
    let args = Args::parse();
    if let Some(parent) = args.exit_with_parent
        && let Err(error) = exit_with_parent(parent)
    {
        eprintln!("ringkvd: {error:#}");
        return ExitCode::FAILURE;
    }
    // The config names the log format, so it is read before logging starts; its errors go to
    // stderr as plain text.
    let config = match load_config(&args) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringkvd: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    if let Some(error) = reexec_error {
        tracing::warn!(%error, "could not restart with ringkvd's malloc settings; running with glibc's defaults");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringkvd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the kernel to send SIGTERM when our parent dies, then checks that the parent is still
/// `parent`: had it died before the request, we were already handed to another process and no
/// signal would ever come.
#[cfg(target_os = "linux")]
fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    use rustix::process::{Signal, getppid, set_parent_process_death_signal};
    set_parent_process_death_signal(Some(Signal::TERM))
        .context("--exit-with-parent: cannot set the parent-death signal")?;
    let current = getppid().map(|pid| pid.as_raw_pid());
    if current.and_then(|pid| u32::try_from(pid).ok()) != Some(parent) {
        anyhow::bail!(
            "--exit-with-parent {parent}: that process is gone (our parent is now {}); \
             not starting",
            current.map_or("none".to_string(), |pid| pid.to_string())
        );
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn exit_with_parent(parent: u32) -> anyhow::Result<()> {
    anyhow::bail!("--exit-with-parent {parent}: only supported on Linux")
}

/// The layered configuration, or `None` after `--print-config` printed it.
fn load_config(args: &Args) -> anyhow::Result<Option<ringkv_node::NodeConfig>> {
    let inputs = ConfigInputs::from_process(args.config.clone(), args.overrides()?);
    let layered = ringkv_node::config_layers::load(&inputs)?;
    if args.print_config {
        print!("{}", layered.render());
        return Ok(None);
    }
    Ok(Some(layered.config))
}

/// Logs to stderr as text or JSON lines, filtered by `RINGKV_LOG`, else `RUST_LOG`, else `info`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGKV_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only on a terminal: `ringctl local up` sends the log to a file.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line with the span fields (the HTTP request id among them).
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn run(config: ringkv_node::NodeConfig) -> anyhow::Result<()> {
    // Both ring and aws-lc-rs must never be enabled; install ring explicitly anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ringkvd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Installed before the start (which may wait for peers): SIGHUP's default action would
        // end the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        let mut node = ringkv_node::start(config).await?;
        let reloads = tokio::spawn(reload_on_sighup(hangup, node.tls_reloader()));
        let _stop_reloads = AbortOnDrop(reloads);
        tokio::select! {
            result = node.join() => {
                result.context("the node stopped")?;
                Ok(())
            }
            signal = shutdown_signal() => {
                signal?;
                tracing::info!("signal received; stopping");
                node.stop().await.context("error while stopping")?;
                Ok(())
            }
        }
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reloads the certificate, key and CA bundle on every SIGHUP (a refused reload is logged and
/// keeps the files in use; see docs/security.md).
async fn reload_on_sighup(mut hangup: tokio::signal::unix::Signal, tls: ringkv_node::TlsReload) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the certificate, key and CA bundle");
        // The outcome is logged and counted by `reload`.
        let _ = tls.reload().await;
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
