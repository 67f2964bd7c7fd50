//! Splits in a node-core run. About half the seeds split one shard mid-workload: from a tick
//! drawn in the chaos phase, the world (as an operator with `ringctl split`) asks the shard's
//! leader, through the core's proposal path, to split at the position of one of the workload's
//! keys strictly inside the arc, until a replica applies it. The keys at or above that
//! position move to the new shard (the TTL checks read a moved key's history from the
//! parent's log up to the split, then the new shard's). The world's shard map (what the placement driver learns) takes both
//! halves when a replica reports the split, and the clients load it when a node refuses their
//! request (`clients.rs`). A node that has just written a split's new group is crashed at once
//! with some probability: before the parent's shrunken descriptor (an apply batch) is durable,
//! so the restart applies the split again and must leave the new group as it is.

use super::clients::user_key;
use super::ttl::{TTL_KEY_BASE, TTL_KEYS};
use super::{CoreWorld, fatal};
use crate::checkers::Violation;
use crate::params::TICK_UNITS;
use ringkv_node::core::replies::RequestId;
use ringkv_raft::SplitMix64;
use ringkv_types::{NodeId, ShardDescriptor, ShardId, ring};

/// Request ids of the world's split requests start here (far above the clients').
const SPLIT_REQUEST_BASE: u64 = 1 << 62;

/// Ticks between two split requests while none applied.
const SPLIT_RETRY_TICKS: u64 = 20;

/// How long before the first split request the answers to clients start to get lost.
const REPLY_LOSS_LEAD_TICKS: u64 = 30;

/// The seed's split, if it has one.
#[derive(Clone, Debug)]
pub(super) struct SplitPlan {
    /// The shard to split.
    shard: ShardId,
    /// The new shard's id.
    new_shard: ShardId,
    /// Where the new shard starts (a workload key's position).
    at: u64,
    /// The first tick at which it is asked for.
    from_tick: u64,
    /// Chance that a node that just wrote the new group crashes at once.
    crash_per_mille: u64,
    /// Chance that an answer to a client is lost from [`REPLY_LOSS_LEAD_TICKS`] before the
    /// first request until the split applies (writes applied in the parent whose clients
    /// send them again to the new shard).
    reply_loss_per_mille: u64,
    /// Requests sent so far.
    requests: u64,
    /// Whether a replica applied it.
    pub(super) applied: bool,
}

impl SplitPlan {
    /// The split of `seed`, or `None` (half the seeds, and when no shard has a workload key
    /// strictly inside its arc). Drawn from its own generator, so the
    /// seed's other draws are those of a run without splits.
    pub(super) fn draw(
        seed: u64,
        descriptors: &[ShardDescriptor],
        keys: u8,
        chaos_ticks: u64,
    ) -> Option<Self> {
        let mut rng = SplitMix64::new(seed ^ 0x7370_6c69_7473_6565);
        if rng.range(0, 2) == 0 {
            return None;
        }
        let position = |key: u8| ring::position(&user_key(key));
        let start = rng.range(0, descriptors.len() as u64) as usize;
        for offset in 0..descriptors.len() {
            let Some(parent) = descriptors.get((start + offset) % descriptors.len()) else {
                continue;
            };
            let mut points: Vec<u64> = (0..keys)
                .chain(TTL_KEY_BASE..TTL_KEY_BASE + TTL_KEYS as u8)
                .map(position)
                .filter(|p| parent.arc.split_at(*p).is_some())
                .collect();
            points.sort_unstable();
            if points.is_empty() {
                continue;
            }
            let at = points[rng.range(0, points.len() as u64) as usize];
            let new_shard = ShardId(descriptors.iter().map(|d| d.id.get()).max()? + 1);
            return Some(Self {
                shard: parent.id,
                new_shard,
                at,
                from_tick: rng.range(chaos_ticks / 8, chaos_ticks * 3 / 4),
                crash_per_mille: rng.range(0, 600),
                reply_loss_per_mille: rng.range(0, 400),
                requests: 0,
                applied: false,
            });
        }
        None
    }
}

impl SplitPlan {
    /// The extra chance (per mille) that an answer to a client is lost at `tick`: around the
    /// split, until it applies (faults aimed at the moment that matters, as FoundationDB's
    /// buggify aims them).
    pub(super) fn reply_loss(&self, tick: u64) -> u64 {
        let from = self.from_tick.saturating_sub(REPLY_LOSS_LEAD_TICKS);
        if self.applied || tick < from {
            0
        } else {
            self.reply_loss_per_mille
        }
    }
}

impl CoreWorld {
    /// Asks the leader of the shard to split, every [`SPLIT_RETRY_TICKS`] from the plan's
    /// tick until a replica applied it.
    pub(super) fn request_split(&mut self) -> Result<(), Violation> {
        let tick = self.now / TICK_UNITS;
        let Some(plan) = self.split.as_mut() else {
            return Ok(());
        };
        if plan.applied
            || tick < plan.from_tick
            || !(tick - plan.from_tick).is_multiple_of(SPLIT_RETRY_TICKS)
        {
            return Ok(());
        }
        let leader = self.nodes.values_mut().find_map(|node| {
            let core = node.core.as_mut()?;
            let group = core.groups.get(&plan.shard)?;
            (group.raw.is_leader() && group.initialized).then_some((group.descriptor.epoch, core))
        });
        let Some((epoch, core)) = leader else {
            return Ok(());
        };
        plan.requests += 1;
        let request = RequestId(SPLIT_REQUEST_BASE + plan.requests);
        let proposed = core
            .propose_split(
                plan.shard,
                epoch,
                plan.new_shard,
                Some(plan.at),
                request,
                false,
            )
            .map_err(|e| fatal(e.to_string()))?;
        self.trace
            .record(&[8, self.now, plan.new_shard.get(), u64::from(proposed)]);
        Ok(())
    }

    /// After node `id`'s turn: the splits it applied go into the world's shard map, and a
    /// node that just wrote a split's new group may crash at once (before the parent's
    /// descriptor is durable).
    pub(super) fn after_split_turn(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        for (left, right, index) in std::mem::take(&mut node.splits_applied) {
            if let Some(plan) = self.split.as_mut() {
                plan.applied = true;
            }
            self.ttl.split(left.id, right.id, index);
            for descriptor in [left, right] {
                match self.descriptors.iter_mut().find(|d| d.id == descriptor.id) {
                    Some(slot) if slot.epoch.is_stale_against(&descriptor.epoch) => {
                        *slot = descriptor;
                    }
                    Some(_) => {}
                    None => self.descriptors.push(descriptor),
                }
            }
        }
        let created = std::mem::take(&mut node.split_created);
        let chance = self.split.as_ref().map_or(0, |plan| plan.crash_per_mille);
        if created && self.chance(chance) && self.may_crash() {
            self.crash_node(id)?;
            self.split_crashes += 1;
        }
        Ok(())
    }
}
