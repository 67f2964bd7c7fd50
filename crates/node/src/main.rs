//! `ringkvd --config FILE`: runs one ringkv node until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;
use ringkv_node::NodeConfig;
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
    /// The node's TOML configuration (see config/node.example.toml).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: `ringctl local up` sends the log to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringkvd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    // Both ring and aws-lc-rs must never be enabled; install ring explicitly anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ringkvd")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut node = ringkv_node::start(config).await?;
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

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
