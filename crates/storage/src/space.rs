//! Free space on the data dir's filesystem, and the low-space alarm.
//!
//! The alarm rises when the free space falls below [`StoreConfig::space_reserve_bytes`]
//! (`crate::StoreConfig`) and clears once it is back above the reserve plus a quarter (so it
//! does not flap around the threshold). The store itself never refuses a group commit for it:
//! Raft must keep appending what its leader sent, and deletes must go through. The node refuses
//! new client writes while the alarm is up (`NoSpace`), so the reserve is left for those.

use crate::error::Result;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a measurement is reused before the filesystem is asked again.
const REFRESH: Duration = Duration::from_millis(100);

/// What [`Store::space`](crate::Store::space) measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceStatus {
    /// Bytes available to this process on the data dir's filesystem.
    pub free_bytes: u64,
    /// Size of that filesystem.
    pub total_bytes: u64,
    /// The configured reserve.
    pub reserve_bytes: u64,
    /// Whether the low-space alarm is up: client writes are refused until it clears.
    pub alarm: bool,
}

pub(crate) struct SpaceMonitor {
    reserve: u64,
    last: Mutex<Option<(Instant, SpaceStatus)>>,
}

impl SpaceMonitor {
    pub fn new(reserve: u64) -> Self {
        Self {
            reserve,
            last: Mutex::new(None),
        }
    }

    /// The status, measured again when the last measurement is older than [`REFRESH`] or
    /// `fresh` is set.
    pub fn status(&self, path: &Path, fresh: bool) -> Result<SpaceStatus> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, status)) = *last
            && !fresh
            && at.elapsed() < REFRESH
        {
            return Ok(status);
        }
        let stat = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
        let block = stat.f_frsize.max(1);
        let free_bytes = stat.f_bavail.saturating_mul(block);
        let total_bytes = stat.f_blocks.saturating_mul(block);
        let was_up = last.is_some_and(|(_, status)| status.alarm);
        let alarm = if was_up {
            free_bytes < self.reserve.saturating_add(self.reserve / 4)
        } else {
            free_bytes < self.reserve
        };
        let status = SpaceStatus {
            free_bytes,
            total_bytes,
            reserve_bytes: self.reserve,
            alarm,
        };
        *last = Some((Instant::now(), status));
        Ok(status)
    }
}
