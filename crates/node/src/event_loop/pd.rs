//! The placement driver service on the event loop: group 0's leader serves
//! `AdminRequest::Pd` (stamps the command's log time, proposes it, answers once applied) and
//! `AdminRequest::PdState`, and proposes a `LeaderTick` when one would change something. Every PD replica
//! applies `LogCommand::Pd` entries to its [`PdState`] (see `apply_run`).
//!
//! Nodes that do not host PD keep a copy of the PD leader's state ([`EventLoop::pd_view`]),
//! refreshed by the node agent, to answer `GetShardMap` and `GetNodes`, and answer PD calls
//! `NotLeader` with the PD leader they last heard of.

use super::EventLoop;
use crate::core::entropy::KeySource;
use crate::core::pd_machine::{PD_WAITERS_MAX, PdHost, PdResults, PdWaiter};
use crate::core::replies::{Replies, RequestId};
use crate::error::Result;
use crate::log_command::LogCommand;
use crate::pd_host;
use ringkv_pd::{Command, PdState};
use ringkv_types::{AdminResult, LogIndex, NodeAddress, NodeId, Response, ShardId, WireError};
use std::time::Duration;
use tracing::warn;

use super::requests::not_leader;

impl EventLoop {
    /// The placement driver replica this node hosts (group 0's state machine).
    pub(super) fn pd_host(&self) -> Option<&PdHost> {
        self.core
            .groups
            .get(&ShardId::PD)
            .and_then(|group| group.machine.pd())
    }

    /// The hosted placement driver replica, to change.
    pub(super) fn pd_host_mut(&mut self) -> Option<&mut PdHost> {
        self.core
            .groups
            .get_mut(&ShardId::PD)
            .and_then(|group| group.machine.pd_mut())
    }

    /// The PD state this node answers from: its replica's applied state, else the copy the
    /// agent fetched from the PD leader.
    pub(super) fn pd_view(&self) -> Option<&PdState> {
        self.pd_host()
            .map(|host| &host.state)
            .or(self.pd_cache.as_ref())
    }

    /// Hands the users and keys of the PD state this node has to the authenticator (cheap when
    /// unchanged: compares a version).
    pub(super) fn sync_auth(&self) {
        if let (Some(auth), Some(state)) = (&self.auth, self.pd_view()) {
            auth.update(&state.auth);
        }
    }

    /// The PD leader as far as this node knows.
    pub(super) fn pd_leader(&self) -> Option<NodeId> {
        match self.pd_host() {
            Some(_) => self
                .core
                .groups
                .get(&ShardId::PD)
                .and_then(|g| g.leader_hint()),
            None => self.pd_leader_hint,
        }
    }

    /// Whether `node` may receive a replica: known to PD (and not removed), or an initial node.
    pub(super) fn node_known(&self, node: NodeId) -> bool {
        let in_pd = self.pd_view().is_some_and(|state| {
            state
                .nodes
                .get(&node)
                .is_some_and(|info| info.state != ringkv_pd::NodeState::Removed)
        });
        in_pd || self.config.address_of(node).is_some()
    }

    /// `GetNodes`: PD's nodes (not removed) with a valid address, else `initial_cluster`.
    pub(super) fn known_nodes(&self) -> Vec<NodeAddress> {
        match self.pd_view() {
            Some(state) => state
                .nodes
                .values()
                .filter(|info| info.state != ringkv_pd::NodeState::Removed)
                .filter_map(|info| {
                    let addr = ringkv_transport::resolve::check_host_port(&info.addr).ok()?;
                    Some(NodeAddress {
                        node: info.id,
                        addr,
                    })
                })
                .collect(),
            None => self
                .config
                .initial_cluster
                .iter()
                .map(|endpoint| NodeAddress {
                    node: endpoint.node,
                    addr: endpoint.addr.clone(),
                })
                .collect(),
        }
    }

    fn pd_not_leader(&self) -> Response {
        match self.core.groups.get(&ShardId::PD) {
            Some(group) if group.machine.pd().is_some() => {
                not_leader(group.leader_hint(), &group.descriptor)
            }
            _ => Response::Error(WireError::NotLeader {
                leader_hint: self.pd_leader_hint,
                descriptor: None,
            }),
        }
    }

    fn is_pd_leader(&self) -> bool {
        self.core
            .groups
            .get(&ShardId::PD)
            .is_some_and(|group| group.machine.pd().is_some() && group.raw.is_leader())
    }

    /// `AdminRequest::Pd`: decode, stamp, propose; answered when applied.
    pub(super) fn pd_call(&mut self, command: &[u8], slot: RequestId) -> Result<()> {
        if !self.is_pd_leader() {
            self.core.replies.send(slot, self.pd_not_leader());
            return Ok(());
        }
        let command: Command = match postcard::from_bytes(command) {
            Ok(command) => command,
            Err(error) => {
                self.core.replies.send(
                    slot,
                    Response::Error(WireError::InvalidRequest {
                        reason: format!("not a placement driver command: {error}"),
                    }),
                );
                return Ok(());
            }
        };
        if let Command::StoreHeartbeat(heartbeat) = &command {
            return self.pd_store_heartbeat(heartbeat, slot);
        }
        let command = match fill_signing_key(command, &mut self.keys) {
            Ok(command) => command,
            Err(reason) => {
                self.core
                    .replies
                    .send(slot, Response::Error(WireError::Internal { reason }));
                return Ok(());
            }
        };
        self.propose_pd(command, Some(slot))?;
        Ok(())
    }

    /// A node's heartbeat (`Command::StoreHeartbeat`), answered by the PD leader from its
    /// applied state and its in-memory statistics, without the log: only the node's liveness
    /// refresh is proposed (to nobody's answer), and the reports that must be replicated are
    /// named in the answer for the node to send as `ShardReport` commands (see
    /// `ringkv_pd::leader_stats`).
    fn pd_store_heartbeat(
        &mut self,
        heartbeat: &ringkv_pd::StoreHeartbeat,
        slot: RequestId,
    ) -> Result<()> {
        let now = self.mono_now();
        let Some(host) = self
            .core
            .groups
            .get_mut(&ShardId::PD)
            .and_then(|group| group.machine.pd_mut())
        else {
            self.core
                .replies
                .send(slot, Response::Error(WireError::Unavailable));
            return Ok(());
        };
        let now_ms = host.next_stamp(now, pd_host::wall_clock_ms());
        let triage = host.stats.handle(&host.state, heartbeat, now_ms);
        let answer = match postcard::to_stdvec(&triage.answer) {
            Ok(bytes) => Response::Admin(AdminResult::Pd(bytes.into())),
            Err(error) => Response::Error(WireError::Internal {
                reason: format!("encoding a heartbeat answer: {error}"),
            }),
        };
        self.core.replies.send(slot, answer);
        if let Some(command) = triage.propose {
            self.propose_pd(command, None)?;
        }
        Ok(())
    }

    /// `AdminRequest::PdState`: the PD leader's applied state, with the fresh statistics of
    /// its memory in place of the last replicated ones.
    pub(super) fn pd_state_call(&self) -> Response {
        let host = self.pd_host().filter(|_| self.is_pd_leader());
        let encoded = host.map(|host| {
            if host.stats.is_empty() {
                return pd_host::encode_state(&host.state);
            }
            let mut state = host.state.clone();
            host.stats.overlay(&mut state);
            pd_host::encode_state(&state)
        });
        match encoded {
            Some(encoded) => match encoded {
                Ok(bytes) => Response::Admin(AdminResult::Pd(bytes.into())),
                Err(error) => Response::Error(WireError::Internal {
                    reason: error.to_string(),
                }),
            },
            _ => self.pd_not_leader(),
        }
    }

    /// `AdminRequest::PdPlan`: what the PD leader's schedulers would start now (PD plans for
    /// `ringctl`, which does not run the schedulers itself).
    pub(super) fn pd_plan_call(&self, balancing: bool) -> Response {
        match self.pd_host() {
            Some(host) if self.is_pd_leader() => {
                // With the leader's memory of heartbeats (leader balancing reads them).
                let mut state = host.state.clone();
                host.stats.overlay(&mut state);
                match postcard::to_stdvec(&ringkv_pd::plan_with(&state, balancing)) {
                    Ok(bytes) => Response::Admin(AdminResult::Pd(bytes.into())),
                    Err(error) => Response::Error(WireError::Internal {
                        reason: format!("encoding the PD plan: {error}"),
                    }),
                }
            }
            _ => self.pd_not_leader(),
        }
    }

    /// Stamps and proposes `command` to group 0 (this node must lead it); `slot` gets the
    /// answer once the entry applies. Returns the entry's index when proposed.
    fn propose_pd(
        &mut self,
        mut command: Command,
        slot: Option<RequestId>,
    ) -> Result<Option<LogIndex>> {
        let now = self.mono_now();
        let busy = |replies: &mut Replies, slot: Option<RequestId>, response: Response| {
            if let Some(slot) = slot {
                replies.send(slot, response);
            }
        };
        let Some(group) = self.core.groups.get_mut(&ShardId::PD) else {
            busy(
                &mut self.core.replies,
                slot,
                Response::Error(WireError::Unavailable),
            );
            return Ok(None);
        };
        let Some(host) = group.machine.pd_mut() else {
            busy(
                &mut self.core.replies,
                slot,
                Response::Error(WireError::Unavailable),
            );
            return Ok(None);
        };
        if host.waiters.len() >= PD_WAITERS_MAX {
            busy(
                &mut self.core.replies,
                slot,
                Response::Error(WireError::Busy),
            );
            return Ok(None);
        }
        pd_host::stamp(&mut command, host.next_stamp(now, pd_host::wall_clock_ms()));
        let data = LogCommand::Pd(command).encode()?;
        match group.raw.propose(data) {
            Ok(index) => {
                self.metrics.raft_proposals.inc();
                if let Some(slot) = slot {
                    let term = group.raw.term();
                    if let Some(host) = group.machine.pd_mut() {
                        let waiter = PdWaiter { term, reply: slot };
                        if let Some(replaced) = host.waiters.insert(index, waiter) {
                            self.core.replies.drop_request(replaced.reply);
                        }
                    }
                }
                self.core.dirty.insert(ShardId::PD);
                Ok(Some(index))
            }
            Err(ringkv_raft::Error::NotLeader { .. }) => {
                busy(
                    &mut self.core.replies,
                    slot,
                    not_leader(group.leader_hint(), &group.descriptor),
                );
                Ok(None)
            }
            Err(
                ringkv_raft::Error::ProposalDropped { .. }
                | ringkv_raft::Error::TransferInProgress { .. },
            ) => {
                busy(
                    &mut self.core.replies,
                    slot,
                    Response::Error(WireError::Busy),
                );
                Ok(None)
            }
            Err(error) => {
                busy(
                    &mut self.core.replies,
                    slot,
                    Response::Error(WireError::Internal {
                        reason: error.to_string(),
                    }),
                );
                Ok(None)
            }
        }
    }

    /// On every tick: every `pd.tick_interval_ms`, starting a heartbeat timeout after it became
    /// leader, the PD leader proposes a `LeaderTick` if applying it would change something (a
    /// node marked `Down`, an operator cancelled or created; see `ringkv_pd::leader_stats`).
    pub(super) fn pd_tick(&mut self) -> Result<()> {
        let leads = self.is_pd_leader();
        let interval = Duration::from_millis(self.config.pd.tick_interval_ms);
        self.sync_auth();
        self.maybe_propose_signing_key(leads)?;
        let now = self.mono_now();
        let Some(host) = self.pd_host_mut() else {
            return Ok(());
        };
        if !leads {
            if !host.stats.is_empty() {
                host.stats = ringkv_pd::LeaderStats::new();
            }
            host.leading_since = None;
            host.tick_in_flight = None;
            host.clock_base = None;
            return Ok(());
        }
        let since = *host.leading_since.get_or_insert(now);
        let grace = Duration::from_millis(host.state.settings.heartbeat_timeout_ms);
        if now.since(since) < grace || host.state.cluster.is_none() {
            return Ok(());
        }
        if let Some((_, proposed)) = host.tick_in_flight {
            // Bounded wait: a tick entry lost with a leadership change is never applied here.
            if now.since(proposed) < interval.saturating_mul(10) {
                return Ok(());
            }
            host.tick_in_flight = None;
        }
        if host
            .last_tick
            .is_some_and(|last| now.since(last) < interval)
        {
            return Ok(());
        }
        host.last_tick = Some(now);
        // Only a tick that would change something is proposed (an idle cluster writes no PD
        // log entries): `LeaderStats::tick` decides it on the applied state.
        let now_ms = host.next_stamp(now, pd_host::wall_clock_ms());
        let Some(tick) = host.stats.tick(&host.state, now_ms) else {
            return Ok(());
        };
        if let Some(index) = self.propose_pd(tick, None)?
            && let Some(host) = self.pd_host_mut()
        {
            host.tick_in_flight = Some((index, now));
        }
        Ok(())
    }

    /// As PD leader of a cluster without a token-signing key (a new cluster, or one created
    /// before tokens existed): generates one and proposes it, at most every 10 seconds.
    fn maybe_propose_signing_key(&mut self, leads: bool) -> Result<()> {
        let now = self.mono_now();
        let needed = leads
            && self.pd_host().is_some_and(|host| {
                host.state.cluster.is_some() && host.state.auth.signing_keys.is_empty()
            });
        let recently = self
            .signing_key_proposed
            .is_some_and(|at| now.since(at) < Duration::from_secs(10));
        if !needed || recently {
            return Ok(());
        }
        self.signing_key_proposed = Some(now);
        match self.keys.signing_key() {
            Ok((private_pkcs8, public)) => {
                let command = Command::Auth {
                    command: ringkv_pd::AuthCommand::AddSigningKey {
                        private_pkcs8,
                        public,
                    },
                    now_ms: 0,
                };
                self.propose_pd(command, None)?;
            }
            Err(error) => warn!(%error, "cannot generate a token-signing key"),
        }
        Ok(())
    }

    /// Answers the PD callers whose entries applied (up to `last`), after the state is saved.
    pub(super) fn pd_answer(&mut self, results: PdResults, last: LogIndex) {
        let Some(group) = self.core.groups.get_mut(&ShardId::PD) else {
            return;
        };
        let hint = Some((group.leader_hint(), group.descriptor.clone()));
        let Some(host) = group.machine.pd_mut() else {
            return;
        };
        if host.tick_in_flight.is_some_and(|(index, _)| index <= last) {
            host.tick_in_flight = None;
        }
        let lost = || match &hint {
            Some((leader, descriptor)) => not_leader(*leader, descriptor),
            None => Response::Error(WireError::Unavailable),
        };
        for (index, term, bytes) in results {
            if let Some(waiter) = host.waiters.remove(&index) {
                let response = if waiter.term == term {
                    Response::Admin(AdminResult::Pd(bytes.into()))
                } else {
                    lost()
                };
                self.core.replies.send(waiter.reply, response);
            }
        }
        // Waiters at applied indexes whose entries were not PD commands of ours: replaced.
        while let Some(entry) = host.waiters.first_entry() {
            if *entry.key() > last {
                break;
            }
            self.core.replies.send(entry.remove().reply, lost());
        }
        if let Some(auth) = &self.auth {
            auth.update(&host.state.auth);
        }
        if self.map.version != host.state.shard_map.version
            || self.map.shards.len() != host.state.shard_map.shards.len()
        {
            self.map = host.state.shard_map.clone();
        }
    }

    /// The agent's copy of the PD leader's state (nodes that do not host PD).
    pub(super) fn set_pd_cache(&mut self, state: PdState, leader: Option<NodeId>) {
        if self.pd_host().is_some() {
            return;
        }
        if leader.is_some() {
            self.pd_leader_hint = leader;
        }
        if state.cluster.is_none() {
            warn!("ignoring a placement driver state that is not bootstrapped");
            return;
        }
        if state.shard_map.covers_ring() {
            self.map = state.shard_map.clone();
        }
        self.pd_cache = Some(state);
        self.pd_cache_at = Some(std::time::Instant::now());
        self.sync_auth();
    }
}

/// `ringctl auth rotate-key` sends `AddSigningKey` without key bytes: the PD leader generates
/// the key here, outside the state machine (whose apply must stay deterministic).
fn fill_signing_key(
    command: Command,
    keys: &mut dyn KeySource,
) -> std::result::Result<Command, String> {
    match command {
        Command::Auth {
            command: ringkv_pd::AuthCommand::AddSigningKey { private_pkcs8, .. },
            now_ms,
        } if private_pkcs8.is_empty() => {
            let (private_pkcs8, public) = keys.signing_key()?;
            Ok(Command::Auth {
                command: ringkv_pd::AuthCommand::AddSigningKey {
                    private_pkcs8,
                    public,
                },
                now_ms,
            })
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key source handing out fixed bytes.
    struct Fixed;

    impl KeySource for Fixed {
        fn signing_key(&mut self) -> std::result::Result<(Vec<u8>, Vec<u8>), String> {
            Ok((vec![1; 4], vec![2; 4]))
        }
    }

    fn add_key(private_pkcs8: Vec<u8>, public: Vec<u8>) -> Command {
        Command::Auth {
            command: ringkv_pd::AuthCommand::AddSigningKey {
                private_pkcs8,
                public,
            },
            now_ms: 7,
        }
    }

    #[test]
    fn a_key_rotation_without_key_bytes_gets_them_from_the_key_source() {
        let filled = fill_signing_key(add_key(Vec::new(), Vec::new()), &mut Fixed).unwrap();
        assert_eq!(filled, add_key(vec![1; 4], vec![2; 4]));
        // A command that carries its key is left alone.
        let given = add_key(vec![9; 4], vec![8; 4]);
        assert_eq!(fill_signing_key(given.clone(), &mut Fixed).unwrap(), given);
    }
}
