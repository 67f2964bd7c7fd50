//! Everything a seed decides about a run.

use ringkv_raft::SplitMix64;

/// Simulated time units per Raft tick.
pub const TICK_UNITS: u64 = 10;

/// The shape and fault rates of one run, all drawn from the seed.
#[derive(Clone, Debug)]
pub struct Params {
    /// Nodes in the cluster: 3, 5 or 7.
    pub nodes: u64,
    /// Raft groups (shards).
    pub groups: u64,
    /// Initial voters per group.
    pub replication: u64,
    /// Message drop probability, per mille.
    pub drop_per_mille: u64,
    /// Message duplication probability, per mille.
    pub duplicate_per_mille: u64,
    /// Network delay bound in time units (delays are uniform in `[1, max]`, so messages reorder).
    pub max_delay_units: u64,
    /// fsync latency bound in time units.
    pub max_fsync_units: u64,
    /// Chance per tick that a node crashes, per mille.
    pub crash_per_mille: u64,
    /// Chance per tick that a partition starts, per mille.
    pub partition_per_mille: u64,
    /// Chance per tick of a membership change, per mille.
    pub conf_change_per_mille: u64,
    /// Chance per tick of a leader transfer, per mille.
    pub transfer_per_mille: u64,
    /// Applied entries between snapshots (tiny, so snapshots happen all the time).
    pub snapshot_every: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Keys per group.
    pub keys: u8,
    /// Share of reads that use the lease, per mille (the rest use ReadIndex).
    pub lease_reads_per_mille: u64,
    /// Chance, per mille, that a newly elected leader is cut off shortly after its election
    /// (a BUGGIFY-style fault point: it makes Figure 8's short-lived leaders common).
    pub isolate_new_leader_per_mille: u64,
    /// Soft limit on bytes per append message (1 means one entry per message).
    pub max_message_bytes: u64,
    /// Append messages in flight per follower.
    pub max_inflight_messages: usize,
    /// Ticks of chaos.
    pub chaos_ticks: u64,
    /// Ticks allowed after healing for every group to elect a leader and commit.
    pub heal_ticks: u64,
}

impl Params {
    /// Draws parameters from `rng`.
    pub fn draw(rng: &mut SplitMix64) -> Self {
        let nodes = [3, 5, 7][rng.range(0, 3) as usize];
        let replication = if nodes >= 5 && rng.range(0, 3) == 0 {
            5
        } else {
            3
        };
        Self {
            nodes,
            groups: rng.range(2, 5),
            replication,
            drop_per_mille: rng.range(0, 120),
            duplicate_per_mille: rng.range(0, 60),
            max_delay_units: rng.range(2, 40),
            max_fsync_units: rng.range(1, 30),
            crash_per_mille: rng.range(0, 25),
            partition_per_mille: rng.range(0, 40),
            conf_change_per_mille: rng.range(0, 80),
            transfer_per_mille: rng.range(0, 30),
            snapshot_every: rng.range(2, 12),
            clients: rng.range(3, 9),
            keys: rng.range(1, 5) as u8,
            lease_reads_per_mille: rng.range(0, 1000),
            isolate_new_leader_per_mille: [0, 100, 400][rng.range(0, 3) as usize],
            max_message_bytes: [1, 200, 4096][rng.range(0, 3) as usize],
            max_inflight_messages: rng.range(1, 9) as usize,
            chaos_ticks: 400,
            heal_ticks: 400,
        }
    }

    /// An idle cluster for counting what idle groups cost: `nodes` nodes, `groups` groups of
    /// three replicas, no clients, no faults, `ticks` ticks.
    pub fn idle(nodes: u64, groups: u64, ticks: u64) -> Self {
        Self {
            nodes,
            groups,
            replication: 3,
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            max_delay_units: 4,
            max_fsync_units: 4,
            crash_per_mille: 0,
            partition_per_mille: 0,
            conf_change_per_mille: 0,
            transfer_per_mille: 0,
            snapshot_every: 1000,
            clients: 0,
            keys: 1,
            lease_reads_per_mille: 0,
            isolate_new_leader_per_mille: 0,
            max_message_bytes: 4096,
            max_inflight_messages: 8,
            chaos_ticks: ticks,
            heal_ticks: 0,
        }
    }
}
