//! The node agent: one task per node, off the event loop, that keeps the placement driver
//! informed and carries out its orders.
//!
//! Every `pd.heartbeat_interval_ms` it
//! 1. registers the node first if it joined through `join` (`Command::RegisterNodeAs` with
//!    the configured `node_id`, retried with backoff until PD answers; an id or address that
//!    belongs to another node, or a removed id, stops the node with the reason);
//! 2. asks the loop for a view ([`AgentCall::View`]): replica and leader counts, and every shard
//!    this node leads whose last membership change or split is applied, with its counters of
//!    applied writes and served reads (turned into per-second rates between two reports). Size
//!    and key counts come from a scan of the shard's range (`Store::data_size`) on a blocking
//!    thread, one shard at a time, each led shard re-measured every
//!    [`SIZE_EVERY_HEARTBEATS`] heartbeats (or when its arc changed); reports carry the last
//!    measurement, so the scan never delays a heartbeat;
//! 3. sends one `Command::StoreHeartbeat`: the node's stats and the reports of the led shards
//!    that changed since the last accepted heartbeat (every led shard each
//!    [`FULL_REPORT_EVERY_HEARTBEATS`] heartbeats, and after a failed heartbeat or a PD leader
//!    change). The PD leader answers it from memory (not through its log) and names the
//!    shards whose report must be replicated (among them led shards left out as unchanged
//!    that have an operator in flight, so a step waits at most a heartbeat to be handed out);
//!    the agent sends each of those as a
//!    `Command::ShardReport` and executes the `StepOrder` PD answers with when its epoch is the
//!    leader's own: the step becomes the admin request a shard leader already serves
//!    (`ChangeReplica`, `TransferLeader`, `SplitShard`), sent to the local loop like a client
//!    call. A shard with a step in flight is not reported (so the step is not handed out and
//!    executed twice); when the step ends the agent reports it through the log at once;
//! 4. gives the transport every node's address (`add_peer`), so nodes that joined are
//!    reachable: a PD host takes them from its own PD replica (in the view); another node
//!    fetches the PD leader's state (`PdState`) and keeps it as its copy for `GetShardMap` and
//!    `GetNodes` ([`AgentCall::PdCache`]).
//!
//! The code is split by what it talks about: `node_reports.rs` (registration, heartbeats, store
//! and space reports), `shards.rs` (shard reports and executing orders), `pd_calls.rs` (finding
//! the PD leader and calling it).
//!
//! The PD leader is found by asking: the cached leader first, then this node (if it hosts PD),
//! the initial nodes, the nodes PD listed, and the `join` addresses, following `NotLeader`
//! hints; at most [`ATTEMPTS_MAX`] calls per PD command. The agent never blocks the loop: it
//! talks to it through bounded channels, and every call has a timeout.

use crate::config::NodeConfig;
use crate::service::ClientCall;
use ringkv_pd::{
    Command, NodeRegistration, NodeState, NodeStats, PdState, Response as PdResponse, ShardReport,
    ShardStats, Step, StepOrder, StoreHeartbeat,
};
use ringkv_storage::{DataSize, Store};
use ringkv_transport::{ClientConnection, Transport};
use ringkv_types::ring::Arc as RingArc;
use ringkv_types::{
    AdminRequest, AdminResult, NodeId, ReplicaChange, ReplicaRole, Request, Response,
    ShardDescriptor, ShardId, WireError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

mod node_reports;
mod pd_calls;
mod shards;

/// Calls one PD command may take while looking for the leader.
pub const ATTEMPTS_MAX: usize = 8;

/// How long a step (a conf change, a transfer, a split) may run before the agent stops waiting.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest wait between registration attempts of a joining node.
const REGISTER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the agent asks of the event loop.
#[derive(Debug)]
pub enum AgentCall {
    /// The node's replicas, leaders and reportable shards.
    View(oneshot::Sender<AgentView>),
    /// The PD leader's state, for a node that does not host PD.
    PdCache {
        /// The state.
        state: Box<PdState>,
        /// The PD leader that answered.
        leader: Option<NodeId>,
    },
    /// Stop the node with this error (a joining node whose id PD contradicts).
    Fatal(String),
    /// PD's snapshot bandwidth limit for this node's outgoing snapshots (0 = unlimited).
    SnapshotLimit(u64),
}

/// The loop's answer to [`AgentCall::View`].
#[derive(Clone, Debug, Default)]
pub struct AgentView {
    /// The PD leader as this node knows it.
    pub pd_leader: Option<NodeId>,
    /// Replica and leader counts (data shards).
    pub stats: NodeStats,
    /// Shards this node leads with no membership change or split in flight.
    pub reports: Vec<LeaderReport>,
    /// Client writes applied by the shards this node leads, so far.
    pub writes_applied: u64,
    /// Client reads served by the shards this node leads, so far.
    pub reads_served: u64,
    /// Every node the local PD replica knows (not removed), with its address: PD hosts take
    /// their peers from here instead of fetching the leader's state.
    pub pd_nodes: Option<Vec<(NodeId, String)>>,
}

/// One shard this node leads.
#[derive(Clone, Debug)]
pub struct LeaderReport {
    /// Its applied descriptor.
    pub descriptor: ShardDescriptor,
    /// Learners whose replicated index reaches the commit index.
    pub caught_up_learners: Vec<NodeId>,
    /// Client writes this replica applied so far.
    pub writes_applied: u64,
    /// Client reads this replica served so far.
    pub reads_served: u64,
}

/// A load counter sampled at the previous report, to turn totals into rates.
#[derive(Clone, Copy, Debug)]
struct Sample {
    writes: u64,
    reads: u64,
    at: Instant,
}

impl Sample {
    /// Per-second rates since `self` (0 for the first sample or a counter that restarted).
    fn rates(&self, now: Sample) -> (u64, u64) {
        let elapsed_ms = now.at.duration_since(self.at).as_millis().max(1);
        let rate = |before: u64, after: u64| {
            let per_sec = u128::from(after.saturating_sub(before)) * 1000 / elapsed_ms;
            u64::try_from(per_sec).unwrap_or(u64::MAX)
        };
        (rate(self.writes, now.writes), rate(self.reads, now.reads))
    }
}

/// The agent before it runs (the loop starts it with the shared transport).
pub struct Agent {
    config: NodeConfig,
    store: Store,
    calls: mpsc::Sender<ClientCall>,
    loop_tx: mpsc::Sender<AgentCall>,
    store_incarnation: Option<u64>,
}

/// A led shard's size is measured again after this many heartbeat intervals.
pub const SIZE_EVERY_HEARTBEATS: u32 = 10;

/// A heartbeat carries the reports of every led shard after this many heartbeats (the others
/// carry only what changed), so a new PD leader's statistics fill within this many intervals.
pub const FULL_REPORT_EVERY_HEARTBEATS: u32 = 10;

/// What a size scan task returns: the shard, the arc it scanned, the size or the error.
type SizeScan = (ShardId, RingArc, Result<DataSize, String>);

/// The last size measured for a shard.
#[derive(Clone, Copy, Debug)]
struct MeasuredSize {
    arc: RingArc,
    at: Instant,
    size: DataSize,
}

impl Agent {
    /// An agent for the node of `config`, calling the loop through `calls` (the client
    /// service's queue) and `loop_tx`.
    pub fn new(
        config: NodeConfig,
        store: Store,
        calls: mpsc::Sender<ClientCall>,
        loop_tx: mpsc::Sender<AgentCall>,
    ) -> Self {
        Self {
            config,
            store,
            calls,
            loop_tx,
            store_incarnation: None,
        }
    }

    /// The data dir's store incarnation, reported to PD once per start (after registering):
    /// PD refusing it stops the node ([`crate::Error::StoreMismatch`]).
    #[must_use]
    pub fn with_store_incarnation(mut self, incarnation: u64) -> Self {
        self.store_incarnation = Some(incarnation);
        self
    }

    /// Runs until the task is aborted (the loop does so at shutdown).
    pub async fn run(self, transport: Arc<Transport>) {
        let interval = Duration::from_millis(self.config.pd.heartbeat_interval_ms);
        let mut agent = Running {
            registered: self.config.hosts_pd(),
            addrs: self
                .config
                .initial_cluster
                .iter()
                .map(|e| (e.node, e.addr.clone()))
                .collect(),
            config: self.config,
            store: self.store,
            sizes: BTreeMap::new(),
            size_scan: None,
            transport,
            calls: self.calls,
            loop_tx: self.loop_tx,
            pd_leader: None,
            connections: BTreeMap::new(),
            steps: JoinSet::new(),
            in_flight: BTreeMap::new(),
            samples: BTreeMap::new(),
            accepted: BTreeMap::new(),
            heartbeats_since_full: 0,
            full_report_due: true,
            node_sample: None,
            snapshot_limit: None,
            store_to_report: self.store_incarnation,
            space_alarm_reported: None,
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut register_backoff = interval;
        let mut register_next = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                Some(done) = agent.steps.join_next_with_id(), if !agent.steps.is_empty() => {
                    let mut ended: BTreeSet<ShardId> = agent.step_ended(done).into_iter().collect();
                    while let Some(done) = agent.steps.try_join_next_with_id() {
                        ended.extend(agent.step_ended(done));
                    }
                    // Report those shards through the log at once: PD sees the step done and
                    // hands out the next.
                    if agent.registered
                        && let Some(view) = agent.view().await
                    {
                        for report in agent.build_reports(view.reports, Some(&ended)).await {
                            agent.report_through_log(report).await;
                        }
                    }
                    continue;
                }
            }
            if !agent.registered {
                if Instant::now() < register_next {
                    continue;
                }
                match agent.register().await {
                    Ok(true) => {
                        info!(node = %agent.config.node_id, "registered with the placement driver")
                    }
                    Ok(false) => {
                        register_next = Instant::now() + register_backoff;
                        register_backoff = (register_backoff * 2).min(REGISTER_BACKOFF_MAX);
                        continue;
                    }
                    Err(reason) => {
                        warn!(%reason, "stopping the node");
                        let _ = agent.loop_tx.send(AgentCall::Fatal(reason)).await;
                        return;
                    }
                }
            }
            if let Some(incarnation) = agent.store_to_report {
                match agent.report_store(incarnation).await {
                    Ok(true) => agent.store_to_report = None,
                    Ok(false) => {}
                    Err(reason) => {
                        warn!(%reason, "stopping the node");
                        let _ = agent.loop_tx.send(AgentCall::Fatal(reason)).await;
                        return;
                    }
                }
            }
            if !agent.heartbeat().await {
                return;
            }
        }
    }
}

struct Running {
    config: NodeConfig,
    store: Store,
    /// The last size measured per led shard.
    sizes: BTreeMap<ShardId, MeasuredSize>,
    /// The size scan running on a blocking thread, if any (one at a time).
    size_scan: Option<tokio::task::JoinHandle<SizeScan>>,
    transport: Arc<Transport>,
    calls: mpsc::Sender<ClientCall>,
    loop_tx: mpsc::Sender<AgentCall>,
    registered: bool,
    pd_leader: Option<NodeId>,
    /// Every node address known (initial nodes, then PD's list).
    addrs: BTreeMap<NodeId, String>,
    connections: BTreeMap<String, ClientConnection>,
    /// Steps running, one per shard at most.
    steps: JoinSet<()>,
    /// The shard of each running step, by task.
    in_flight: BTreeMap<tokio::task::Id, ShardId>,
    /// Load counters at the previous report, per shard led.
    samples: BTreeMap<ShardId, Sample>,
    /// The last report PD accepted per shard led: a heartbeat carries only the reports that
    /// differ from these (all of them when a full report is due).
    accepted: BTreeMap<ShardId, ShardReport>,
    /// Heartbeats since the last full report.
    heartbeats_since_full: u32,
    /// The next heartbeat carries every report (at start, after a refused or unanswered
    /// heartbeat, after the PD leader changed).
    full_report_due: bool,
    /// The node's load counters at the previous heartbeat.
    node_sample: Option<Sample>,
    /// The snapshot bandwidth limit last passed to the loop.
    snapshot_limit: Option<u64>,
    /// The store incarnation still to report to PD this start.
    store_to_report: Option<u64>,
    /// Whether PD last recorded this node's space alarm as up (`None`: not reported yet this
    /// start).
    space_alarm_reported: Option<bool>,
}

impl Running {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.pd.request_timeout_ms)
    }

    /// Gives the transport every node address it does not have yet.
    fn add_peers(&mut self, nodes: impl Iterator<Item = (NodeId, String)>) {
        for (node, addr) in nodes {
            if node == self.config.node_id || self.addrs.get(&node) == Some(&addr) {
                continue;
            }
            info!(%node, %addr, "peer address from the placement driver");
            self.transport.add_peer(node, &addr);
            self.addrs.insert(node, addr);
        }
    }

    /// Fetches the PD leader's state: peers for the transport, and the cache of a node that
    /// does not host PD.
    async fn refresh(&mut self) {
        let request = Request::Admin(AdminRequest::PdState);
        let Some((Response::Admin(AdminResult::Pd(bytes)), leader)) =
            self.call_leader(&request).await
        else {
            return;
        };
        let Ok(state) = crate::pd_host::decode_state(&bytes) else {
            warn!("undecodable placement driver state");
            return;
        };
        let nodes: Vec<(NodeId, String)> = state
            .nodes
            .values()
            .filter(|info| info.state != NodeState::Removed)
            .filter_map(|info| Some((info.id, info.addr.parse().ok()?)))
            .collect();
        self.add_peers(nodes.into_iter());
        if !self.config.hosts_pd() {
            let call = AgentCall::PdCache {
                state: Box::new(state),
                leader,
            };
            let _ = self.loop_tx.send(call).await;
        }
    }

    async fn view(&self) -> Option<AgentView> {
        let (slot, answer) = oneshot::channel();
        self.loop_tx.send(AgentCall::View(slot)).await.ok()?;
        tokio::time::timeout(self.timeout(), answer)
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_per_second_rates() {
        let at = Instant::now();
        let before = Sample {
            writes: 10,
            reads: 100,
            at,
        };
        let after = Sample {
            writes: 30,
            reads: 100,
            at: at + Duration::from_millis(500),
        };
        assert_eq!(before.rates(after), (40, 0));
        // A counter that went back (a new replica) counts as no load, not a huge rate.
        assert_eq!(after.rates(before), (0, 0));
    }
}
