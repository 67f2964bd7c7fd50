//! Removing expired keys through the log: the event loop runs the core's sweep
//! ([`crate::core::ttl_sweep`]) with the real clocks and the fjall store, and counts what it
//! proposed.

use super::EventLoop;
use crate::core::ttl_sweep::SWEEP_INTERVAL;
use crate::error::Result;

impl EventLoop {
    /// Runs one sweep step in every shard this node leads that is due for one (see
    /// [`crate::core::node_core::NodeCore::sweep_expired_keys`]).
    pub(super) fn sweep_expired_keys(&mut self) -> Result<()> {
        let now = self.mono_now();
        let proposed = self.core.sweep_expired_keys(
            now,
            SWEEP_INTERVAL,
            crate::pd_host::wall_clock_ms(),
            &self.store,
        )?;
        self.metrics.raft_proposals.inc_by(proposed.entries);
        self.metrics.keys_expired.inc_by(proposed.keys);
        Ok(())
    }
}
