//! The config file's tables (`[tls]`, `[raft]`, `[limits]`, `[storage]`, `[debug]`, `[auth]`,
//! `[pd]`) with their defaults, and the HTTP and log settings.

use super::*;

/// The `[tls]` table: the cluster CA and this node's certificate and key (PEM files).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This node's certificate (must name `node-<id>.<cluster>`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// The `[raft]` table: timing and flow-control limits shared by every local group.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Length of one Raft tick in milliseconds.
    pub tick_ms: u64,
    /// Minimum election timeout in ticks (also the lease length).
    pub election_timeout_ticks: u64,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u64,
    /// Lease safety margin in ticks.
    pub lease_margin_ticks: u64,
    /// Append messages in flight per follower.
    pub max_inflight_messages: usize,
    /// Soft limit on entry bytes per append message.
    pub max_message_bytes: u64,
    /// Leader's limit on appended but uncommitted bytes per group.
    pub max_uncommitted_bytes: u64,
    /// Soft limit on committed bytes applied per group per turn.
    pub max_apply_bytes: u64,
    /// Reads waiting for a ReadIndex round per group.
    pub max_pending_reads: usize,
    /// Pre-vote before elections.
    pub pre_vote: bool,
    /// Check-quorum (required for lease reads).
    pub check_quorum: bool,
    /// Compact a group's log once this many applied entries are in it (0 = never).
    pub log_compaction_entries: u64,
    /// Quiescence: an idle group stops ticking and heartbeating, and the node sends one
    /// liveness message per peer node per heartbeat interval instead (docs/node.md,
    /// "Quiescence and node liveness"). Needs every node to run a version that knows the
    /// `Quiesce`, `Wake` and `NodeAlive` messages.
    pub quiesce: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            tick_ms: 100,
            election_timeout_ticks: 5,
            heartbeat_ticks: 1,
            lease_margin_ticks: 1,
            max_inflight_messages: 256,
            max_message_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_apply_bytes: 4 << 20,
            max_pending_reads: 4096,
            pre_vote: true,
            check_quorum: true,
            log_compaction_entries: 100_000,
            quiesce: true,
        }
    }
}

/// The `[limits]` table: sizes and queue bounds for client traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest key.
    pub max_key_bytes: u64,
    /// Largest value.
    pub max_value_bytes: u64,
    /// Largest request (sum of key and value bytes of all its operations).
    pub max_request_bytes: u64,
    /// Most operations in one atomic batch.
    pub max_batch_ops: u64,
    /// Client requests queued for the event loop; beyond it requests are answered `Busy`.
    pub client_queue: usize,
    /// Client requests handled at once by the transport; beyond it `Busy`.
    pub client_inflight_max: usize,
    /// Server-side time budget of a request that names none, in milliseconds.
    pub client_request_timeout_ms: u64,
    /// Raft batches from peers queued for the event loop; beyond it they are dropped.
    pub raft_inbound_batches_max: usize,
    /// Bytes of Raft batches from peers queued for the event loop; beyond it they are dropped
    /// (Raft retransmits). At least 16 MiB (the largest frame).
    pub raft_inbound_bytes_max: u64,
    /// Connections of any kind (handshakes included) beyond which new ones are refused before
    /// the handshake. Keep it above `max_client_connections` by at least the number of peers.
    pub max_connections: usize,
    /// Client connections (certificates naming no node of this cluster, or none) beyond which a
    /// new one is closed after its handshake. Peers never count, so clients cannot lock them out.
    pub max_client_connections: usize,
    /// QUIC address validation (a Retry round trip) for new connections from addresses that are
    /// not known peer addresses.
    pub client_address_validation: bool,
    /// Bytes of client requests in flight; a request that does not fit is answered `Busy`
    /// before its body is read. At least 16 MiB (the largest frame).
    pub client_inbound_bytes_max: u64,
    /// Time a client has to send its whole request once it opened the stream, in milliseconds.
    pub client_read_timeout_ms: u64,
    /// Time a client has to read its response, in milliseconds; then the stream is reset.
    pub client_write_timeout_ms: u64,
    /// Largest `timeout_ms` a request may ask for; larger values are clamped to it.
    pub client_timeout_max_ms: u64,
    /// A client connection with no request in flight for this long (milliseconds) is closed.
    pub client_idle_timeout_ms: u64,
    /// Inputs (Raft batches plus client requests) the event loop takes per turn.
    pub turn_inputs_max: usize,
    /// HTTP connections served at once; more wait in the kernel's accept backlog.
    pub http_connections_max: usize,
    /// A client session (the exactly-once record of a client's last write in a shard) is
    /// dropped after this long without a write, in log time (the leaders' clocks stamped into
    /// the log), so the session table stays bounded. A retry arriving later than this may
    /// apply twice. 0 keeps sessions forever.
    pub session_idle_ms: u64,
    /// Bytes of recent changes each replica keeps per shard for watches to resume from (keys,
    /// values and ~32 bytes per change); older changes are dropped and a resume before them
    /// answers `Compacted`. 0 keeps no history (watches start from now only).
    pub watch_history_bytes: u64,
    /// Bytes of events queued for one watcher; a watcher that falls this far behind is
    /// cancelled with `SlowWatcher`. At least 1 MiB (a largest value must fit).
    pub watch_buffer_bytes_max: u64,
    /// Watchers (one per watched shard) on one client connection; beyond it `Busy`.
    pub watchers_per_connection_max: usize,
    /// Watchers on this node; beyond it `Busy`.
    pub watchers_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_request_bytes: 4 << 20,
            max_batch_ops: 1024,
            client_queue: 4096,
            client_inflight_max: 4096,
            client_request_timeout_ms: 5000,
            raft_inbound_batches_max: 1024,
            raft_inbound_bytes_max: 64 << 20,
            max_connections: 1280,
            max_client_connections: 1024,
            client_address_validation: true,
            client_inbound_bytes_max: 64 << 20,
            client_read_timeout_ms: 5000,
            client_write_timeout_ms: 5000,
            client_timeout_max_ms: 30_000,
            client_idle_timeout_ms: 300_000,
            turn_inputs_max: 1024,
            http_connections_max: 1024,
            session_idle_ms: 3_600_000,
            watch_history_bytes: 1 << 20,
            watch_buffer_bytes_max: 4 << 20,
            watchers_per_connection_max: 1024,
            watchers_max: 10_000,
        }
    }
}

/// The `[storage]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// fjall block cache in MiB.
    pub cache_mib: u64,
    /// Group-commit batches in flight (one syncing, the rest queued).
    pub writer_queue_depth: usize,
    /// Free space (MiB) on the data dir's filesystem under which client writes that add data
    /// are refused with `NoSpace` (0 disables the alarm).
    pub space_reserve_mib: u64,
    /// Snapshots this node receives (stages) at once; a peer's snapshot beyond it is refused
    /// (the sender reports it undelivered and its Raft core retries later).
    pub snapshots_inbound_max: usize,
    /// Snapshots this node sends at once; more wait for a slot.
    pub snapshots_outbound_max: usize,
    /// Largest snapshot (key and value bytes of one shard) this node sends or receives, in
    /// MiB. It bounds disk (a snapshot is staged whole before it is installed) and the send's
    /// time budget, not memory. A shard above it cannot move or gain a replica: raise it on
    /// every node, or split the shard.
    pub snapshot_max_mib: u64,
    /// Bound on the store's memtables (all keyspaces) in MiB: above it the store flushes
    /// them and writers wait (0 = unbounded). The main term of the node's memory during a
    /// snapshot install.
    pub write_buffer_mib: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            cache_mib: 64,
            writer_queue_depth: 2,
            space_reserve_mib: 256,
            snapshots_inbound_max: 2,
            snapshots_outbound_max: 2,
            snapshot_max_mib: 1024,
            write_buffer_mib: 256,
        }
    }
}

/// The `[debug]` table: switches for tests, all off by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugSection {
    /// Accept `AdminRequest::SetFaults`, which cuts this node's Raft traffic to chosen peers.
    /// Any client holding a certificate of the cluster could then partition the node: never
    /// enable it in production.
    pub fault_injection: bool,
}

/// The `[auth]` table: tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Lifetime of the tokens this node issues at login, in seconds (default 3600). Longer
    /// means fewer logins but a longer window for a leaked token (a password change or
    /// `ringctl user delete` revokes it earlier).
    pub token_ttl: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self { token_ttl: 3600 }
    }
}

/// The `[pd]` table: how this node talks to the placement driver and, on the initial nodes,
/// the scheduler settings the cluster starts with.
///
/// The settings (everything below `heartbeat_interval_ms`) are read once, when the cluster is
/// created: every initial node builds the same initial PD state from its config, so they must be
/// identical on every node of `initial_cluster` (like `initial_cluster` itself). Later changes go
/// through PD (`Command::SetSettings`, `ringctl scheduler ...`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PdSection {
    /// How often the PD leader decides whether to propose a tick (marks silent nodes down,
    /// runs the schedulers); it proposes one only when the tick would change something.
    pub tick_interval_ms: u64,
    /// How often every node heartbeats and every shard leader reports to PD.
    pub heartbeat_interval_ms: u64,
    /// Time budget of one call to PD (heartbeat, report, registration).
    pub request_timeout_ms: u64,
    /// Replica repair on.
    pub repair: bool,
    /// Replica balancing on.
    pub balance_replicas: bool,
    /// Leader balancing on.
    pub balance_leaders: bool,
    /// Draining on.
    pub drain: bool,
    /// Automatic splits on.
    pub split: bool,
    /// Operators in flight across the cluster.
    pub max_operators: u32,
    /// Learners (snapshots) a node may receive at once.
    pub max_snapshots_per_node: u32,
    /// Snapshot bandwidth per node, bytes per second (0 = unlimited), each sender's limit.
    pub max_snapshot_bytes_per_sec: u64,
    /// A node silent this long is `Down`.
    pub heartbeat_timeout_ms: u64,
    /// A node `Down` this long loses its replicas to other nodes.
    pub max_down_time_ms: u64,
    /// An operator step without progress this long is cancelled and rolled back.
    pub operator_step_timeout_ms: u64,
    /// Split shards larger than this (0 = never by size).
    pub split_size_bytes: u64,
    /// Split shards with more reads plus writes per second (0 = never by load).
    pub split_load_per_sec: u64,
}

impl Default for PdSection {
    fn default() -> Self {
        let settings = ringkv_pd::Settings::default();
        Self {
            tick_interval_ms: 1000,
            heartbeat_interval_ms: 1000,
            request_timeout_ms: 3000,
            repair: settings.repair,
            balance_replicas: settings.balance_replicas,
            balance_leaders: settings.balance_leaders,
            drain: settings.drain,
            split: settings.split,
            max_operators: settings.max_operators,
            max_snapshots_per_node: settings.max_snapshots_per_node,
            max_snapshot_bytes_per_sec: settings.max_snapshot_bytes_per_sec,
            heartbeat_timeout_ms: settings.heartbeat_timeout_ms,
            max_down_time_ms: settings.max_down_time_ms,
            operator_step_timeout_ms: settings.operator_step_timeout_ms,
            split_size_bytes: settings.split_size_bytes,
            split_load_per_sec: settings.split_load_per_sec,
        }
    }
}

/// How `ringkvd` writes its log (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's json format), for log shippers.
    Json,
}

/// The HTTP API and health endpoints (`http_addr`, `http_tls`, `slow_request_ms`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// TCP address the HTTP server binds.
    pub addr: SocketAddr,
    /// HTTPS with the node's certificate (true), or plain HTTP (loopback addresses only).
    pub tls: bool,
    /// Requests slower than this are logged at `warn`.
    pub slow_request: Duration,
}
