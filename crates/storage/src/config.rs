//! Store configuration.

use crate::command::VALUE_BYTES_MAX;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// How a [`Store`](crate::Store) is opened. Every limit has a reason in its doc.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The node's data directory (created when missing). One store per directory; fjall locks it.
    pub path: PathBuf,
    /// fjall block cache. Size it to ~20–25 % of RAM on a dedicated node; the default 64 MiB
    /// suits tests and small nodes.
    pub cache_bytes: u64,
    /// Largest payload of one record (entry, value, snapshot chunk); at least
    /// [`VALUE_BYTES_MAX`] + 1 KiB so every valid value fits. Decoding checks the declared
    /// length against it before allocating, so a corrupt length cannot cause a huge allocation.
    pub record_bytes_max: u64,
    /// Group-commit batches that may wait for the writer. `submit` blocks when this many are
    /// queued: 2 lets the node fill the next batch while one is syncing and one is queued;
    /// more only adds latency since the writer fsyncs them one by one.
    pub writer_queue_depth: usize,
    /// Target size of one snapshot data chunk. Larger chunks amortise the per-chunk crc and
    /// framing; smaller ones bound the transport's frame size. 1 MiB ≈ 10k 100-byte values.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot (sum of key and value bytes) `prepare_snapshot` accepts. Installs are
    /// staged on disk chunk by chunk (see `snapshot_install`), so this bounds disk, not memory.
    pub snapshot_bytes_max: u64,
    /// Bound on fjall's write buffer: when its memtables (active and sealed, all keyspaces)
    /// exceed this, the store seals them and the committing thread waits for flushes (see
    /// `write_buffer`; fjall 3.1 itself ignores its own setting). Without it a burst of writes
    /// faster than the flushes (a snapshot being staged and moved) holds up to 5 x 320 MiB of
    /// memtables. 0 = unlimited.
    pub write_buffer_bytes: u64,
    /// Keys deleted per batch when removing a replica's range in the background. Each batch is
    /// one journal write; 1,000 keeps one batch well under a millisecond of foreground stall.
    pub removal_batch_keys: usize,
    /// Free space on the data dir's filesystem below which the low-space alarm rises and the
    /// node refuses client writes (reads and deletes still work), like etcd's space quota. It
    /// must hold what the groups append while the alarm propagates (entries already proposed,
    /// Raft's own entries, deletes) plus fjall's flushes and compactions: 256 MiB by default;
    /// 0 disables the alarm.
    pub space_reserve_bytes: u64,
}

impl StoreConfig {
    /// Defaults for a store in `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_bytes: 64 << 20,
            record_bytes_max: 64 << 20,
            writer_queue_depth: 2,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 1 << 30,
            write_buffer_bytes: 256 << 20,
            removal_batch_keys: 1_000,
            space_reserve_bytes: 256 << 20,
        }
    }

    /// Checks the limits.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.writer_queue_depth == 0 {
            return Err(Error::InvalidConfig(
                "writer_queue_depth must be at least 1",
            ));
        }
        if self.record_bytes_max < VALUE_BYTES_MAX as u64 + 1024
            || self.record_bytes_max > u64::from(u32::MAX) / 2
        {
            return Err(Error::InvalidConfig(
                "record_bytes_max must be in [VALUE_BYTES_MAX + 1 KiB, 2 GiB)",
            ));
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes as u64 > self.record_bytes_max / 2
        {
            return Err(Error::InvalidConfig(
                "snapshot_chunk_bytes must be positive and at most half of record_bytes_max",
            ));
        }
        if self.removal_batch_keys == 0 {
            return Err(Error::InvalidConfig(
                "removal_batch_keys must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        StoreConfig::new("x").validate().unwrap();
        type Break = fn(&mut StoreConfig);
        let cases: [(&str, Break); 4] = [
            ("queue", |c| c.writer_queue_depth = 0),
            ("record", |c| c.record_bytes_max = 1024),
            ("chunk", |c| c.snapshot_chunk_bytes = 0),
            ("removal", |c| c.removal_batch_keys = 0),
        ];
        for (name, breaks) in cases {
            let mut config = StoreConfig::new("x");
            breaks(&mut config);
            assert!(config.validate().is_err(), "{name}");
        }
    }
}
