//! The event loop: one task owns every local group.
//!
//! Each turn it takes what arrived (Raft batches, client calls, ticks, completed group
//! commits), feeds the groups, then for every group with work takes one `Ready` and:
//!
//! 1. queues `messages` for their peers (sent once per peer at the end of the turn);
//! 2. adds entries, hard state and snapshot to the turn's one `WriteBatchBuilder`;
//! 3. applies `committed_entries` in one `Store::apply` per group (they are durable already)
//!    and answers the writes they complete;
//! 4. remembers `number` and `persisted_messages` with the batch that makes the Ready durable.
//!
//! The batch is submitted to the group-commit writer (one fsync) and the loop goes on with the
//! next turn while it syncs; up to `storage.writer_queue_depth` batches are in flight. When a
//! batch is durable, the loop calls `on_persisted` for its Readies, in order, and only then sends
//! their `persisted_messages`. A helper thread waits on the tickets and forwards completions.
//!
//! Membership (member ids on messages, replicas created and removed, `ChangeReplica`,
//! `TransferLeader`) lives in `membership.rs`, splits in `split.rs`, snapshots in `snapshot.rs`.
//!
//! Groups are only polled for a Ready when something touched them (a message, a proposal, a
//! read, a tick, a completed commit), so an idle group costs one `tick` per tick interval.

mod clock;
mod membership;
mod pd;
mod requests;
mod sessions;
mod snapshot;
mod split;
mod throttle;

use crate::agent::{Agent, AgentCall, AgentView, LeaderReport};
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::log_command::LogCommand;
use crate::node::LocalState;
use crate::pd_host::META_PD_STATE;
use crate::replica_meta;
use crate::service::ClientCall;
use ringkv_raft::{Ready, Role};
use ringkv_storage::{
    AppliedState, Command, Durable, RemovalHandle, Store, Ticket, WriteBatchBuilder,
};
use ringkv_transport::{Inbound, Transport};
use ringkv_types::raft::{EntryPayload, Message, MessageBody, SnapshotMeta};
use ringkv_types::{LogIndex, NodeId, RaftBatch, Response, ShardId, ShardMap, member_node};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use requests::{fail_reads, lost_write, serve_reads, write_response};

/// The `kind` label of a PD operator.
/// Every operator kind, for metrics that pre-create a series per kind.
const OPERATOR_KINDS: [ringkv_pd::OperatorKind; 7] = [
    ringkv_pd::OperatorKind::Repair,
    ringkv_pd::OperatorKind::Drain,
    ringkv_pd::OperatorKind::Split,
    ringkv_pd::OperatorKind::BalanceReplicas,
    ringkv_pd::OperatorKind::BalanceLeaders,
    ringkv_pd::OperatorKind::Admin,
    ringkv_pd::OperatorKind::Rollback,
];

fn operator_kind_label(kind: ringkv_pd::OperatorKind) -> &'static str {
    use ringkv_pd::OperatorKind as K;
    match kind {
        K::Repair => "repair",
        K::Drain => "drain",
        K::Split => "split",
        K::BalanceReplicas => "balance_replicas",
        K::BalanceLeaders => "balance_leaders",
        K::Admin => "admin",
        K::Rollback => "rollback",
    }
}
use snapshot::SnapshotEvent;

/// The receivers the loop waits on.
pub struct LoopChannels {
    /// Raft batches and snapshots from peers.
    pub inbound: Inbound,
    /// Client calls from the service.
    pub calls: mpsc::Receiver<ClientCall>,
    /// Fires (or is dropped) to stop the node.
    pub shutdown: oneshot::Receiver<()>,
    /// Calls from the node agent.
    pub agent: mpsc::Receiver<AgentCall>,
}

/// Readies made durable by one submitted batch: `(group, ready number, persisted messages)`.
type AfterPersist = Vec<(ShardId, u64, Vec<Message>)>;

/// The state the loop owns.
pub struct EventLoop {
    config: NodeConfig,
    store: Store,
    transport: Arc<Transport>,
    map: ShardMap,
    groups: BTreeMap<ShardId, Group>,
    dirty: BTreeSet<ShardId>,
    outbox: BTreeMap<NodeId, Vec<Message>>,
    batch: WriteBatchBuilder,
    batch_after: AfterPersist,
    in_flight: VecDeque<AfterPersist>,
    next_read_context: u64,
    started: Instant,
    /// Snapshot transfers in flight; aborted at shutdown (they hold the transport).
    snapshot_tasks: tokio::task::JoinSet<()>,
    /// The highest removed Raft member id per shard: messages to it or older are ignored.
    tombstones: BTreeMap<ShardId, NodeId>,
    /// Replica removals running in the background.
    removals: Vec<RemovalHandle>,
    /// Removed replicas whose data removal waits for batch `.0` to be durable (it may hold
    /// their last log writes).
    removals_waiting: Vec<(u64, ShardId, ringkv_types::ring::Arc)>,
    /// Batches submitted so far.
    submitted: u64,
    /// Batches durable so far.
    durable_batches: u64,
    /// The placement driver replica and service (nodes of `initial_cluster`).
    pd: Option<pd::PdHost>,
    /// The PD leader's state as last fetched by the agent (nodes that do not host PD).
    pd_cache: Option<ringkv_pd::PdState>,
    /// Resolves callers; gets the users and keys of every new PD state.
    auth: Option<Arc<crate::auth::Authenticator>>,
    /// When this node (as PD leader) last proposed a first signing key.
    signing_key_proposed: Option<std::time::Instant>,
    /// The PD leader the agent last found (nodes that do not host PD).
    pd_leader_hint: Option<NodeId>,
    /// The node agent, started by `run` (it needs the shared transport).
    agent: Option<Agent>,
    /// Outgoing snapshot bandwidth, bytes per second (0 = unlimited), from PD's heartbeat
    /// answers.
    snapshot_bytes_per_sec: u64,
    /// Paces every snapshot this node sends at `snapshot_bytes_per_sec` together.
    snapshot_limiter: Arc<throttle::Limiter>,
    /// Slots for snapshots received at once (`storage.snapshots_inbound_max`).
    inbound_snapshots: Arc<tokio::sync::Semaphore>,
    /// Slots for snapshots sent at once (`storage.snapshots_outbound_max`).
    outbound_snapshots: Arc<tokio::sync::Semaphore>,
    /// Shards with a snapshot being received: a second one for the same shard is refused.
    receiving: std::collections::HashSet<ShardId>,
    /// Where the loop publishes its health once per tick (`/readyz`).
    health: Option<crate::health::HealthPublisher>,
    /// When the agent last brought PD's state (nodes that do not host PD).
    pd_cache_at: Option<Instant>,
    /// Counters, histograms and per-tick gauges (`/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Ticks owed to the groups by the monotonic clock (see `clock.rs`).
    clock: clock::TickClock,
    /// Rate limit of the "invalid Raft message" log line: when it was last written, and how
    /// many invalid messages were dropped since without a line.
    invalid_logged_at: Option<Instant>,
    invalid_unlogged: u64,
}

/// At most one "invalid Raft message" log line per this interval (the counter counts all).
const INVALID_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Receivers the loop owns besides [`LoopChannels`].
struct Internal {
    durable: mpsc::Receiver<ringkv_storage::Result<Durable>>,
    tickets: Option<std::sync::mpsc::SyncSender<Ticket>>,
    waiter: Option<std::thread::JoinHandle<()>>,
    snapshot_events: mpsc::Receiver<SnapshotEvent>,
    snapshot_events_tx: mpsc::Sender<SnapshotEvent>,
}

fn reply(slot: oneshot::Sender<Response>, response: Response) {
    // The client may have given up (timeout); nothing to do then.
    let _ = slot.send(response);
}

impl EventLoop {
    /// A loop over `groups`.
    pub fn new(
        config: NodeConfig,
        store: Store,
        transport: Transport,
        map: ShardMap,
        groups: BTreeMap<ShardId, Group>,
        local: LocalState,
        agent: Agent,
    ) -> Self {
        let dirty = groups.keys().copied().collect();
        let inbound_snapshots = Arc::new(tokio::sync::Semaphore::new(
            config.storage.snapshots_inbound_max,
        ));
        let outbound_snapshots = Arc::new(tokio::sync::Semaphore::new(
            config.storage.snapshots_outbound_max,
        ));
        let config_data_dir = config.data_dir.clone();
        let clock = clock::TickClock::new(
            tokio::time::Instant::now(),
            config.tick(),
            config.raft.election_timeout_ticks,
        );
        Self {
            config,
            store,
            transport: Arc::new(transport),
            map,
            groups,
            dirty,
            outbox: BTreeMap::new(),
            batch: WriteBatchBuilder::new(),
            batch_after: Vec::new(),
            in_flight: VecDeque::new(),
            next_read_context: 1,
            started: Instant::now(),
            snapshot_tasks: tokio::task::JoinSet::new(),
            tombstones: local.tombstones,
            removals: local.removals,
            removals_waiting: Vec::new(),
            submitted: 0,
            durable_batches: 0,
            pd: local.pd_state.map(pd::PdHost::new),
            pd_cache: None,
            auth: None,
            signing_key_proposed: None,
            pd_leader_hint: None,
            agent: Some(agent),
            snapshot_bytes_per_sec: 0,
            snapshot_limiter: throttle::Limiter::new(),
            inbound_snapshots,
            outbound_snapshots,
            receiving: std::collections::HashSet::new(),
            health: None,
            pd_cache_at: None,
            metrics: Arc::new(crate::metrics::Metrics::new(&config_data_dir)),
            clock,
            invalid_logged_at: None,
            invalid_unlogged: 0,
        }
    }

    /// Records into `metrics` (shared with the HTTP server), and lets it read the transport.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics.set_transport(Arc::downgrade(&self.transport));
        self.metrics = metrics;
        self
    }

    /// Sets the per-tick gauges: replicas by role, commit and apply lag, PD's operators.
    fn update_gauges(&self) {
        let metrics = &self.metrics;
        let (mut leaders, mut followers, mut candidates, mut learners) = (0, 0, 0, 0);
        let (mut commit_lag, mut apply_lag) = (0u64, 0u64);
        for group in self.groups.values() {
            if !group.initialized {
                continue;
            }
            let is_learner =
                group.descriptor.replicas.iter().any(|r| {
                    r.member == group.member && r.role == ringkv_types::ReplicaRole::Learner
                });
            match group.role {
                Role::Leader => leaders += 1,
                Role::Follower if is_learner => learners += 1,
                Role::Follower => followers += 1,
                _ => candidates += 1,
            }
            let status = group.raw.status();
            commit_lag += status.last_index.0.saturating_sub(status.committed.0);
            apply_lag += status.committed.0.saturating_sub(group.applied.0);
        }
        for (role, count) in [
            ("leader", leaders),
            ("follower", followers),
            ("candidate", candidates),
            ("learner", learners),
        ] {
            metrics
                .raft_shards
                .get_or_create(&[("role", role)])
                .set(count);
        }
        metrics
            .raft_commit_lag
            .set(i64::try_from(commit_lag).unwrap_or(i64::MAX));
        metrics
            .raft_apply_lag
            .set(i64::try_from(apply_lag).unwrap_or(i64::MAX));
        if let Ok(space) = self.store.space(false) {
            metrics.storage_space_alarm.set(i64::from(space.alarm));
            metrics
                .storage_free_bytes
                .set(i64::try_from(space.free_bytes).unwrap_or(i64::MAX));
        }
        if let Some(state) = self.pd_view() {
            for kind in OPERATOR_KINDS {
                for end in ringkv_pd::OperatorEnd::ALL {
                    let count = state.operator_counts.of(kind, end);
                    metrics
                        .pd_operators
                        .get_or_create(&[
                            ("kind", operator_kind_label(kind)),
                            ("result", end.label()),
                        ])
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
            let mut in_flight: BTreeMap<&'static str, i64> = OPERATOR_KINDS
                .into_iter()
                .map(|kind| (operator_kind_label(kind), 0))
                .collect();
            for operator in state.operators.values() {
                *in_flight
                    .entry(operator_kind_label(operator.kind))
                    .or_default() += 1;
            }
            for (kind, count) in in_flight {
                metrics
                    .pd_operators_in_flight
                    .get_or_create(&[("kind", kind)])
                    .set(count);
            }
            for info in state.nodes.values() {
                if info.state == ringkv_pd::NodeState::Removed {
                    continue;
                }
                let node = [("node", info.id.get().to_string())];
                let stats = &info.stats;
                metrics
                    .pd_node_replicas
                    .get_or_create(&node)
                    .set(i64::try_from(stats.replicas).unwrap_or(i64::MAX));
                metrics
                    .pd_node_leaders
                    .get_or_create(&node)
                    .set(i64::try_from(stats.leaders).unwrap_or(i64::MAX));
            }
        }
    }

    /// Sets the authenticator that gets the users and keys of every new PD state.
    pub fn set_authenticator(&mut self, auth: Arc<crate::auth::Authenticator>) {
        self.auth = Some(auth);
    }

    /// Publishes the loop's health to `publisher` once per tick.
    pub fn with_health(mut self, publisher: crate::health::HealthPublisher) -> Self {
        self.health = Some(publisher);
        self
    }

    /// The health snapshot `/readyz` reads.
    fn health_snapshot(&self) -> crate::health::HealthSnapshot {
        let me = self.config.node_id;
        let joined = self.pd_view().is_some_and(|state| {
            state
                .nodes
                .get(&me)
                .is_some_and(|info| info.state != ringkv_pd::NodeState::Removed)
        });
        let map_fresh = match &self.pd {
            Some(_) => self.pd_leader().is_some(),
            None => {
                let pd = &self.config.pd;
                let window = std::time::Duration::from_millis(
                    3 * pd.heartbeat_interval_ms + pd.request_timeout_ms,
                );
                self.pd_cache_at.is_some_and(|at| at.elapsed() <= window)
            }
        };
        let mut snapshot = crate::health::HealthSnapshot {
            started: true,
            joined,
            map_fresh,
            pd_leader: self.pd_leader().map(NodeId::get),
            ..crate::health::HealthSnapshot::default()
        };
        for (shard, group) in &self.groups {
            if !group.initialized {
                continue;
            }
            snapshot.groups += 1;
            if group.raw.is_leader() {
                snapshot.leaders += 1;
            }
            if group.leader_hint().is_none() {
                snapshot.leaderless_count += 1;
                if snapshot.leaderless.len() < crate::health::LEADERLESS_LISTED_MAX {
                    snapshot.leaderless.push(shard.get());
                }
            }
        }
        snapshot
    }

    /// Runs until shutdown or a fatal error, then stops cleanly: pending batches are made
    /// durable, the store is flushed and the transport closed.
    ///
    /// # Errors
    /// A fatal storage error (the node must exit non-zero), or a Raft storage read failure.
    pub async fn run(mut self, mut channels: LoopChannels) -> Result<()> {
        let depth = self.config.storage.writer_queue_depth;
        let (tickets, ticket_rx) = std::sync::mpsc::sync_channel::<Ticket>(depth + 1);
        let (durable_tx, durable) = mpsc::channel(depth + 1);
        let waiter = std::thread::Builder::new()
            .name("ringkv-ticket-waiter".into())
            .spawn(move || {
                while let Ok(ticket) = ticket_rx.recv() {
                    if durable_tx.blocking_send(ticket.wait()).is_err() {
                        break;
                    }
                }
            })?;
        let (snapshot_events_tx, snapshot_events) = mpsc::channel(64);
        let mut internal = Internal {
            durable,
            tickets: Some(tickets),
            waiter: Some(waiter),
            snapshot_events,
            snapshot_events_tx,
        };
        let mut agent_task = tokio::task::JoinSet::new();
        if let Some(agent) = self.agent.take() {
            agent_task.spawn(agent.run(self.transport.clone()));
        }
        let result = self.main_loop(&mut channels, &mut internal).await;
        // The agent holds the transport; it must be gone before the transport shuts down.
        agent_task.shutdown().await;
        let finished = match &result {
            Ok(()) => self.finish(&mut internal).await,
            Err(error) => {
                error!(%error, "stopping the node");
                Ok(())
            }
        };
        internal.tickets.take();
        if let Some(waiter) = internal.waiter.take() {
            // The waiter ends once the ticket channel is closed and its last ticket is done.
            let _ = tokio::task::spawn_blocking(move || waiter.join()).await;
        }
        self.snapshot_tasks.shutdown().await;
        let transport = self.transport;
        drop(self.groups);
        match Arc::try_unwrap(transport) {
            Ok(transport) => transport.shutdown().await,
            Err(transport) => warn!(
                holders = Arc::strong_count(&transport),
                "transport still shared at shutdown; dropping it"
            ),
        }
        result.and(finished)
    }

    async fn main_loop(
        &mut self,
        channels: &mut LoopChannels,
        internal: &mut Internal,
    ) -> Result<()> {
        let mut ticker = tokio::time::interval(self.config.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut channels.shutdown => {
                    info!("shutting down");
                    return Ok(());
                }
                Some(result) = internal.durable.recv() => self.on_durable(result)?,
                _ = ticker.tick() => self.tick_all()?,
                Some(batch) = channels.inbound.raft.recv() => self.step_batch(batch)?,
                Some(call) = channels.calls.recv() => self.handle_call(call)?,
                Some(event) = internal.snapshot_events.recv() => self.on_snapshot_event(event)?,
                Some(call) = channels.agent.recv() => self.on_agent_call(call)?,
                Some(incoming) = channels.inbound.snapshots.recv() => {
                    self.receive_snapshot(incoming, internal.snapshot_events_tx.clone());
                }
                () = std::future::ready(()), if !self.dirty.is_empty() => {}
            }
            self.drain(channels, internal)?;
            self.end_turn(internal)?;
        }
    }

    /// Takes what else is waiting, up to the per-turn bound.
    fn drain(&mut self, channels: &mut LoopChannels, internal: &mut Internal) -> Result<()> {
        while let Ok(result) = internal.durable.try_recv() {
            self.on_durable(result)?;
        }
        let mut budget = self.config.limits.turn_inputs_max;
        while budget > 0 {
            let mut progressed = false;
            if let Ok(batch) = channels.inbound.raft.try_recv() {
                self.step_batch(batch)?;
                progressed = true;
                budget -= 1;
            }
            if budget > 0
                && let Ok(call) = channels.calls.try_recv()
            {
                self.handle_call(call)?;
                progressed = true;
                budget -= 1;
            }
            if !progressed {
                break;
            }
        }
        Ok(())
    }

    fn end_turn(&mut self, internal: &mut Internal) -> Result<()> {
        self.issue_reads();
        // A few rounds so that work one Ready creates (more committed entries) is done now.
        for _ in 0..4 {
            if self.dirty.is_empty() {
                break;
            }
            self.process_readies(internal)?;
        }
        self.flush_outbox();
        self.maybe_submit(internal)?;
        self.start_removals()
    }

    /// Gives every group the ticks that fell due on the monotonic clock since the last call
    /// (see `clock.rs`). Called on every timer wake-up and before every client call, so a
    /// lease is never judged by a clock that lags real time (after a pause of the process).
    fn advance_clock(&mut self) -> Result<()> {
        let due = self.clock.take_due(tokio::time::Instant::now());
        if due == 0 {
            return Ok(());
        }
        for (shard, group) in &mut self.groups {
            for _ in 0..due {
                group.raw.tick()?;
            }
            if group.raw.has_ready() {
                self.dirty.insert(*shard);
            }
        }
        Ok(())
    }

    /// The timer's turn: the groups' ticks, then the loop's periodic work.
    fn tick_all(&mut self) -> Result<()> {
        self.advance_clock()?;
        self.tick_transfers();
        self.reap_removals();
        if let Some(publisher) = &self.health {
            publisher.publish(self.health_snapshot());
        }
        self.update_gauges();
        self.propose_expiries()?;
        self.pd_tick()
    }

    fn on_agent_call(&mut self, call: AgentCall) -> Result<()> {
        match call {
            AgentCall::View(slot) => {
                let _ = slot.send(self.agent_view());
            }
            AgentCall::PdCache { state, leader } => self.set_pd_cache(*state, leader),
            AgentCall::Fatal(reason) => return Err(Error::Fatal { reason }),
            AgentCall::SnapshotLimit(rate) => {
                self.snapshot_bytes_per_sec = rate;
                self.snapshot_limiter.set_rate(rate);
            }
        }
        Ok(())
    }

    /// What the agent reports to PD: node stats, and every shard this node leads whose last
    /// membership change or split is applied.
    fn agent_view(&self) -> AgentView {
        let mut view = AgentView {
            pd_leader: self.pd_leader(),
            pd_nodes: self.pd.as_ref().map(|_| {
                self.known_nodes()
                    .into_iter()
                    .map(|known| (known.node, known.addr))
                    .collect()
            }),
            ..AgentView::default()
        };
        for (shard, group) in &self.groups {
            if *shard == ShardId::PD || !group.initialized {
                continue;
            }
            view.stats.replicas += 1;
            if !group.raw.is_leader() {
                continue;
            }
            view.stats.leaders += 1;
            view.writes_applied += group.writes_applied;
            view.reads_served += group.reads_served;
            let status = group.raw.status();
            let busy = group.pending_change.is_some()
                || group.pending_split.is_some()
                || status.conf_index > group.applied;
            if busy {
                continue;
            }
            let caught_up_learners = group
                .descriptor
                .replicas
                .iter()
                .filter(|r| r.role == ringkv_types::ReplicaRole::Learner)
                .filter(|r| {
                    group
                        .raw
                        .match_index(r.member)
                        .is_some_and(|matched| matched >= status.committed)
                })
                .map(|r| r.node)
                .collect();
            view.reports.push(LeaderReport {
                descriptor: group.descriptor.clone(),
                caught_up_learners,
                writes_applied: group.writes_applied,
                reads_served: group.reads_served,
            });
        }
        view
    }

    fn step_batch(&mut self, batch: RaftBatch) -> Result<()> {
        for message in batch.messages {
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                // Snapshots arrive with their data on a snapshot stream, never in a batch.
                continue;
            }
            if !self.valid_message(&message) {
                continue;
            }
            if self.handle_removed_member(&message)? {
                self.metrics.raft_dropped_messages.inc();
                continue;
            }
            if !self.accept_message(&message)? {
                self.metrics.raft_dropped_messages.inc();
                continue;
            }
            let shard = message.group;
            if let Some(group) = self.groups.get_mut(&shard) {
                group.raw.step(message)?;
                self.dirty.insert(shard);
            } else {
                self.metrics.raft_dropped_messages.inc();
            }
        }
        Ok(())
    }

    /// The node boundary's check of a peer's Raft message ([`ringkv_raft::validate`]): a
    /// malformed one is dropped, counted (`ringkv_raft_invalid_messages_total`) and logged at
    /// most once per [`INVALID_LOG_INTERVAL`], so a hostile peer cannot flood the log either.
    pub(crate) fn valid_message(&mut self, message: &ringkv_types::raft::Message) -> bool {
        let Err(reason) = ringkv_raft::validate::validate(message) else {
            return true;
        };
        self.metrics.raft_invalid_messages.inc();
        let now = Instant::now();
        let due = self
            .invalid_logged_at
            .is_none_or(|at| now.duration_since(at) >= INVALID_LOG_INTERVAL);
        if due {
            warn!(
                from = %message.from,
                shard = %message.group,
                kind = message.body.kind(),
                %reason,
                suppressed = self.invalid_unlogged,
                "dropping an invalid Raft message"
            );
            self.invalid_logged_at = Some(now);
            self.invalid_unlogged = 0;
        } else {
            self.invalid_unlogged += 1;
        }
        false
    }

    /// Sends what the turn queued: one batch per peer.
    fn flush_outbox(&mut self) {
        for (to, messages) in std::mem::take(&mut self.outbox) {
            let count = messages.len();
            match self.transport.send(to, RaftBatch::new(messages)) {
                ringkv_transport::SendOutcome::Queued => {}
                outcome => debug!(%to, count, ?outcome, "raft batch not queued"),
            }
        }
    }

    fn route(&mut self, message: Message, snapshots: &mut Vec<Message>) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            snapshots.push(message);
        } else {
            // The core addresses Raft members; the transport addresses nodes.
            self.outbox
                .entry(member_node(message.to))
                .or_default()
                .push(message);
        }
    }

    fn process_readies(&mut self, internal: &mut Internal) -> Result<()> {
        let dirty = std::mem::take(&mut self.dirty);
        for shard in dirty {
            let Some(group) = self.groups.get_mut(&shard) else {
                continue;
            };
            if !group.raw.has_ready() {
                continue;
            }
            let ready = group.raw.ready()?;
            self.handle_ready(shard, ready, internal)?;
            if self.groups.get(&shard).is_some_and(|g| g.raw.has_ready()) {
                self.dirty.insert(shard);
            }
        }
        Ok(())
    }

    fn handle_ready(
        &mut self,
        shard: ShardId,
        ready: Ready,
        internal: &mut Internal,
    ) -> Result<()> {
        let Ready {
            number,
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
        } = ready;
        if let Some(soft) = soft_state
            && let Some(group) = self.groups.get_mut(&shard)
        {
            if soft.role == Role::Leader && group.role != Role::Leader {
                info!(%shard, term = %group.raw.term(), "became leader");
            }
            if soft.leader != group.leader && soft.leader.is_some() {
                self.metrics.raft_leader_changes.inc();
            }
            if soft.role == Role::Candidate && group.role != Role::Candidate {
                self.metrics.raft_campaigns.inc();
            }
            group.leader = soft.leader;
            group.role = soft.role;
            if soft.role != Role::Leader {
                fail_reads(group);
                membership::fail_change(group);
            }
            membership::answer_transfers(group);
        }
        let mut snapshots = Vec::new();
        for message in messages {
            self.route(message, &mut snapshots);
        }
        let needs_persist = snapshot.is_some() || !entries.is_empty() || hard_state.is_some();
        if let Some(snapshot) = snapshot {
            // IMPORTANT: the snapshot's data was validated when it arrived and installs in the
            // same atomic batch as the new compaction point; without it we refuse to go on.
            let prepared = self
                .groups
                .get_mut(&shard)
                .and_then(|g| g.pending_install.take());
            match prepared {
                Some(prepared) if prepared.meta().index == snapshot.meta.index => {
                    self.batch.install_snapshot(prepared);
                    // IMPORTANT: the descriptor the snapshot carries is saved in the same batch.
                    let descriptor = self
                        .groups
                        .get_mut(&shard)
                        .and_then(|g| g.pending_descriptor.take());
                    if let Some(descriptor) = descriptor {
                        self.batch.set_meta(
                            shard,
                            &replica_meta::descriptor_key(shard),
                            replica_meta::encode_descriptor(&descriptor)?,
                        );
                        if let Some(group) = self.groups.get_mut(&shard) {
                            group.descriptor = descriptor;
                            group.initialized = true;
                        }
                    }
                    if shard == ShardId::PD
                        && let Some(host) = self.pd.as_mut()
                        && let Some(state) = host.pending_install.take()
                    {
                        // IMPORTANT: the PD state the snapshot carries is saved in the same
                        // batch as the install (it matches the snapshot's applied index).
                        self.batch.set_meta(
                            shard,
                            META_PD_STATE,
                            crate::pd_host::encode_state(&state)?,
                        );
                        self.map = state.shard_map.clone();
                        host.state = state;
                    }
                }
                _ => {
                    return Err(Error::Corrupt {
                        what: "snapshot install",
                        reason: format!(
                            "shard {shard}: Ready holds snapshot at {} without its data",
                            snapshot.meta.index
                        ),
                    });
                }
            }
            if let Some(group) = self.groups.get_mut(&shard) {
                // The data becomes readable when the batch is durable (see `on_durable`).
                group.installing = Some((number, snapshot.meta.index));
                group.conf_saved = true;
            }
        } else if let Some(group) = self.groups.get_mut(&shard) {
            // The core refused the snapshot we stepped (it was stale): nothing to install.
            group.pending_install = None;
            group.pending_descriptor = None;
            if shard == ShardId::PD
                && let Some(host) = self.pd.as_mut()
            {
                host.pending_install = None;
            }
        }
        // IMPORTANT: entries and hard state go into the batch whose durability gates
        // `on_persisted` and the persisted messages (votes, append acknowledgements).
        self.batch.append(shard, &entries)?;
        if let Some(hard_state) = hard_state {
            self.batch.set_hard_state(shard, hard_state);
        }
        self.attach(shard, number, persisted_messages, needs_persist)?;
        if !committed_entries.is_empty() {
            self.apply(shard, committed_entries, internal)?;
        }
        if let Some(group) = self.groups.get_mut(&shard) {
            for read in read_states {
                if let Some(reads) = group.reads_sent.remove(&read.context) {
                    group.reads_ready.push((read.index, reads));
                }
            }
            serve_reads(&self.store, group);
        }
        for message in snapshots {
            self.send_snapshot(message, internal.snapshot_events_tx.clone());
        }
        Ok(())
    }

    /// Ties a Ready's `on_persisted` and persisted messages to the batch that makes it durable.
    fn attach(
        &mut self,
        shard: ShardId,
        number: u64,
        messages: Vec<Message>,
        needs_persist: bool,
    ) -> Result<()> {
        if needs_persist || !self.batch.is_empty() {
            self.batch_after.push((shard, number, messages));
        } else if let Some(last) = self.in_flight.back_mut() {
            // Durable once every earlier batch is: tickets complete in order.
            last.push((shard, number, messages));
        } else {
            if let Some(group) = self.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
            }
            let mut snapshots = Vec::new();
            for message in messages {
                self.route(message, &mut snapshots);
            }
            self.dirty.insert(shard);
        }
        Ok(())
    }

    fn maybe_submit(&mut self, internal: &mut Internal) -> Result<()> {
        if self.in_flight.len() >= self.config.storage.writer_queue_depth {
            return Ok(());
        }
        self.submit_now(internal)
    }

    /// Submits the current batch whatever the queue depth (a split must order its own write
    /// after everything queued so far).
    fn submit_now(&mut self, internal: &mut Internal) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.metrics
            .storage_group_commit_entries
            .observe(batch.entry_count() as f64);
        self.metrics
            .storage_group_commit_bytes
            .observe(batch.size_bytes() as f64);
        let after = std::mem::take(&mut self.batch_after);
        let ticket = self.store.submit(batch)?;
        self.submitted += 1;
        self.in_flight.push_back(after);
        let sent = internal
            .tickets
            .as_ref()
            .map(|tickets| tickets.send(ticket).is_ok());
        if sent != Some(true) {
            return Err(Error::Storage(ringkv_storage::Error::WriterStopped));
        }
        Ok(())
    }

    fn on_durable(&mut self, result: ringkv_storage::Result<Durable>) -> Result<()> {
        let durable = result?;
        self.metrics
            .storage_fsync_duration
            .observe(durable.commit_duration.as_secs_f64());
        let Some(after) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.durable_batches += 1;
        let mut snapshots = Vec::new();
        for (shard, number, messages) in after {
            if let Some(group) = self.groups.get_mut(&shard) {
                group.raw.on_persisted(number)?;
                if let Some((ready, index)) = group.installing
                    && ready <= number
                {
                    group.installing = None;
                    group.applied = group.applied.max(index);
                    serve_reads(&self.store, group);
                }
                self.dirty.insert(shard);
            }
            for message in messages {
                self.route(message, &mut snapshots);
            }
        }
        // Persisted messages are never snapshots (only leaders send those, from `messages`).
        Ok(())
    }

    /// Applies one Ready's committed entries of `shard` in one atomic store batch and answers
    /// the writes they complete.
    /// Applies one Ready's committed entries of `shard`: runs of ordinary entries in one store
    /// batch each, cut at split commands, which apply on their own (see `split.rs`).
    fn apply(
        &mut self,
        shard: ShardId,
        entries: Vec<ringkv_types::raft::Entry>,
        internal: &mut Internal,
    ) -> Result<()> {
        let mut run = Vec::new();
        for entry in entries {
            if let EntryPayload::Normal(data) = &entry.payload
                && shard != ShardId::PD
                && LogCommand::may_be_expiry(data)
                && let Ok(LogCommand::ExpireSessions { now_ms, idle_ms }) = LogCommand::decode(data)
            {
                if !run.is_empty() {
                    self.apply_run(shard, std::mem::take(&mut run))?;
                }
                self.apply_expiry(shard, entry.index, entry.term, now_ms, idle_ms)?;
                continue;
            }
            let split = match &entry.payload {
                EntryPayload::Normal(data)
                    if shard != ShardId::PD && LogCommand::may_be_split(data) =>
                {
                    match LogCommand::decode(data) {
                        Ok(LogCommand::Split {
                            epoch,
                            new_shard,
                            at,
                        }) => Some(split::Split {
                            epoch,
                            new_shard,
                            at,
                        }),
                        _ => None,
                    }
                }
                _ => None,
            };
            match split {
                Some(split) => {
                    if !run.is_empty() {
                        self.apply_run(shard, std::mem::take(&mut run))?;
                    }
                    self.apply_split(shard, entry.index, entry.term, split, internal)?;
                }
                None => run.push(entry),
            }
        }
        if !run.is_empty() {
            self.apply_run(shard, run)?;
        }
        Ok(())
    }

    /// Applies ordinary committed entries of `shard` in one atomic store batch and answers the
    /// writes they complete.
    fn apply_run(&mut self, shard: ShardId, entries: Vec<ringkv_types::raft::Entry>) -> Result<()> {
        let Some(last) = entries.last().map(|e| (e.index, e.term)) else {
            return Ok(());
        };
        let Some(group) = self.groups.get_mut(&shard) else {
            return Ok(());
        };
        let mut commands: Vec<Command> = Vec::new();
        let mut stamps: Vec<u64> = Vec::new();
        let mut owners = Vec::new();
        let mut outside = Vec::new();
        let mut conf = None;
        let mut pd_entries = Vec::new();
        let mut descriptor = None;
        let mut conf_entries = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Noop => {}
                EntryPayload::Config(entry_conf) => {
                    // The descriptor follows the configuration, deterministically on every
                    // replica (thesis §4.1: the entry itself is the change).
                    let next = descriptor
                        .as_ref()
                        .unwrap_or(&group.descriptor)
                        .with_conf(&entry_conf);
                    descriptor = Some(next);
                    conf_entries.push((entry.index, entry.term));
                    conf = Some(entry_conf);
                }
                EntryPayload::Normal(data) => match LogCommand::decode(&data)
                    .map(LogCommand::into_kv)
                {
                    Ok(Ok((stamp, command))) if shard != ShardId::PD => {
                        // Checked again at apply: a write proposed before a split but applied
                        // after it may name keys the shard no longer owns. Every replica has
                        // the same descriptor at this index, so all skip it alike.
                        let arc = descriptor.as_ref().unwrap_or(&group.descriptor).arc;
                        if command.operations.iter().all(|operation| {
                            arc.contains(ringkv_types::ring::position(operation.key()))
                        }) {
                            group.last_stamp_ms = group.last_stamp_ms.max(stamp);
                            group.sessions_live |= command.session.is_some();
                            commands.push(command);
                            stamps.push(stamp);
                            owners.push((entry.index, entry.term));
                        } else {
                            outside.push((entry.index, entry.term));
                        }
                    }
                    Ok(Err(LogCommand::Pd(command))) if shard == ShardId::PD => {
                        pd_entries.push((entry.index, entry.term, command));
                    }
                    // Every replica skips the same entries, so the state machines agree.
                    Ok(_) => warn!(%shard, index = %entry.index, "skipping a misplaced command"),
                    Err(error) => {
                        warn!(%shard, index = %entry.index, %error, "skipping an undecodable entry")
                    }
                },
            }
        }
        if conf.is_none() && !group.conf_saved {
            conf = Some(Group::conf_of(&group.descriptor));
        }
        let applied = AppliedState {
            index: last.0,
            term: last.1,
        };
        let descriptor_record = match &descriptor {
            Some(descriptor) if shard != ShardId::PD && group.initialized => Some((
                replica_meta::descriptor_key(shard),
                replica_meta::encode_descriptor(descriptor)?,
            )),
            _ => None,
        };
        let mut pd_results = Vec::new();
        let mut pd_record = None;
        if shard == ShardId::PD
            && let Some(host) = self.pd.as_mut()
            && !pd_entries.is_empty()
        {
            let (results, state) = Self::pd_apply(host, pd_entries)?;
            pd_results = results;
            pd_record = Some((META_PD_STATE.to_vec(), state));
        }
        let meta: Vec<(&[u8], &[u8])> = descriptor_record
            .iter()
            .chain(pd_record.iter())
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
            .collect();
        // IMPORTANT: the new descriptor (and the PD state) commits with the applied index in one
        // batch.
        let results =
            self.store
                .apply_with_meta(shard, &commands, &stamps, applied, conf.as_ref(), &meta)?;
        if let Some(descriptor) = descriptor
            && group.initialized
        {
            if group.raw.is_leader() {
                // The removed members no longer hear from us: tell them (best effort; a
                // removed voter that campaigns is told again).
                for replica in &group.descriptor.replicas {
                    if descriptor.replica_of_member(replica.member).is_none() {
                        let notice = Message {
                            group: shard,
                            from: group.member,
                            to: replica.member,
                            term: group.raw.term(),
                            body: MessageBody::ReplicaRemoved,
                        };
                        self.outbox.entry(replica.node).or_default().push(notice);
                    }
                }
            }
            info!(%shard, epoch = ?descriptor.epoch, replicas = descriptor.replicas.len(),
                "configuration applied");
            group.descriptor = descriptor;
        }
        group.writes_applied += commands.len() as u64;
        membership::answer_change(group, &conf_entries, last.0);
        group.conf_saved = true;
        group.applied = last.0;
        group.raw.on_applied(last.0);
        for ((index, term), result) in owners.into_iter().zip(results) {
            let Some(proposal) = group.proposals.remove(&index) else {
                continue;
            };
            let response = if proposal.term == term {
                write_response(proposal.kind, index, result)
            } else {
                lost_write(group)
            };
            reply(proposal.reply, response);
        }
        for (index, term) in outside {
            if let Some(proposal) = group.proposals.remove(&index) {
                let response = if proposal.term == term {
                    Response::Error(ringkv_types::WireError::KeyNotInShard { shard })
                } else {
                    lost_write(group)
                };
                reply(proposal.reply, response);
            }
        }
        // Proposals at applied indexes whose entries were not ours were overwritten: lost.
        while let Some(entry) = group.proposals.first_entry() {
            if *entry.key() > last.0 {
                break;
            }
            let proposal = entry.remove();
            reply(proposal.reply, lost_write(group));
        }
        if shard == ShardId::PD {
            self.pd_answer(pd_results, last.0);
        }
        let storage = self.groups.get(&shard).map(|g| g.raw.storage().clone());
        if let Some(storage) = storage {
            self.maybe_compact(shard, storage, last.0)?;
        }
        let removed = self.groups.get(&shard).is_some_and(|group| {
            shard != ShardId::PD
                && group.initialized
                && group.descriptor.replica_of_member(group.member).is_none()
        });
        if removed {
            self.remove_group(shard)?;
        }
        Ok(())
    }

    /// Moves the compaction point to the applied index once the log holds more than
    /// `raft.log_compaction_entries` applied entries.
    fn maybe_compact(
        &mut self,
        shard: ShardId,
        storage: crate::group::NodeStorage,
        applied: LogIndex,
    ) -> Result<()> {
        let threshold = self.config.raft.log_compaction_entries;
        if threshold == 0 {
            return Ok(());
        }
        use ringkv_raft::Storage as _;
        let Ok(first) = storage.first_index() else {
            return Ok(());
        };
        if applied.distance_from(first) < threshold {
            return Ok(());
        }
        let Ok(term) = storage.term(applied) else {
            return Ok(());
        };
        let Some(group) = self.groups.get(&shard) else {
            return Ok(());
        };
        let conf = group.raw.conf_state().clone();
        debug!(%shard, %applied, "compacting the log");
        self.batch.set_snapshot_meta(
            shard,
            SnapshotMeta {
                index: applied,
                term,
                conf,
            },
        );
        Ok(())
    }

    /// Stops cleanly: submits what is pending and waits until every batch is durable, then
    /// flushes the apply writes.
    async fn finish(&mut self, internal: &mut Internal) -> Result<()> {
        loop {
            self.maybe_submit(internal)?;
            if self.in_flight.is_empty() {
                break;
            }
            match internal.durable.recv().await {
                Some(result) => self.on_durable(result)?,
                None => return Err(Error::Storage(ringkv_storage::Error::WriterStopped)),
            }
        }
        self.flush_outbox();
        // IMPORTANT: apply batches are written without their own fsync; make them durable so a
        // restart does not re-apply (harmless) or lose answered reads' basis.
        self.store.persist()?;
        info!("store flushed");
        Ok(())
    }
}
