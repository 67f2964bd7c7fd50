//! `ringkvd --config FILE`: runs one ringkv node until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;
use ringkv_node::{LogFormat, NodeConfig};
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
    // The config names the log format, so it is read before logging starts; its errors go to
    // stderr as plain text.
    let config = match NodeConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringkvd: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringkvd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
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

fn run(config: NodeConfig) -> anyhow::Result<()> {
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
