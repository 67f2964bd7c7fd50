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
//! 3. sends `Command::NodeHeartbeat`, then one `Command::ShardReport` per led shard, and
//!    executes the `StepOrder` PD answers with when its epoch is the leader's own: the step
//!    becomes the admin request a shard leader already serves (`ChangeReplica`,
//!    `TransferLeader`, `SplitShard`), sent to the local loop like a client call. A shard with a
//!    step in flight is not reported (so the step is not handed out and executed twice); when
//!    the step ends the agent reports again at once;
//! 4. gives the transport every node's address (`add_peer`), so nodes that joined are
//!    reachable: a PD host takes them from its own PD replica (in the view); another node
//!    fetches the PD leader's state (`PdState`) and keeps it as its copy for `GetShardMap` and
//!    `GetNodes` ([`AgentCall::PdCache`]).
//!
//! The PD leader is found by asking: the cached leader first, then this node (if it hosts PD),
//! the initial nodes, the nodes PD listed, and the `join` addresses, following `NotLeader`
//! hints; at most [`ATTEMPTS_MAX`] calls per PD command. The agent never blocks the loop: it
//! talks to it through bounded channels, and every call has a timeout.

use crate::config::NodeConfig;
use crate::service::ClientCall;
use ringkv_pd::{
    Command, NodeRegistration, NodeState, NodeStats, PdState, Response as PdResponse, ShardReport,
    ShardStats, Step, StepOrder,
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
                    agent.step_ended(done);
                    while let Some(done) = agent.steps.try_join_next_with_id() {
                        agent.step_ended(done);
                    }
                    // Report again at once: PD sees the step done and hands out the next.
                    if agent.registered
                        && let Some(view) = agent.view().await
                    {
                        agent.report_shards(view.reports).await;
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

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// This node's own loop.
    Local,
    /// A node whose id and address are known.
    Node(NodeId, String),
    /// A `join` address (id unknown: dialled by its host name or IP).
    Addr(String),
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

    /// Registers a joining node. `Ok(true)` once PD confirmed the configured id, `Ok(false)`
    /// to retry later, `Err` when PD assigned another id (the node must stop).
    async fn register(&mut self) -> Result<bool, String> {
        let addr = self.config.advertise_addr.clone();
        let command = Command::RegisterNodeAs {
            id: self.config.node_id,
            node: NodeRegistration {
                addr: addr.clone(),
                labels: BTreeMap::new(),
                capacity_bytes: 0,
            },
            now_ms: 0,
        };
        match self.call_pd(&command).await {
            Some(Ok(PdResponse::NodeId(id))) if id == self.config.node_id => {
                self.registered = true;
                Ok(true)
            }
            Some(Ok(PdResponse::NodeId(id))) => Err(format!(
                "PD assigned node id {} to this address ({addr}) but the config says {}",
                id.get(),
                self.config.node_id.get()
            )),
            Some(Ok(other)) => {
                warn!(?other, "unexpected answer to a registration");
                Ok(false)
            }
            // The id or address belongs to another node, or this node was removed: retrying
            // cannot help, the configuration must change.
            Some(Err(
                error @ (ringkv_pd::Error::RegistrationConflict { .. }
                | ringkv_pd::Error::NodeRemoved { .. }),
            )) => Err(format!(
                "the placement driver refused to register this node: {error}"
            )),
            Some(Err(error)) => {
                warn!(%error, "the placement driver refused the registration");
                Ok(false)
            }
            None => {
                debug!("no placement driver reachable yet; retrying the registration");
                Ok(false)
            }
        }
    }

    /// Reports the data dir's store incarnation. `Ok(true)` once PD accepted it, `Ok(false)` to
    /// retry at the next heartbeat, `Err` when PD recorded another one (the node must stop).
    async fn report_store(&mut self, incarnation: u64) -> Result<bool, String> {
        let command = Command::ReportStore {
            node: self.config.node_id,
            incarnation,
        };
        match self.call_pd(&command).await {
            Some(Ok(_)) => {
                debug!("the placement driver accepted the store incarnation");
                Ok(true)
            }
            Some(Err(error @ ringkv_pd::Error::StoreMismatch { .. })) => {
                Err(crate::Error::StoreMismatch {
                    node: self.config.node_id.get(),
                    path: self.config.data_dir.clone(),
                    reason: error.to_string(),
                }
                .to_string())
            }
            // A removed node learns it from its heartbeat.
            Some(Err(error)) => {
                debug!(%error, "the placement driver refused the store report");
                Ok(matches!(error, ringkv_pd::Error::NodeRemoved { .. }))
            }
            None => Ok(false),
        }
    }

    /// One heartbeat round. `false` when the node must stop (PD removed it).
    async fn heartbeat(&mut self) -> bool {
        let Some(view) = self.view().await else {
            return true;
        };
        if view.pd_leader.is_some() {
            self.pd_leader = view.pd_leader;
        }
        let sample = Sample {
            writes: view.writes_applied,
            reads: view.reads_served,
            at: Instant::now(),
        };
        let mut stats = view.stats;
        if let Some(previous) = self.node_sample.replace(sample) {
            (stats.writes_per_sec, stats.reads_per_sec) = previous.rates(sample);
        }
        let command = Command::NodeHeartbeat {
            node: self.config.node_id,
            stats,
            now_ms: 0,
        };
        match self.call_pd(&command).await {
            Some(Ok(PdResponse::Heartbeat {
                state,
                max_snapshot_bytes_per_sec,
            })) => {
                if state == NodeState::Removed {
                    return self.removed().await;
                }
                if self.snapshot_limit != Some(max_snapshot_bytes_per_sec) {
                    self.snapshot_limit = Some(max_snapshot_bytes_per_sec);
                    let call = AgentCall::SnapshotLimit(max_snapshot_bytes_per_sec);
                    let _ = self.loop_tx.send(call).await;
                }
            }
            Some(Err(ringkv_pd::Error::NodeRemoved { .. })) => return self.removed().await,
            Some(Err(error)) => warn!(%error, "heartbeat refused"),
            _ => debug!("heartbeat not answered"),
        }
        self.report_space_alarm().await;
        self.report_shards(view.reports).await;
        match view.pd_nodes {
            Some(nodes) => self.add_peers(nodes.into_iter()),
            None => self.refresh().await,
        }
        true
    }

    /// Tells PD when this node's low-space alarm rose or cleared (and once per start, which
    /// clears an alarm recorded before a restart), so the leaders of the shards it holds refuse
    /// writes that add data while it is up (`Command::SpaceAlarm`).
    async fn report_space_alarm(&mut self) {
        let alarm = match self.store.space(false) {
            Ok(space) if space.alarm => Some(ringkv_types::SpaceAlarm {
                free_bytes: space.free_bytes,
                reserve_bytes: space.reserve_bytes,
            }),
            Ok(_) => None,
            Err(error) => {
                warn!(%error, "cannot measure the data dir's free space");
                return;
            }
        };
        if self.space_alarm_reported == Some(alarm.is_some()) {
            return;
        }
        let command = Command::SpaceAlarm {
            node: self.config.node_id,
            alarm,
        };
        match self.call_pd(&command).await {
            Some(Ok(_)) => {
                info!(
                    up = alarm.is_some(),
                    "space alarm reported to the placement driver"
                );
                self.space_alarm_reported = Some(alarm.is_some());
            }
            Some(Err(error)) => warn!(%error, "space alarm refused"),
            None => debug!("space alarm not answered"),
        }
    }

    /// PD removed this node (`ringctl remove-node`, or given up on as dead): its replicas live
    /// elsewhere now, so it stops (exit 1, with the reason) rather than serve stale copies. A PD
    /// host keeps running, since group 0's membership is static and stopping would cost the
    /// placement driver a replica; it only warns.
    async fn removed(&mut self) -> bool {
        if self.config.hosts_pd() {
            warn!(
                "the placement driver has removed this node, but it hosts the placement driver \
                 (static membership), so it keeps running"
            );
            return true;
        }
        let reason = format!(
            "node {} was removed from the cluster by the placement driver; it no longer \
             serves. Delete its data dir before reusing the machine (under a new node id)",
            self.config.node_id.get()
        );
        warn!(%reason, "stopping the node");
        // So that a restart stops at once, and `ringctl local up` skips the node.
        if let Err(error) = crate::removed_marker::write(&self.config.data_dir, &reason) {
            warn!(%error, "cannot write the removal marker");
        }
        let _ = self.loop_tx.send(AgentCall::Fatal(reason)).await;
        false
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

    /// Reports every shard in `reports` without a step in flight and executes the orders.
    async fn report_shards(&mut self, reports: Vec<LeaderReport>) {
        let led: BTreeSet<ShardId> = reports.iter().map(|r| r.descriptor.id).collect();
        self.samples.retain(|shard, _| led.contains(shard));
        self.sizes.retain(|shard, _| led.contains(shard));
        self.measure_sizes(&reports).await;
        for report in reports {
            let shard = report.descriptor.id;
            if self.in_flight.values().any(|running| *running == shard) {
                continue;
            }
            let sample = Sample {
                writes: report.writes_applied,
                reads: report.reads_served,
                at: Instant::now(),
            };
            let mut stats = ShardStats::default();
            if let Some(previous) = self.samples.insert(shard, sample) {
                (stats.writes_per_sec, stats.reads_per_sec) = previous.rates(sample);
            }
            if let Some(measured) = self
                .sizes
                .get(&shard)
                .filter(|m| m.arc == report.descriptor.arc)
            {
                stats.size_bytes = measured.size.bytes;
                stats.keys = measured.size.keys;
            }
            let command = Command::ShardReport(ShardReport {
                descriptor: report.descriptor.clone(),
                leader: self.config.node_id,
                stats,
                caught_up_learners: report.caught_up_learners,
                split_hint: None,
                now_ms: 0,
            });
            match self.call_pd(&command).await {
                Some(Ok(PdResponse::ShardReport {
                    order: Some(order), ..
                })) => {
                    if order.epoch == report.descriptor.epoch && order.shard == shard {
                        self.execute(order, &report.descriptor);
                    } else {
                        debug!(%shard, ?order, "order for another epoch; reporting again later");
                    }
                }
                Some(Err(error)) => debug!(%shard, %error, "shard report refused"),
                _ => {}
            }
        }
    }

    /// Collects a finished size scan, then starts one for the led shard that most needs it (never
    /// measured, arc changed, or measured longest ago beyond the re-measure period).
    async fn measure_sizes(&mut self, reports: &[LeaderReport]) {
        if let Some(scan) = self.size_scan.take_if(|scan| scan.is_finished()) {
            match scan.await {
                Ok((shard, arc, Ok(size))) => {
                    let at = Instant::now();
                    self.sizes.insert(shard, MeasuredSize { arc, at, size });
                }
                Ok((shard, _, Err(error))) => {
                    warn!(%shard, %error, "measuring the shard's size failed")
                }
                Err(error) => warn!(%error, "the size scan task failed"),
            }
        }
        if self.size_scan.is_some() {
            return;
        }
        let period =
            Duration::from_millis(self.config.pd.heartbeat_interval_ms) * SIZE_EVERY_HEARTBEATS;
        let due = reports
            .iter()
            .filter_map(|report| {
                let descriptor = &report.descriptor;
                match self.sizes.get(&descriptor.id) {
                    None => Some((None, descriptor)),
                    Some(m) if m.arc != descriptor.arc => Some((None, descriptor)),
                    Some(m) if m.at.elapsed() >= period => Some((Some(m.at), descriptor)),
                    Some(_) => None,
                }
            })
            .min_by_key(|(at, descriptor)| (*at, descriptor.id));
        if let Some((_, descriptor)) = due {
            let (shard, arc, store) = (descriptor.id, descriptor.arc, self.store.clone());
            self.size_scan = Some(tokio::task::spawn_blocking(move || {
                (shard, arc, store.data_size(arc).map_err(|e| e.to_string()))
            }));
        }
    }

    /// Starts carrying out `order` on the local leader of its shard.
    fn execute(&mut self, order: StepOrder, descriptor: &ShardDescriptor) {
        let shard = order.shard;
        let epoch = descriptor.epoch;
        let me = self.config.node_id;
        let request = match order.step {
            // The node picks the member id itself (`member_id(node, conf_ver + 1)`, fresh in the
            // shard); PD's incarnation is not used. PD sees the step done when the node
            // appears as a learner.
            Step::AddLearner { node, .. } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::AddLearner { node },
            },
            Step::PromoteLearner { node } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::Promote { node },
            },
            Step::RemoveReplica { node } if node == me => {
                // A leader cannot remove itself: hand the leadership to another voter first.
                let Some(to) = descriptor
                    .replicas
                    .iter()
                    .find(|r| r.node != me && r.role == ReplicaRole::Voter)
                    .map(|r| r.node)
                else {
                    return;
                };
                AdminRequest::TransferLeader { shard, to }
            }
            Step::RemoveReplica { node } => AdminRequest::ChangeReplica {
                shard,
                epoch,
                change: ReplicaChange::Remove { node },
            },
            Step::TransferLeader { to } => AdminRequest::TransferLeader { shard, to },
            Step::Split { new_shard, at } => AdminRequest::SplitShard {
                shard,
                epoch,
                new_shard,
                at: Some(at),
            },
        };
        info!(%shard, operator = %order.operator, step = ?order.step, "executing a PD order");
        let calls = self.calls.clone();
        let task = self.steps.spawn(async move {
            let (slot, answer) = oneshot::channel();
            let call = ClientCall {
                request: Request::Admin(request),
                reply: slot,
            };
            if calls.send(call).await.is_err() {
                return;
            }
            match tokio::time::timeout(STEP_TIMEOUT, answer).await {
                Ok(Ok(Response::Admin(result))) => debug!(%shard, ?result, "PD order done"),
                Ok(Ok(Response::Error(error))) => {
                    info!(%shard, step = ?order.step, %error, "PD order not carried out")
                }
                _ => info!(%shard, step = ?order.step, "PD order without an answer"),
            }
        });
        self.in_flight.insert(task.id(), shard);
    }

    /// Forgets a step that ended (or failed) so its shard is reported again.
    fn step_ended(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(error) => error.id(),
        };
        self.in_flight.remove(&id);
    }

    /// Sends a PD command to the PD leader; `None` when no PD answered.
    async fn call_pd(
        &mut self,
        command: &Command,
    ) -> Option<std::result::Result<PdResponse, ringkv_pd::Error>> {
        let bytes = postcard::to_stdvec(command).ok()?;
        let request = Request::Admin(AdminRequest::Pd {
            command: bytes.into(),
        });
        match self.call_leader(&request).await? {
            (Response::Admin(AdminResult::Pd(bytes)), _) => postcard::from_bytes(&bytes).ok(),
            (other, _) => {
                debug!(?other, "unexpected answer to a PD command");
                None
            }
        }
    }

    /// Sends `request` to the PD leader, looking for it; returns the answer and who gave it.
    async fn call_leader(&mut self, request: &Request) -> Option<(Response, Option<NodeId>)> {
        let mut tried: Vec<Target> = Vec::new();
        let mut next = self.pd_leader.and_then(|leader| self.target_of(leader));
        for _ in 0..ATTEMPTS_MAX {
            let target = match next.take() {
                Some(target) => target,
                None => self
                    .candidates()
                    .into_iter()
                    .find(|target| !tried.contains(target))?,
            };
            tried.push(target.clone());
            let Some(response) = self.send(target.clone(), request).await else {
                if self.pd_leader.is_some() && self.pd_leader == self.node_of(target.clone()) {
                    self.pd_leader = None;
                }
                continue;
            };
            match response {
                Response::Error(WireError::NotLeader { leader_hint, .. }) => {
                    if let Some(hint) = leader_hint
                        && let Some(target) = self.target_of(hint)
                        && !tried.contains(&target)
                    {
                        next = Some(target);
                    }
                }
                Response::Error(WireError::Busy | WireError::Unavailable | WireError::Timeout) => {}
                response => {
                    let leader = self.node_of(target);
                    if leader.is_some() {
                        self.pd_leader = leader;
                    }
                    return Some((response, leader));
                }
            }
        }
        None
    }

    fn node_of(&self, target: Target) -> Option<NodeId> {
        match target {
            Target::Local => Some(self.config.node_id),
            Target::Node(node, _) => Some(node),
            Target::Addr(addr) => self
                .addrs
                .iter()
                .find(|(_, known)| **known == addr)
                .map(|(node, _)| *node),
        }
    }

    fn target_of(&self, node: NodeId) -> Option<Target> {
        if node == self.config.node_id {
            return Some(Target::Local);
        }
        self.addrs
            .get(&node)
            .map(|addr| Target::Node(node, addr.clone()))
    }

    /// Where to look for the PD leader, in order: this node if it hosts PD, the initial nodes,
    /// every node PD listed, the `join` addresses.
    fn candidates(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.config.hosts_pd() {
            targets.push(Target::Local);
        }
        for endpoint in &self.config.initial_cluster {
            if endpoint.node != self.config.node_id {
                targets.push(Target::Node(endpoint.node, endpoint.addr.clone()));
            }
        }
        for (node, addr) in &self.addrs {
            let target = Target::Node(*node, addr.clone());
            if *node != self.config.node_id && !targets.contains(&target) {
                targets.push(target);
            }
        }
        for addr in &self.config.join {
            if !self.addrs.values().any(|known| known == addr) {
                targets.push(Target::Addr(addr.clone()));
            }
        }
        targets
    }

    async fn send(&mut self, target: Target, request: &Request) -> Option<Response> {
        let timeout = self.timeout();
        let addr = match target {
            Target::Local => {
                let (slot, answer) = oneshot::channel();
                let call = ClientCall {
                    request: request.clone(),
                    reply: slot,
                };
                self.calls.try_send(call).ok()?;
                return tokio::time::timeout(timeout, answer).await.ok()?.ok();
            }
            Target::Node(_, ref addr) | Target::Addr(ref addr) => addr.clone(),
        };
        let connection = match self.connections.get(&addr) {
            Some(connection) => connection.clone(),
            None => {
                let connecting = async {
                    match &target {
                        Target::Node(node, addr) => {
                            self.transport.connect_client(*node, addr).await
                        }
                        _ => self.transport.connect_client_addr(&addr).await,
                    }
                };
                let connection = match tokio::time::timeout(timeout, connecting).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => {
                        debug!(%addr, %error, "cannot reach a node");
                        return None;
                    }
                    Err(_) => return None,
                };
                self.connections.insert(addr.clone(), connection.clone());
                connection
            }
        };
        match connection.call(request, timeout).await {
            Ok(response) => Some(response),
            Err(error) => {
                debug!(%addr, %error, "call failed");
                self.connections.remove(&addr);
                None
            }
        }
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
