//! `ringctl kv get|has|put|delete|cas|ttl|persist` (many-key `get`, `scan` and `cas --expected-version`
//! are in `kv_read.rs`).
//!
//! Output: values are printed raw (`simple`, the default for `get`), or as JSON objects with
//! `-w json`. Keys and values in JSON are strings when they are printable UTF-8, else
//! `{"hex": "..."}`.

use crate::cli::OutputFormat;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use ringkv_client::{Client, KeyTtl, ReadConsistency};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Largest value read from stdin by `kv put KEY` (the server's default value limit is lower).
const STDIN_BYTES_MAX: u64 = 64 << 20;

/// Read consistency names, as clap lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// ReadIndex through the leader: sees every write acknowledged before the read.
    #[value(alias = "linear")]
    Linearizable,
    /// The leader's lease, without a quorum round.
    Lease,
    /// Any replica's applied state; may be behind.
    Stale,
}

impl From<Consistency> for ReadConsistency {
    fn from(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Lease => ReadConsistency::Lease,
            Consistency::Stale => ReadConsistency::Stale,
        }
    }
}

/// How `kv` commands print: raw values, or JSON (`-w json`). `table` prints as `simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Raw values, one line each; confirmations on stdout as words.
    Plain,
    /// One JSON object.
    Json,
}

impl Format {
    /// The format for `-w`.
    pub fn of(write_out: Option<OutputFormat>) -> Self {
        match write_out {
            Some(OutputFormat::Json) => Format::Json,
            _ => Format::Plain,
        }
    }
}

/// `bytes` as a JSON string when printable UTF-8, else `{"hex": "..."}`.
pub fn bytes_json(bytes: &[u8]) -> Value {
    match printable(bytes) {
        Some(text) => json!(text),
        None => json!({ "hex": hex(bytes) }),
    }
}

/// `bytes` as text when printable UTF-8, else `0x` and hex.
pub fn bytes_text(bytes: &[u8]) -> String {
    match printable(bytes) {
        Some(text) => text.to_string(),
        None => format!("0x{}", hex(bytes)),
    }
}

fn printable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|text| !text.chars().any(char::is_control))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

pub(crate) fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Reads the whole of stdin as the value of `kv put KEY`.
///
/// # Errors
/// Stdin unreadable, not valid UTF-8, or larger than 64 MiB.
pub fn read_stdin() -> Result<String> {
    let mut value = Vec::new();
    std::io::stdin()
        .take(STDIN_BYTES_MAX + 1)
        .read_to_end(&mut value)
        .context("reading the value from stdin")?;
    if value.len() as u64 > STDIN_BYTES_MAX {
        bail!("the value on stdin is larger than {STDIN_BYTES_MAX} bytes");
    }
    String::from_utf8(value).context("the value on stdin is not UTF-8")
}

/// Prints the value of `key` followed by a newline; exit 1 with a message when absent.
pub async fn get(
    client: &Client,
    key: String,
    consistency: ReadConsistency,
    format: Format,
) -> Result<ExitCode> {
    let found = client.get_versioned(key.clone(), consistency).await?;
    let version = found.as_ref().map(|found| found.version);
    let value = found.map(|found| found.value);
    if format == Format::Json {
        print_json(&json!({
            "key": key,
            "found": value.is_some(),
            "value": value.as_deref().map(bytes_json),
            "version": version,
        }))?;
        return Ok(if value.is_some() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    match value {
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

/// Exit 0 when `key` exists, 1 when not; prints `true` or `false` (or JSON).
pub async fn has(
    client: &Client,
    key: String,
    consistency: ReadConsistency,
    format: Format,
) -> Result<ExitCode> {
    let exists = client.exists_with(key.clone(), consistency).await?;
    match format {
        Format::Json => print_json(&json!({ "key": key, "exists": exists }))?,
        Format::Plain => println!("{exists}"),
    }
    Ok(if exists {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sets `key` to `value`, expiring after `ttl` when given.
pub async fn put(
    client: &Client,
    key: String,
    value: String,
    ttl: Option<Duration>,
    format: Format,
) -> Result<ExitCode> {
    let version = match ttl {
        Some(ttl) => client.put_with_ttl(key.clone(), value, ttl).await?,
        None => client.put_versioned(key.clone(), value).await?,
    };
    if format == Format::Json {
        let ttl_ms = ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        print_json(&json!({ "key": key, "put": true, "version": version, "ttl_ms": ttl_ms }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what is left of `key`'s TTL in milliseconds (`none` without one); exit 1 when the
/// key does not exist.
pub async fn ttl(
    client: &Client,
    key: String,
    consistency: ReadConsistency,
    format: Format,
) -> Result<ExitCode> {
    let (exists, left) = match client.ttl_with(key.clone(), consistency).await? {
        KeyTtl::Absent => (false, None),
        KeyTtl::Persistent => (true, None),
        KeyTtl::Expires(left) => (
            true,
            Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        ),
    };
    match format {
        Format::Json => print_json(&json!({ "key": key, "exists": exists, "ttl_ms": left }))?,
        Format::Plain if !exists => eprintln!("no such key"),
        Format::Plain => match left {
            Some(ms) => println!("{ms}"),
            None => println!("none"),
        },
    }
    Ok(if exists {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NOT_FOUND)
    })
}

/// Clears `key`'s TTL; prints whether it had one.
pub async fn persist(client: &Client, key: String, format: Format) -> Result<ExitCode> {
    let had_ttl = client.persist(key.clone()).await?;
    match format {
        Format::Json => print_json(&json!({ "key": key, "had_ttl": had_ttl }))?,
        Format::Plain => println!("{had_ttl}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a `--ttl`: a number with an optional unit, `ms`, `s` (the default), `m`, `h` or `d`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_ttl(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || format!("ttl `{text}`: expected a number with ms, s, m, h or d (e.g. 30s)");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = number.checked_mul(ms_per_unit).ok_or_else(bad)?;
    if !(1..=ringkv_types::TTL_MS_MAX).contains(&ms) {
        return Err(format!("ttl `{text}`: a TTL is 1 ms to ten years"));
    }
    Ok(Duration::from_millis(ms))
}

/// Removes `key`.
pub async fn delete(client: &Client, key: String, format: Format) -> Result<ExitCode> {
    client.delete(key.clone()).await?;
    if format == Format::Json {
        print_json(&json!({ "key": key, "deleted": true }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Compare-and-swap: exit 0 when swapped; exit 1 with the current value on stderr otherwise.
pub async fn cas(
    client: &Client,
    key: String,
    expected: Option<String>,
    new: Option<String>,
    format: Format,
) -> Result<ExitCode> {
    let outcome = client
        .compare_and_swap(key.clone(), expected.map(Bytes::from), new.map(Bytes::from))
        .await?;
    if format == Format::Json {
        print_json(&json!({
            "key": key,
            "swapped": outcome.succeeded,
            "previous": outcome.previous.as_deref().map(bytes_json),
        }))?;
    } else if outcome.succeeded {
        println!("swapped");
    } else {
        match &outcome.previous {
            Some(value) => eprintln!("not swapped: {key} is {:?}", String::from_utf8_lossy(value)),
            None => eprintln!("not swapped: {key} is absent"),
        }
    }
    Ok(if outcome.succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::NOT_FOUND)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_print_as_text_when_printable_else_hex() {
        assert_eq!(bytes_text(b"hello world"), "hello world");
        assert_eq!(bytes_text(b"caf\xc3\xa9"), "café");
        assert_eq!(bytes_text(b"a\nb"), "0x610a62");
        assert_eq!(bytes_text(&[0xff, 0x00]), "0xff00");
        assert_eq!(bytes_json(b"k"), json!("k"));
        assert_eq!(bytes_json(&[1, 2]), json!({ "hex": "0102" }));
    }

    #[test]
    fn ttls_parse_with_units_and_bad_ones_are_refused() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("30s", ms(30_000)),
            ("30", ms(30_000)),
            ("500ms", ms(500)),
            ("10m", ms(600_000)),
            ("2h", ms(7_200_000)),
            ("1d", ms(86_400_000)),
        ] {
            assert_eq!(parse_ttl(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "0",
            "0s",
            "s",
            "1.5s",
            "-1s",
            "10y",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        assert!(
            parse_ttl("3660d").is_ok() && parse_ttl("3661d").is_err(),
            "ten years"
        );
    }
}
