//! Quiescence in the simulated world: which seeds quiesce, the idle windows of the client load
//! (so that groups actually go quiet in the middle of the faults), the node-liveness input (a
//! node is suspected dead by a peer that has not been able to hear from it for
//! [`SUSPECT_AFTER_TICKS`]), and the leader liveness check, which runs in every seed.

use super::World;
use crate::checkers::Violation;
use crate::checkers::leader_liveness::GroupLiveness;
use ringkv_raft::{Role, SplitMix64};
use ringkv_types::{NodeId, ShardId};
use std::collections::{BTreeMap, BTreeSet};

/// Ticks a peer must be down or cut off (its messages not arriving) before a node suspects it
/// dead and tells its replicas (`RawNode::report_peer_down`): one election timeout.
pub const SUSPECT_AFTER_TICKS: u64 = 10;

/// How long the node of a quiescent leader stays down when the world kills it on purpose: to
/// the end of the chaos phase (the kill comes between ticks 40 and 100 at the earliest, so the
/// followers must elect a new leader among themselves, and followers that wait for the dead
/// leader stay leaderless for longer than the leader liveness bound).
pub const QUIET_LEADER_DOWN_TICKS: u64 = 400;

/// The quiescence side of one seed's run.
#[derive(Debug)]
pub struct Quiet {
    /// Per group, the tick windows `[start, end)` in which clients leave it alone.
    idle: BTreeMap<ShardId, Vec<(u64, u64)>>,
    /// `(observer, peer)`: since when `observer` has not been able to hear from `peer`.
    unreachable_since: BTreeMap<(NodeId, NodeId), u64>,
    /// Suspicions already reported (once per episode).
    reported: BTreeSet<(NodeId, NodeId)>,
    /// Liveness reports handed to replicas.
    pub reports: u64,
    /// Of those, reports that reached a quiescent replica.
    pub quiescent_reports: u64,
    /// From this tick on, the first quiescent leader found has its node crashed for
    /// [`QUIET_LEADER_DOWN_TICKS`] (a BUGGIFY-style fault point: the case quiescence must
    /// survive, a leader dying while its followers hear nothing).
    kill_quiet_leader_from: Option<u64>,
    /// Quiescent leaders killed that way.
    pub quiet_leaders_killed: u64,
}

impl Quiet {
    /// Whether `seed` runs with quiescence (one seed in two, from a stream of its own so the
    /// other draws of the seed do not move), and if so its idle windows over `ticks` ticks.
    pub fn draw(seed: u64, groups: &[ShardId], ticks: u64, forced: bool) -> Option<Self> {
        let mut rng = SplitMix64::new(seed ^ 0x5155_4945_5343_4521);
        if !forced && rng.range(0, 2) == 0 {
            return None;
        }
        let kill_quiet_leader_from = (rng.range(0, 3) > 0).then(|| rng.range(40, 100));
        let mut idle = BTreeMap::new();
        for &group in groups {
            let mut windows = Vec::new();
            let mut at = rng.range(0, 60);
            while at < ticks {
                let end = at + rng.range(30, 150);
                windows.push((at, end));
                at = end + rng.range(10, 80);
            }
            idle.insert(group, windows);
        }
        Some(Self {
            idle,
            unreachable_since: BTreeMap::new(),
            reported: BTreeSet::new(),
            reports: 0,
            quiescent_reports: 0,
            kill_quiet_leader_from,
            quiet_leaders_killed: 0,
        })
    }

    /// Quiescence with no idle windows (a run without clients).
    pub fn without_idle_windows() -> Self {
        Self {
            idle: BTreeMap::new(),
            unreachable_since: BTreeMap::new(),
            reported: BTreeSet::new(),
            reports: 0,
            quiescent_reports: 0,
            kill_quiet_leader_from: None,
            quiet_leaders_killed: 0,
        }
    }

    /// Whether clients leave `group` alone at `tick`.
    pub fn is_idle(&self, group: ShardId, tick: u64) -> bool {
        self.idle
            .get(&group)
            .is_some_and(|windows| windows.iter().any(|&(s, e)| s <= tick && tick < e))
    }
}

impl World {
    /// During chaos, in quiescing seeds: crashes the node of a leader whose group is quiescent
    /// on every up replica, once, at the first chance at or after the drawn tick (and only
    /// while no more than a minority of nodes would be down).
    pub(super) fn maybe_kill_quiet_leader(&mut self) {
        let tick = self.now / crate::params::TICK_UNITS;
        let Some(from) = self.quiet.as_ref().and_then(|q| q.kill_quiet_leader_from) else {
            return;
        };
        if tick < from {
            return;
        }
        let down = self.nodes.values().filter(|n| !n.up).count() as u64;
        if down >= (self.params.nodes - 1) / 2 {
            return;
        }
        // A group whose replicas are all quiescent: its followers will hear nothing at all.
        let all_quiet = |group: &ShardId| {
            self.nodes
                .values()
                .filter(|n| n.up)
                .filter_map(|n| n.replicas.get(group)?.raw.as_ref())
                .all(|raw| raw.is_quiescent())
        };
        let victim = self.nodes.iter().find_map(|(id, node)| {
            let quiet_leader = node.up
                && node.replicas.iter().any(|(group, r)| {
                    r.raw.as_ref().is_some_and(|raw| raw.is_leader()) && all_quiet(group)
                });
            quiet_leader.then_some(*id)
        });
        let Some(victim) = victim else {
            return;
        };
        if let Some(quiet) = self.quiet.as_mut() {
            quiet.kill_quiet_leader_from = None;
            quiet.quiet_leaders_killed += 1;
        }
        if self.verbose {
            eprintln!("{} kill quiescent leader {victim}", self.now);
        }
        let restart_at = self.now + QUIET_LEADER_DOWN_TICKS * crate::params::TICK_UNITS;
        self.crash_node(victim, restart_at);
    }

    /// Once per tick: the liveness input (quiescing seeds) and the leader liveness check (all
    /// seeds).
    pub(super) fn observe_liveness(&mut self) -> Result<(), Violation> {
        if self.quiet.is_some() {
            self.report_suspects();
        }
        let tick = self.now / crate::params::TICK_UNITS;
        for group in self.groups.clone() {
            let state = self.group_liveness(group);
            self.leader_liveness.observe(group, tick, state)?;
        }
        Ok(())
    }

    /// Updates who suspects whom and hands new suspicions to the observer's replicas.
    fn report_suspects(&mut self) {
        let tick = self.now / crate::params::TICK_UNITS;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut due = Vec::new();
        let Some(quiet) = self.quiet.as_mut() else {
            return;
        };
        for &observer in &ids {
            if !self.nodes.get(&observer).is_some_and(|n| n.up) {
                // A crashed node forgets what it suspected.
                quiet.unreachable_since.retain(|(o, _), _| *o != observer);
                quiet.reported.retain(|(o, _)| *o != observer);
                continue;
            }
            for &peer in &ids {
                if peer == observer {
                    continue;
                }
                let unreachable = !self.nodes.get(&peer).is_some_and(|n| n.up)
                    || self.cut.contains(&(peer, observer));
                if !unreachable {
                    quiet.unreachable_since.remove(&(observer, peer));
                    quiet.reported.remove(&(observer, peer));
                    continue;
                }
                let since = *quiet
                    .unreachable_since
                    .entry((observer, peer))
                    .or_insert(tick);
                if tick - since >= SUSPECT_AFTER_TICKS && quiet.reported.insert((observer, peer)) {
                    due.push((observer, peer));
                }
            }
        }
        for (observer, peer) in due {
            if self.verbose {
                eprintln!("{} {observer} suspects {peer}", self.now);
            }
            self.trace
                .record(&[self.now, 13, observer.get(), peer.get()]);
            let member_node = &self.member_node;
            let Some(node) = self.nodes.get_mut(&observer) else {
                continue;
            };
            let (mut reports, mut quiescent_reports) = (0, 0);
            for replica in node.replicas.values_mut() {
                let Some(raw) = replica.raw.as_mut() else {
                    continue;
                };
                let members: Vec<NodeId> = raw
                    .conf_state()
                    .members()
                    .filter(|m| member_node.get(m) == Some(&peer))
                    .collect();
                for member in members {
                    quiescent_reports += u64::from(raw.is_quiescent());
                    raw.report_peer_down(member);
                    reports += 1;
                }
            }
            if let Some(quiet) = self.quiet.as_mut() {
                quiet.reports += reports;
                quiet.quiescent_reports += quiescent_reports;
            }
        }
    }

    /// Whether `group` owes a leader: a majority of its voters (as the up replica with the
    /// latest configuration sees them) up and pairwise connected both ways, and whether one of
    /// them leads.
    fn group_liveness(&self, group: ShardId) -> GroupLiveness {
        let latest = self
            .nodes
            .values()
            .filter(|n| n.up)
            .filter_map(|n| n.replicas.get(&group)?.raw.as_ref())
            .max_by_key(|raw| raw.status().conf_index);
        let Some(latest) = latest else {
            return GroupLiveness::NoConnectedMajority;
        };
        let voters = latest.conf_state().voters.clone();
        // Up voters: (node, leads?).
        let up: Vec<(NodeId, bool)> = voters
            .iter()
            .filter_map(|member| {
                let node_id = *self.member_node.get(member)?;
                let node = self.nodes.get(&node_id).filter(|n| n.up)?;
                let replica = node.replicas.get(&group).filter(|r| r.member == *member)?;
                let raw = replica.raw.as_ref()?;
                Some((node_id, raw.status().role == Role::Leader))
            })
            .collect();
        let majority = voters.len() / 2 + 1;
        let connected = |a: NodeId, b: NodeId| {
            a == b || (!self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a)))
        };
        let mut owed = false;
        // At most 5 voters: every subset.
        for mask in 1u32..(1 << up.len()) {
            let members: Vec<(NodeId, bool)> = up
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, m)| *m)
                .collect();
            if members.len() < majority {
                continue;
            }
            let clique = members
                .iter()
                .all(|(a, _)| members.iter().all(|(b, _)| connected(*a, *b)));
            if !clique {
                continue;
            }
            if members.iter().any(|(_, leads)| *leads) {
                return GroupLiveness::Led;
            }
            owed = true;
        }
        if owed {
            GroupLiveness::Leaderless
        } else {
            GroupLiveness::NoConnectedMajority
        }
    }
}
