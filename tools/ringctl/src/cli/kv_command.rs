//! The `ringctl kv` subcommands: reads, writes, scans and watches of keys.

use crate::kv;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Prints the value of KEY (with several keys, `KEY<TAB>VALUE` lines, read in parallel
    /// per shard); exits 1 if a key does not exist.
    Get {
        /// The keys.
        #[arg(required = true, num_args = 1..)]
        keys: Vec<String>,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Exits 0 if KEY exists and 1 if not (the value is not fetched).
    Has {
        /// The key.
        key: String,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Sets KEY to VALUE; without VALUE, the value is read from stdin (all of it, as bytes).
    Put {
        /// The key.
        key: String,
        /// The value (default: stdin).
        value: Option<String>,
        /// Time to live: the key expires this long after its shard's leader applies the put
        /// (`500ms`, `30s`, `10m`, `2h`, `1d`; a bare number is seconds).
        #[arg(long, value_parser = kv::parse_ttl)]
        ttl: Option<std::time::Duration>,
    },
    /// Prints what is left of KEY's time to live in milliseconds (`none` without a TTL);
    /// exits like `get` if the key does not exist.
    Ttl {
        /// The key.
        key: String,
        /// How fresh the read must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Clears KEY's time to live, keeping its value; prints whether it had one.
    Persist {
        /// The key.
        key: String,
    },
    /// Removes KEY.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets KEY to NEW if its value is EXPECTED (or its version EXPECTED_VERSION); exits 1
    /// (printing the current value) if not.
    Cas {
        /// The key.
        key: String,
        /// The required current value; omit to require that the key is absent.
        #[arg(long)]
        expected: Option<String>,
        /// Compare the version (the log index of the key's last write, as `get -w json`
        /// prints it) instead of the value; 0 = the key must be absent.
        #[arg(long, conflicts_with = "expected")]
        expected_version: Option<u64>,
        /// The new value; omit (with --delete) to remove the key.
        #[arg(long, required_unless_present = "delete")]
        new: Option<String>,
        /// Remove the key when the comparison holds.
        #[arg(long, conflicts_with = "new")]
        delete: bool,
    },
    /// Lists keys (and values) of the namespace in ring order (keys are hashed: not sorted).
    /// A key present for the whole scan is printed exactly once, even across splits and moves.
    Scan {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print at most this many keys, then the cursor to resume from.
        #[arg(long)]
        limit: Option<u64>,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Resume from a cursor an earlier scan printed.
        #[arg(long)]
        cursor: Option<String>,
        /// How fresh each page must be.
        #[arg(long, value_enum, default_value_t = kv::Consistency::Linearizable)]
        consistency: kv::Consistency,
    },
    /// Prints one line per change of KEY (or of every key under --prefix) as it happens, in
    /// order per key; until Ctrl-C, --count events or --timeout.
    Watch {
        /// The key.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        /// Watch every key starting with this (empty: the whole namespace).
        #[arg(long)]
        prefix: Option<String>,
        /// Changes after this log index of the key's shard (a version `kv get -w json` printed,
        /// or the `index` of the last event seen); default: from now.
        #[arg(long)]
        after: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long (`500ms`, `30s`, `10m`; a bare number is seconds).
        #[arg(long, value_parser = kv::parse_ttl)]
        timeout: Option<std::time::Duration>,
    },
}
