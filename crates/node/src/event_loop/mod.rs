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
//! read, a tick, a completed commit), and only awake groups are ticked: with `raft.quiesce` an
//! idle group goes quiescent and costs nothing per tick (node-level heartbeats in
//! `liveness.rs` replace its own).

mod apply;
mod callers;
mod clock;
mod gauges;
mod liveness;
mod membership;
mod pd;
mod ready;
mod requests;
mod sessions;
mod snapshot;
mod split;
mod throttle;
mod ttl;

use crate::agent::{Agent, AgentCall, AgentView, LeaderReport};
use crate::config::NodeConfig;
use crate::core::machine::StateMachine;
use crate::core::node_core::NodeCore;
use crate::core::pd_machine::PdHost;
use crate::core::route::Route;
use crate::error::{Error, Result};
use crate::group::Group;
use crate::node::LocalState;
use crate::service::ClientCall;
use ringkv_storage::{Durable, RemovalHandle, Store, Ticket};
use ringkv_transport::{Inbound, Transport};
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{NodeId, RaftBatch, ShardId, ShardMap};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

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

/// The state the loop owns.
pub struct EventLoop {
    config: NodeConfig,
    store: Store,
    transport: Arc<Transport>,
    map: ShardMap,
    /// The sans-IO part: the local groups, their routing, the outbox and the answers.
    core: NodeCore,
    /// The callers of the requests in the core, by request id.
    callers: callers::Callers,
    started: Instant,
    /// Snapshot transfers in flight; aborted at shutdown (they hold the transport).
    snapshot_tasks: tokio::task::JoinSet<()>,
    /// Replica removals running in the background.
    removals: Vec<RemovalHandle>,
    /// Removed replicas whose data removal waits for batch `.0` to be durable (it may hold
    /// their last log writes).
    removals_waiting: Vec<(u64, ShardId, ringkv_types::ring::Arc)>,
    /// The PD leader's state as last fetched by the agent (nodes that do not host PD).
    pd_cache: Option<ringkv_pd::PdState>,
    /// Resolves callers; gets the users and keys of every new PD state.
    auth: Option<Arc<crate::auth::Authenticator>>,
    /// When this node (as PD leader) last proposed a first signing key.
    signing_key_proposed: Option<crate::core::time::Mono>,
    /// Key material for the core (the operating system's random source).
    keys: crate::auth::keys::SystemKeys,
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
    /// Timer turns so far: work that loops over every local group runs every
    /// [`SLOW_TICKS`]th turn only.
    ticks_seen: u64,
    /// Which peer nodes were heard from lately (node-level heartbeats, `raft.quiesce`).
    liveness: crate::core::liveness::Liveness,
    /// A tick happened: check the peers' liveness at the end of the turn.
    liveness_check_due: bool,
    /// Change histories and watchers (`crate::watch`), shared with the client service.
    watch: Arc<crate::watch::WatchHub>,
}

/// Gauges, `/readyz` and session expiry loop over every local group: they run every this many
/// timer turns (1 s at the default tick), so that idle, quiescent groups cost nothing per tick.
const SLOW_TICKS: u64 = 10;

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

impl EventLoop {
    /// A loop over `groups`.
    pub fn new(
        config: NodeConfig,
        store: Store,
        transport: Transport,
        map: ShardMap,
        mut groups: BTreeMap<ShardId, Group>,
        local: LocalState,
        agent: Agent,
    ) -> Self {
        if let Some(state) = local.pd_state {
            // The PD replica's state goes to group 0's state machine.
            match groups.get_mut(&ShardId::PD).map(|group| &mut group.machine) {
                Some(StateMachine::Pd(host)) => *host = Some(Box::new(PdHost::new(state))),
                _ => error!("placement driver state without a local group 0; not hosting it"),
            }
        }
        let inbound_snapshots = Arc::new(tokio::sync::Semaphore::new(
            config.storage.snapshots_inbound_max,
        ));
        let outbound_snapshots = Arc::new(tokio::sync::Semaphore::new(
            config.storage.snapshots_outbound_max,
        ));
        let config_data_dir = config.data_dir.clone();
        let config_node = config.node_id;
        let election_timeout = config
            .tick()
            .saturating_mul(u32::try_from(config.raft.election_timeout_ticks).unwrap_or(u32::MAX));
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
            core: NodeCore::new(config_node, groups, local.tombstones),
            callers: callers::Callers::default(),
            started: Instant::now(),
            snapshot_tasks: tokio::task::JoinSet::new(),
            removals: local.removals,
            removals_waiting: Vec::new(),
            pd_cache: None,
            auth: None,
            signing_key_proposed: None,
            keys: crate::auth::keys::SystemKeys,
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
            ticks_seen: 0,
            liveness: crate::core::liveness::Liveness::new(election_timeout),
            liveness_check_due: false,
            watch: Arc::new(crate::watch::WatchHub::default()),
        }
    }

    /// Records applied changes into `hub` (shared with the client service, which serves
    /// watches from it).
    pub fn with_watch(mut self, hub: Arc<crate::watch::WatchHub>) -> Self {
        self.watch = hub;
        self
    }

    /// Records into `metrics` (shared with the HTTP server), and lets it read the transport.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics.set_transport(Arc::downgrade(&self.transport));
        self.metrics = metrics;
        self
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
        self.deliver_replies();
        // The agent holds the transport; it must be gone before the transport shuts down.
        agent_task.shutdown().await;
        let finished = match &result {
            Ok(()) => self.finish(&mut internal).await,
            Err(error) => {
                error!(%error, "stopping the node");
                Ok(())
            }
        };
        self.deliver_replies();
        internal.tickets.take();
        if let Some(waiter) = internal.waiter.take() {
            // The waiter ends once the ticket channel is closed and its last ticket is done.
            let _ = tokio::task::spawn_blocking(move || waiter.join()).await;
        }
        self.snapshot_tasks.shutdown().await;
        let transport = self.transport;
        drop(self.core.groups);
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
                () = std::future::ready(()), if !self.core.dirty.is_empty() => {}
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
        self.check_liveness();
        self.core.issue_reads();
        // A few rounds so that work one Ready creates (more committed entries) is done now.
        for _ in 0..4 {
            if self.core.dirty.is_empty() {
                break;
            }
            self.process_readies(internal)?;
        }
        self.flush_outbox();
        self.deliver_replies();
        self.maybe_submit(internal)?;
        self.start_removals()
    }

    /// The monotonic time the core gets with an input (it reads no clock).
    fn mono_now(&self) -> crate::core::time::Mono {
        crate::core::time::Mono(self.started.elapsed())
    }

    /// Hands the answers the core produced to their callers.
    fn deliver_replies(&mut self) {
        if !self.core.replies.is_empty() {
            self.callers.deliver(self.core.replies.take());
        }
    }

    /// Gives every group the ticks that fell due on the monotonic clock since the last call
    /// (see `clock.rs`). Called on every timer wake-up and before every client call, so a
    /// lease is never judged by a clock that lags real time (after a pause of the process).
    fn advance_clock(&mut self) -> Result<()> {
        let due = self.clock.take_due(tokio::time::Instant::now());
        self.core.tick(due)
    }

    /// The timer's turn: the awake groups' ticks, the node-level heartbeats, then the loop's
    /// periodic work (what loops over every group runs every [`SLOW_TICKS`]th turn).
    fn tick_all(&mut self) -> Result<()> {
        self.advance_clock()?;
        self.ticks_seen += 1;
        self.tick_transfers();
        self.reap_removals();
        self.liveness_tick();
        if self.ticks_seen % SLOW_TICKS == 1 {
            if let Some(publisher) = &self.health {
                publisher.publish(self.health_snapshot());
            }
            self.update_gauges();
            self.propose_expiries()?;
            self.sweep_expired_keys()?;
        }
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
            pd_nodes: self.pd_host().map(|_| {
                self.known_nodes()
                    .into_iter()
                    .map(|known| (known.node, known.addr))
                    .collect()
            }),
            ..AgentView::default()
        };
        for group in self.core.groups.values() {
            if !group.machine.is_data() || !group.initialized {
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
        self.liveness_heard(&batch);
        for message in batch.messages {
            if matches!(message.body, MessageBody::NodeAlive) {
                // Node level: its arrival was all it had to say.
                continue;
            }
            if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
                // Snapshots arrive with their data on a snapshot stream, never in a batch.
                continue;
            }
            if !self.valid_message(&message) {
                continue;
            }
            let removing = removal_running(&self.removals, &self.removals_waiting);
            let route = self.core.route(&message, removing);
            let stepped = self.follow(&message, route)? && self.core.step(message)?;
            if !stepped {
                self.metrics.raft_dropped_messages.inc();
            }
        }
        Ok(())
    }

    /// Does what the core decided for `message`: creates or removes a replica. True when the
    /// message may be stepped.
    pub(super) fn follow(&mut self, message: &Message, route: Route) -> Result<bool> {
        match route {
            Route::Step => Ok(true),
            Route::Create => {
                self.create_replica(message)?;
                Ok(true)
            }
            Route::Remove => {
                self.remove_group(message.group)?;
                Ok(false)
            }
            Route::Drop => Ok(false),
        }
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
}

/// Whether the data of a removed replica of a shard is still being deleted (running, or
/// waiting for its barrier batch): no new replica of it may be created meanwhile.
pub(super) fn removal_running<'a>(
    removals: &'a [RemovalHandle],
    waiting: &'a [(u64, ShardId, ringkv_types::ring::Arc)],
) -> impl Fn(ShardId) -> bool + 'a {
    move |shard| {
        removals.iter().any(|r| r.shard() == shard) || waiting.iter().any(|(_, s, _)| *s == shard)
    }
}
