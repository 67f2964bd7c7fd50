//! `ringctl kv watch KEY | --prefix P [--after V] [--count N] [--timeout D] [-w json]`: one
//! line per change, until Ctrl-C, `--count` events or `--timeout`.
//!
//! Plain lines: `put KEY VALUE version=V`, `delete KEY version=V` (`expire KEY ...` for a TTL
//! expiry). JSON lines: `{"type", "key", "value", "version", "shard", "index"}`. A watch that
//! ends (history compacted, too slow) prints the reason on stderr and exits 1.

use crate::kv::{Format, bytes_json, bytes_text};
use anyhow::{Result, bail};
use ringkv_client::{Client, WatchEvent, WatchEventType, WatchOptions};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// What `kv watch` follows.
#[derive(Clone, Debug)]
pub struct WatchArgs {
    /// The key (absent with a prefix).
    pub key: Option<String>,
    /// Every key starting with this (may be empty: the whole namespace).
    pub prefix: Option<String>,
    /// A key watch: changes after this log index of the key's shard.
    pub after: Option<u64>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
}

/// Follows the watch and prints its events.
pub async fn watch(client: &Client, args: WatchArgs, format: Format) -> Result<ExitCode> {
    let mut watch = match (&args.key, &args.prefix) {
        (Some(key), None) => client.watch_with(
            key.clone(),
            WatchOptions {
                after: args.after,
                ..WatchOptions::default()
            },
        )?,
        (None, Some(prefix)) => {
            if args.after.is_some() {
                bail!("--after is for a key watch");
            }
            client.watch_prefix(prefix.clone(), WatchOptions::default())?
        }
        _ => bail!("give a KEY or --prefix, not both"),
    };
    let deadline = args
        .timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let mut printed = 0u64;
    while args.count.is_none_or(|count| printed < count) {
        let next = async {
            tokio::select! {
                next = watch.next() => Some(next),
                _ = tokio::signal::ctrl_c() => None,
            }
        };
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => next.await,
        };
        let Some(next) = next else { break };
        match next {
            Some(Ok(event)) => {
                print_event(&event, format)?;
                printed += 1;
            }
            Some(Err(error)) => {
                eprintln!("watch ended: {error}");
                return Ok(ExitCode::FAILURE);
            }
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &WatchEvent, format: Format) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let kind = match event.kind {
        WatchEventType::Put(_) => "put",
        WatchEventType::Delete => "delete",
        WatchEventType::Expire => "expire",
    };
    match format {
        Format::Json => {
            let value = match &event.kind {
                WatchEventType::Put(value) => bytes_json(value),
                _ => serde_json::Value::Null,
            };
            let line = json!({
                "type": kind,
                "key": bytes_json(&event.key),
                "value": value,
                "version": event.version,
                "shard": event.shard.0,
                "index": event.index,
            });
            writeln!(stdout, "{line}")?;
        }
        Format::Plain => match &event.kind {
            WatchEventType::Put(value) => writeln!(
                stdout,
                "put {} {} version={}",
                bytes_text(&event.key),
                bytes_text(value),
                event.version
            )?,
            _ => writeln!(
                stdout,
                "{kind} {} version={}",
                bytes_text(&event.key),
                event.version
            )?,
        },
    }
    stdout.flush()?;
    Ok(())
}
