//! `ringctl kv get K1 K2 ...` (a batch get across shards), `ringctl kv scan` and
//! `ringctl kv cas --expected-version`.
//!
//! Scan output: `KEY<TAB>VALUE` lines (`KEY` alone with `--keys-only`), or with `-w json` one
//! JSON object per key and line (`{"key", "version", "value"}`). When `--limit` stops the scan
//! before its end, the cursor to resume from (`--cursor`) is printed: on stderr as
//! `more: --cursor HEX`, or as a last JSON line `{"cursor": "HEX"}`.

use crate::kv::{Format, bytes_json, bytes_text, hex, print_json};
use anyhow::{Result, bail};
use bytes::Bytes;
use ringkv_client::{Client, ReadConsistency, ScanOptions};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

/// Prints the values of `keys` (read in parallel, one request per shard): `KEY<TAB>VALUE`
/// lines, or one JSON object with every key; exits 1 when any key is absent.
pub async fn get_many(
    client: &Client,
    keys: Vec<String>,
    consistency: ReadConsistency,
    format: Format,
) -> Result<ExitCode> {
    let wire: Vec<Bytes> = keys.iter().map(|key| Bytes::from(key.clone())).collect();
    let found = client.get_many(wire, consistency).await?;
    let missing = found.iter().filter(|found| found.is_none()).count();
    if format == Format::Json {
        let values: Vec<_> = keys
            .iter()
            .zip(&found)
            .map(|(key, found)| {
                json!({
                    "key": key,
                    "found": found.is_some(),
                    "value": found.as_ref().map(|found| bytes_json(&found.value)),
                    "version": found.as_ref().map(|found| found.version),
                })
            })
            .collect();
        print_json(&json!({ "values": values }))?;
    } else {
        let mut stdout = std::io::stdout().lock();
        for (key, found) in keys.iter().zip(&found) {
            match found {
                Some(found) => writeln!(stdout, "{key}\t{}", bytes_text(&found.value))?,
                None => eprintln!("key not found: {key}"),
            }
        }
        stdout.flush()?;
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NOT_FOUND)
    })
}

/// What `kv scan` reads.
#[derive(Clone, Debug)]
pub struct ScanArgs {
    /// Only keys starting with this.
    pub prefix: String,
    /// Most keys to print (all when `None`).
    pub limit: Option<u64>,
    /// Leave values out.
    pub keys_only: bool,
    /// Freshness of each page.
    pub consistency: ReadConsistency,
    /// Resume from this cursor (hex, as printed by an earlier scan).
    pub cursor: Option<String>,
}

/// Lists the keys of the namespace (ring order, not key order).
pub async fn scan(client: &Client, args: ScanArgs, format: Format) -> Result<ExitCode> {
    let cursor = args.cursor.as_deref().map(parse_hex).transpose()?;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut scan = client.scan(
        args.prefix,
        ScanOptions {
            page_size: u32::try_from(limit.min(1000)).unwrap_or(1000).max(1),
            keys_only: args.keys_only,
            consistency: args.consistency,
            cursor: cursor.map(Bytes::from),
        },
    )?;
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    while printed < limit {
        let Some(entry) = scan.next().await? else {
            break;
        };
        printed += 1;
        match format {
            Format::Json => {
                let mut line = json!({ "key": bytes_json(&entry.key), "version": entry.version });
                if let Some(value) = &entry.value {
                    line["value"] = bytes_json(value);
                }
                writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
            }
            Format::Plain => match &entry.value {
                Some(value) => {
                    writeln!(stdout, "{}\t{}", bytes_text(&entry.key), bytes_text(value))?;
                }
                None => writeln!(stdout, "{}", bytes_text(&entry.key))?,
            },
        }
    }
    if let Some(cursor) = scan.cursor().filter(|_| printed >= limit) {
        match format {
            Format::Json => writeln!(stdout, "{}", json!({ "cursor": hex(&cursor) }))?,
            Format::Plain => eprintln!("more: --cursor {}", hex(&cursor)),
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Compare-and-swap on the version: exit 0 when swapped, 1 (with the current version) when
/// not.
pub async fn cas_version(
    client: &Client,
    key: String,
    expected_version: u64,
    new: Option<String>,
    format: Format,
) -> Result<ExitCode> {
    let outcome = client
        .compare_version_and_swap(key.clone(), expected_version, new.map(Bytes::from))
        .await?;
    if format == Format::Json {
        print_json(&json!({
            "key": key,
            "swapped": outcome.succeeded,
            "previous": outcome.previous.as_deref().map(bytes_json),
            "previous_version": outcome.previous_version,
            "version": outcome.succeeded.then_some(outcome.index),
        }))?;
    } else if outcome.succeeded {
        println!("swapped (version {})", outcome.index);
    } else if outcome.previous.is_some() {
        eprintln!(
            "not swapped: {key} is at version {}",
            outcome.previous_version
        );
    } else {
        eprintln!("not swapped: {key} is absent");
    }
    Ok(if outcome.succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NOT_FOUND)
    })
}

/// Decodes lowercase or uppercase hex.
fn parse_hex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("the cursor {text:?} is not hex");
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| anyhow::anyhow!("the cursor {text:?} is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_hex() {
        let cursor = [0u8, 0x7f, 0xff, b'k'];
        assert_eq!(parse_hex(&hex(&cursor)).unwrap(), cursor);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
