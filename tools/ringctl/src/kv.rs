//! `ringctl kv get|put|delete|cas`.

use anyhow::{Result, bail};
use bytes::Bytes;
use ringkv_client::{Client, ReadConsistency};
use std::io::Write;
use std::process::ExitCode;

/// Prints the value of `key` followed by a newline; exit 1 with a message when absent.
pub async fn get(client: &Client, key: String, consistency: ReadConsistency) -> Result<ExitCode> {
    match client.get_with(key.clone(), consistency).await? {
        Some(value) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&value)?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("key not found: {key}");
            Ok(ExitCode::from(crate::exit::NOT_FOUND))
        }
    }
}

/// Sets `key` to `value`.
pub async fn put(client: &Client, key: String, value: String) -> Result<ExitCode> {
    client.put(key, value).await?;
    Ok(ExitCode::SUCCESS)
}

/// Removes `key`.
pub async fn delete(client: &Client, key: String) -> Result<ExitCode> {
    client.delete(key).await?;
    Ok(ExitCode::SUCCESS)
}

/// Compare-and-swap: exit 0 when swapped; exit 1 with the current value on stderr otherwise.
pub async fn cas(
    client: &Client,
    key: String,
    expected: Option<String>,
    new: Option<String>,
) -> Result<ExitCode> {
    let outcome = client
        .compare_and_swap(key.clone(), expected.map(Bytes::from), new.map(Bytes::from))
        .await?;
    if outcome.succeeded {
        println!("swapped");
        return Ok(ExitCode::SUCCESS);
    }
    match outcome.previous {
        Some(value) => eprintln!(
            "not swapped: {key} is {:?}",
            String::from_utf8_lossy(&value)
        ),
        None => eprintln!("not swapped: {key} is absent"),
    }
    Ok(ExitCode::from(crate::exit::NOT_FOUND))
}

/// Parses a consistency name.
pub fn parse_consistency(text: &str) -> Result<ReadConsistency> {
    Ok(match text {
        "linearizable" | "linear" => ReadConsistency::Linearizable,
        "lease" => ReadConsistency::Lease,
        "stale" => ReadConsistency::Stale,
        other => bail!("unknown consistency {other:?} (linearizable, lease, stale)"),
    })
}
