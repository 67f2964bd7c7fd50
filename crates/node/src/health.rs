//! What the event loop tells the outside about itself: a small snapshot it publishes once per
//! tick, read by `/readyz` (and the metrics) without a call into the loop.
//!
//! The loop owns every group, so anything that asked it a question would wait behind its turn;
//! a published snapshot costs the loop one small copy per tick and the readers nothing.

use serde::Serialize;
use tokio::sync::watch;

/// Leaderless groups named in a snapshot at most (the count is always exact).
pub const LEADERLESS_LISTED_MAX: usize = 32;

/// The node's health as of its last tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    /// The event loop has published at least once (false until its first tick).
    pub started: bool,
    /// The placement driver's node table lists this node (not removed).
    pub joined: bool,
    /// The shard map is current: a PD host's PD group knows a leader; another node fetched PD's
    /// state recently.
    pub map_fresh: bool,
    /// Local Raft groups (the PD group included), initialized ones only.
    pub groups: usize,
    /// How many of them know no leader.
    pub leaderless_count: usize,
    /// Some of them (at most [`LEADERLESS_LISTED_MAX`]), by shard id.
    pub leaderless: Vec<u64>,
    /// Groups this node leads.
    pub leaders: usize,
    /// The placement driver's leader as far as this node knows.
    pub pd_leader: Option<u64>,
}

impl HealthSnapshot {
    /// Why the node is not ready; empty when it is.
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.started {
            reasons.push("the event loop has not started".to_string());
            return reasons;
        }
        if !self.joined {
            reasons.push("this node is not (yet) registered with the placement driver".into());
        }
        if !self.map_fresh {
            reasons.push("the shard map is stale (no placement driver leader reached)".into());
        }
        if self.leaderless_count > 0 {
            let listed: Vec<String> = self.leaderless.iter().map(u64::to_string).collect();
            let more = self.leaderless_count.saturating_sub(self.leaderless.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            reasons.push(format!(
                "{} local shard(s) know no leader: {}{tail}",
                self.leaderless_count,
                listed.join(", ")
            ));
        }
        reasons
    }
}

/// The loop's side: publishes snapshots.
#[derive(Debug)]
pub struct HealthPublisher {
    sender: watch::Sender<HealthSnapshot>,
}

/// A reader's side: the latest snapshot.
#[derive(Clone, Debug)]
pub struct HealthReader {
    receiver: watch::Receiver<HealthSnapshot>,
}

/// A publisher and a reader of the same snapshots (initially "not started").
pub fn channel() -> (HealthPublisher, HealthReader) {
    let (sender, receiver) = watch::channel(HealthSnapshot::default());
    (HealthPublisher { sender }, HealthReader { receiver })
}

impl HealthPublisher {
    /// Replaces the snapshot (readers may have gone; that is fine).
    pub fn publish(&self, snapshot: HealthSnapshot) {
        self.sender.send_if_modified(|current| {
            if *current == snapshot {
                return false;
            }
            *current = snapshot;
            true
        });
    }
}

impl HealthReader {
    /// The latest snapshot.
    pub fn latest(&self) -> HealthSnapshot {
        self.receiver.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_what_is_missing() {
        assert_eq!(
            HealthSnapshot::default().not_ready_reasons(),
            vec!["the event loop has not started".to_string()]
        );
        let ready = HealthSnapshot {
            started: true,
            joined: true,
            map_fresh: true,
            groups: 3,
            ..HealthSnapshot::default()
        };
        assert!(ready.not_ready_reasons().is_empty());
        let cut_off = HealthSnapshot {
            map_fresh: false,
            leaderless_count: 40,
            leaderless: (0..LEADERLESS_LISTED_MAX as u64).collect(),
            ..ready
        };
        let reasons = cut_off.not_ready_reasons();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[1].starts_with("40 local shard(s)"), "{reasons:?}");
        assert!(reasons[1].ends_with("and 8 more"), "{reasons:?}");
        let (publisher, reader) = channel();
        publisher.publish(cut_off.clone());
        assert_eq!(reader.latest(), cut_off);
    }
}
