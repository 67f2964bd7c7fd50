//! The size of the node's data dir, walked at scrape time (at most [`DISK_FILES_MAX`] files).

use super::gauge;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::path::{Path, PathBuf};

/// The size of the data dir, walked at scrape time.
#[derive(Debug)]
pub(super) struct DiskCollector {
    /// The data dir.
    pub(super) data_dir: PathBuf,
}

/// Files visited at most per scrape (the store holds tens to hundreds).
const DISK_FILES_MAX: usize = 100_000;

/// The bytes of the files under `root`, its subdirectories included.
fn dir_bytes(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    let mut visited = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > DISK_FILES_MAX {
                return total;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

impl Collector for DiskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "storage_disk_bytes",
            "Bytes of the node's data dir on disk",
            dir_bytes(&self.data_dir) as i64,
        )
    }
}
