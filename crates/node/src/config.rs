//! The node's TOML configuration: schema, defaults, path resolution and validation.
//!
//! Every field is documented with its trade-offs in `config/node.example.toml`. Relative paths
//! are relative to the directory of the configuration file. Unknown fields are errors, so a typo
//! never silently falls back to a default.

use crate::error::{Error, Result};
use ringkv_types::NodeId;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A node's address as written in configs and printed by tools: `<node id>@<host:port>`,
/// e.g. `1@127.0.0.11:7100` or `1@ringkv-1:7100` (a DNS name, resolved at every dial).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The node.
    pub node: NodeId,
    /// Its advertised UDP address (one QUIC endpoint serves peers and clients): `ip:port` or
    /// `host:port`.
    pub addr: String,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (id, addr) = text
            .split_once('@')
            .ok_or_else(|| format!("`{text}` is not of the form <node id>@<host:port>"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` in `{text}` is not a node id"))?;
        if id == 0 {
            return Err(format!("node id 0 in `{text}` is reserved"));
        }
        let addr = ringkv_transport::resolve::check_host_port(addr)
            .map_err(|reason| format!("in `{text}`: {reason}"))?;
        Ok(Self {
            node: NodeId(id),
            addr,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node.get(), self.addr)
    }
}

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
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            cache_mib: 64,
            writer_queue_depth: 2,
            space_reserve_mib: 256,
            snapshots_inbound_max: 2,
            snapshots_outbound_max: 2,
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
    /// How often the PD leader proposes `Tick` (marks silent nodes down, runs the schedulers).
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

/// The file as written, before validation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: u64,
    cluster: String,
    listen_addr: String,
    #[serde(default)]
    advertise_addr: Option<String>,
    data_dir: PathBuf,
    #[serde(default)]
    initial_cluster: Vec<String>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default = "default_initial_shards")]
    initial_shards: u64,
    #[serde(default = "default_replication_factor")]
    replication_factor: usize,
    tls: TlsConfig,
    #[serde(default)]
    raft: RaftConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    debug: DebugSection,
    #[serde(default)]
    pd: PdSection,
    #[serde(default)]
    auth: AuthSection,
    http_addr: Option<String>,
    #[serde(default = "default_http_tls")]
    http_tls: bool,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default = "default_slow_request_ms")]
    slow_request_ms: u64,
}

fn default_http_tls() -> bool {
    true
}

fn default_slow_request_ms() -> u64 {
    1000
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

/// Every field of the file's schema (dotted for tables) and its kind: the environment
/// variables and flags of [`crate::config_layers`] are derived from it.
pub(crate) fn schema() -> std::collections::BTreeMap<String, crate::config_schema::FieldKind> {
    crate::config_schema::fields::<RawConfig>()
}

fn default_initial_shards() -> u64 {
    16
}

fn default_replication_factor() -> usize {
    3
}

/// A validated node configuration with absolute paths.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (non-zero; listed in `initial_cluster`, or the id PD assigns on join).
    pub node_id: NodeId,
    /// Cluster name: certificates name nodes `node-<id>.<cluster>`.
    pub cluster: String,
    /// UDP address the QUIC endpoint binds (an IP: `0.0.0.0:7100` binds every interface).
    pub listen_addr: SocketAddr,
    /// The address peers and clients dial, registered with PD and returned by `GetNodes`:
    /// `ip:port` or `host:port` (a DNS name, resolved by each dialer at every dial). Defaults
    /// to this node's `initial_cluster` entry, else to `listen_addr` when that is a concrete
    /// address.
    pub advertise_addr: String,
    /// The node's data directory.
    pub data_dir: PathBuf,
    /// Every node of the initial cluster, sorted by id; empty on a joining node.
    pub initial_cluster: Vec<Endpoint>,
    /// Addresses (`host:port`) of running nodes to join through; empty on an initial node.
    pub join: Vec<String>,
    /// Shards the ring is cut into at bootstrap.
    pub initial_shards: u64,
    /// Replicas per shard.
    pub replication_factor: usize,
    /// Certificates.
    pub tls: TlsConfig,
    /// Raft settings.
    pub raft: RaftConfig,
    /// Client limits.
    pub limits: LimitsConfig,
    /// Storage settings.
    pub storage: StorageSection,
    /// Test switches.
    pub debug: DebugSection,
    /// Placement driver settings.
    pub pd: PdSection,
    /// Token settings.
    pub auth: AuthSection,
    /// The HTTP server (`None`: no `http_addr`, no HTTP server).
    pub http: Option<HttpConfig>,
    /// The log format (read by `ringkvd` before the node starts).
    pub log_format: LogFormat,
}

/// The transport's largest frame (its `max_frame_bytes` default), the least a byte budget may be.
pub(crate) const FRAME_BYTES_MAX: u64 = 16 << 20;

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::ConfigInvalid {
        field,
        reason: reason.into(),
    }
}

impl NodeConfig {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// # Errors
    /// [`Error::ConfigRead`], [`Error::ConfigParse`] or [`Error::ConfigInvalid`] naming the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base).map_err(|error| match error {
            Error::ConfigParse { reason, .. } => Error::ConfigParse {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates TOML `text`; relative paths are resolved against `base`.
    ///
    /// # Errors
    /// As [`NodeConfig::load`].
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| Error::ConfigParse {
            path: PathBuf::from("<text>"),
            reason: error.to_string(),
        })?;
        let resolve = |path: &Path| -> PathBuf {
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            }
        };
        if raw.node_id == 0 {
            return Err(invalid("node_id", "must be a positive integer"));
        }
        if raw.node_id >= ringkv_types::NODE_ID_LIMIT {
            return Err(invalid(
                "node_id",
                "must be below 2^32 (a Raft member id packs the node id in its high 32 bits)",
            ));
        }
        let node_id = NodeId(raw.node_id);
        if raw.cluster.is_empty()
            || !raw
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid(
                "cluster",
                "must be a non-empty DNS label (letters, digits, '-', '.')",
            ));
        }
        let listen_addr: SocketAddr = raw.listen_addr.trim().parse().map_err(|_| {
            invalid(
                "listen_addr",
                format!(
                    "`{}` is not an ip:port address (the address to bind, e.g. 0.0.0.0:7100; \
                     a DNS name belongs in advertise_addr)",
                    raw.listen_addr
                ),
            )
        })?;
        if raw.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let mut initial_cluster = Vec::with_capacity(raw.initial_cluster.len());
        for text in &raw.initial_cluster {
            let endpoint: Endpoint = text.parse().map_err(|e| invalid("initial_cluster", e))?;
            initial_cluster.push(endpoint);
        }
        initial_cluster.sort_by_key(|endpoint| endpoint.node);
        let mut join = Vec::with_capacity(raw.join.len());
        for text in &raw.join {
            let addr =
                ringkv_transport::resolve::check_host_port(text).map_err(|e| invalid("join", e))?;
            join.push(addr);
        }
        match (initial_cluster.is_empty(), join.is_empty()) {
            (true, true) => {
                return Err(invalid(
                    "initial_cluster",
                    "set either initial_cluster (a node of the initial cluster) or join \
                     (a node joining a running cluster)",
                ));
            }
            (false, false) => {
                return Err(invalid(
                    "join",
                    "set either initial_cluster or join, not both (a joining node must not \
                     bootstrap a cluster of its own)",
                ));
            }
            _ => {}
        }
        if join.len() > 64 {
            return Err(invalid("join", "at most 64 addresses"));
        }
        let own_entry = initial_cluster
            .iter()
            .find(|endpoint| endpoint.node == node_id)
            .map(|endpoint| endpoint.addr.clone());
        let advertise_addr = match (&raw.advertise_addr, &own_entry) {
            (Some(text), own) => {
                let addr = ringkv_transport::resolve::check_host_port(text)
                    .map_err(|e| invalid("advertise_addr", e))?;
                if let Some(own) = own
                    && *own != addr
                {
                    return Err(invalid(
                        "advertise_addr",
                        format!(
                            "`{addr}` differs from this node's initial_cluster entry `{own}` \
                             (peers dial the initial_cluster address)"
                        ),
                    ));
                }
                addr
            }
            (None, Some(own)) => own.clone(),
            (None, None) if listen_addr.ip().is_unspecified() || listen_addr.port() == 0 => {
                return Err(invalid(
                    "listen_addr",
                    "a joining node registers its advertise_addr with the placement driver; it \
                     defaults to listen_addr, which is not an address peers can dial (0.0.0.0 \
                     or port 0): set advertise_addr",
                ));
            }
            (None, None) => listen_addr.to_string(),
        };
        if initial_cluster
            .iter()
            .any(|endpoint| endpoint.node.get() >= ringkv_types::NODE_ID_LIMIT)
        {
            return Err(invalid(
                "initial_cluster",
                "node ids must be below 2^32 (a Raft member id packs the node id in its high 32 bits)",
            ));
        }
        if initial_cluster
            .windows(2)
            .any(|pair| matches!(pair, [a, b] if a.node == b.node))
        {
            return Err(invalid("initial_cluster", "lists a node id twice"));
        }
        if initial_cluster
            .iter()
            .enumerate()
            .any(|(i, a)| initial_cluster.iter().skip(i + 1).any(|b| a.addr == b.addr))
        {
            return Err(invalid("initial_cluster", "lists an address twice"));
        }
        if !initial_cluster.is_empty() && !initial_cluster.iter().any(|e| e.node == node_id) {
            return Err(invalid(
                "initial_cluster",
                format!("does not list this node ({})", raw.node_id),
            ));
        }
        if raw.initial_shards == 0 || raw.initial_shards > 4096 {
            return Err(invalid("initial_shards", "must be in 1..=4096"));
        }
        if raw.replication_factor == 0
            || (!initial_cluster.is_empty() && raw.replication_factor > initial_cluster.len())
        {
            return Err(invalid(
                "replication_factor",
                format!(
                    "must be in 1..={} (the size of initial_cluster)",
                    initial_cluster.len()
                ),
            ));
        }
        if raw.auth.token_ttl == 0 || raw.auth.token_ttl > 31 * 24 * 3600 {
            return Err(invalid(
                "auth.token_ttl",
                "must be 1 to 2678400 seconds (31 days)",
            ));
        }
        let http = match &raw.http_addr {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.trim().parse().map_err(|_| {
                    invalid("http_addr", format!("`{text}` is not an ip:port address"))
                })?;
                if !raw.http_tls && !addr.ip().is_loopback() {
                    return Err(invalid(
                        "http_tls",
                        format!(
                            "plain HTTP (http_tls = false) is only allowed on a loopback \
                             http_addr, not {addr}: requests and tokens would cross the \
                             network in clear text"
                        ),
                    ));
                }
                if raw.slow_request_ms == 0 {
                    return Err(invalid("slow_request_ms", "must be at least 1"));
                }
                Some(HttpConfig {
                    addr,
                    tls: raw.http_tls,
                    slow_request: Duration::from_millis(raw.slow_request_ms),
                })
            }
        };
        let config = NodeConfig {
            node_id,
            cluster: raw.cluster,
            listen_addr,
            advertise_addr,
            data_dir: resolve(&raw.data_dir),
            initial_cluster,
            join,
            initial_shards: raw.initial_shards,
            replication_factor: raw.replication_factor,
            tls: TlsConfig {
                ca_cert: resolve(&raw.tls.ca_cert),
                cert: resolve(&raw.tls.cert),
                key: resolve(&raw.tls.key),
            },
            raft: raw.raft,
            limits: raw.limits,
            storage: raw.storage,
            debug: raw.debug,
            auth: raw.auth,
            pd: raw.pd,
            http,
            log_format: raw.log_format,
        };
        config.validate_tables()?;
        Ok(config)
    }

    fn validate_tables(&self) -> Result<()> {
        let raft = &self.raft;
        if raft.tick_ms == 0 || raft.tick_ms > 10_000 {
            return Err(invalid("raft.tick_ms", "must be in 1..=10000"));
        }
        // The core checks the remaining relations; map its message to our field names.
        self.raft_config(
            ringkv_types::ShardId(1),
            ringkv_types::member_id(self.node_id, 1),
        )
        .validate()
        .map_err(|error| invalid("raft", error.to_string()))?;
        if raft.max_pending_reads == 0 {
            return Err(invalid("raft.max_pending_reads", "must be at least 1"));
        }
        let limits = &self.limits;
        if limits.max_key_bytes == 0 || limits.max_key_bytes > ringkv_storage::KEY_BYTES_MAX as u64
        {
            return Err(invalid(
                "limits.max_key_bytes",
                format!("must be in 1..={}", ringkv_storage::KEY_BYTES_MAX),
            ));
        }
        if limits.max_value_bytes > ringkv_storage::VALUE_BYTES_MAX as u64 {
            return Err(invalid(
                "limits.max_value_bytes",
                format!("must be at most {}", ringkv_storage::VALUE_BYTES_MAX),
            ));
        }
        if limits.max_request_bytes < limits.max_key_bytes + limits.max_value_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at least max_key_bytes + max_value_bytes",
            ));
        }
        if limits.max_request_bytes > raft.max_uncommitted_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must not exceed raft.max_uncommitted_bytes (a request must fit in one proposal)",
            ));
        }
        // The transport frames requests in 16 MiB; leave room for the envelope and encoding.
        if limits.max_request_bytes > 15 << 20 {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at most 15 MiB (the transport's frame limit is 16 MiB)",
            ));
        }
        if limits.max_batch_ops == 0 {
            return Err(invalid("limits.max_batch_ops", "must be at least 1"));
        }
        for (field, value) in [
            ("limits.client_queue", limits.client_queue),
            ("limits.client_inflight_max", limits.client_inflight_max),
            (
                "limits.raft_inbound_batches_max",
                limits.raft_inbound_batches_max,
            ),
            ("limits.turn_inputs_max", limits.turn_inputs_max),
            ("limits.http_connections_max", limits.http_connections_max),
            ("limits.max_connections", limits.max_connections),
            (
                "limits.max_client_connections",
                limits.max_client_connections,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.client_request_timeout_ms == 0 {
            return Err(invalid(
                "limits.client_request_timeout_ms",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            (
                "limits.client_read_timeout_ms",
                limits.client_read_timeout_ms,
            ),
            (
                "limits.client_write_timeout_ms",
                limits.client_write_timeout_ms,
            ),
            (
                "limits.client_idle_timeout_ms",
                limits.client_idle_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.client_timeout_max_ms < limits.client_request_timeout_ms
            || limits.client_timeout_max_ms > u64::from(u32::MAX)
        {
            return Err(invalid(
                "limits.client_timeout_max_ms",
                "must be at least limits.client_request_timeout_ms and at most 4294967295",
            ));
        }
        for (field, value) in [
            (
                "limits.raft_inbound_bytes_max",
                limits.raft_inbound_bytes_max,
            ),
            (
                "limits.client_inbound_bytes_max",
                limits.client_inbound_bytes_max,
            ),
        ] {
            if value < FRAME_BYTES_MAX {
                return Err(invalid(
                    field,
                    format!("must be at least {FRAME_BYTES_MAX} (the largest frame)"),
                ));
            }
        }
        if limits.session_idle_ms != 0
            && limits.session_idle_ms < limits.client_request_timeout_ms.saturating_mul(2)
        {
            return Err(invalid(
                "limits.session_idle_ms",
                "must be 0 (never) or at least twice limits.client_request_timeout_ms, so a \
                 client's retries land before its session expires",
            ));
        }
        if self.storage.cache_mib == 0 {
            return Err(invalid("storage.cache_mib", "must be at least 1"));
        }
        if self.storage.writer_queue_depth == 0 || self.storage.writer_queue_depth > 64 {
            return Err(invalid("storage.writer_queue_depth", "must be in 1..=64"));
        }
        for (field, value) in [
            (
                "storage.snapshots_inbound_max",
                self.storage.snapshots_inbound_max,
            ),
            (
                "storage.snapshots_outbound_max",
                self.storage.snapshots_outbound_max,
            ),
        ] {
            if value == 0 || value > 64 {
                return Err(invalid(field, "must be in 1..=64"));
            }
        }
        self.validate_pd()
    }

    fn validate_pd(&self) -> Result<()> {
        let pd = &self.pd;
        for (field, value) in [
            ("pd.tick_interval_ms", pd.tick_interval_ms),
            ("pd.heartbeat_interval_ms", pd.heartbeat_interval_ms),
            ("pd.request_timeout_ms", pd.request_timeout_ms),
        ] {
            if !(10..=600_000).contains(&value) {
                return Err(invalid(field, "must be in 10..=600000"));
            }
        }
        if pd.heartbeat_timeout_ms < 2 * pd.heartbeat_interval_ms {
            return Err(invalid(
                "pd.heartbeat_timeout_ms",
                "must be at least twice pd.heartbeat_interval_ms (one lost heartbeat must not \
                 mark a node down)",
            ));
        }
        self.pd_settings().validate().map_err(|error| match error {
            ringkv_pd::Error::InvalidSetting { name, reason } => Error::ConfigInvalid {
                field: pd_field(&name),
                reason: reason.into_owned(),
            },
            other => invalid("pd", other.to_string()),
        })
    }

    /// The scheduler settings the cluster starts with (`[pd]` and `replication_factor`).
    pub fn pd_settings(&self) -> ringkv_pd::Settings {
        let pd = &self.pd;
        ringkv_pd::Settings {
            replication_factor: u32::try_from(self.replication_factor).unwrap_or(u32::MAX),
            repair: pd.repair,
            balance_replicas: pd.balance_replicas,
            balance_leaders: pd.balance_leaders,
            drain: pd.drain,
            split: pd.split,
            max_operators: pd.max_operators,
            max_snapshots_per_node: pd.max_snapshots_per_node,
            max_snapshot_bytes_per_sec: pd.max_snapshot_bytes_per_sec,
            heartbeat_timeout_ms: pd.heartbeat_timeout_ms,
            max_down_time_ms: pd.max_down_time_ms,
            operator_step_timeout_ms: pd.operator_step_timeout_ms,
            split_size_bytes: pd.split_size_bytes,
            split_load_per_sec: pd.split_load_per_sec,
        }
    }

    /// Whether this node is a member of the initial cluster (and so hosts the placement driver).
    pub fn hosts_pd(&self) -> bool {
        self.initial_cluster.iter().any(|e| e.node == self.node_id)
    }

    /// The Raft core configuration of this node's replica of `group`, Raft member `member`.
    pub fn raft_config(&self, group: ringkv_types::ShardId, member: NodeId) -> ringkv_raft::Config {
        let mut config = ringkv_raft::Config::new(member, group);
        let raft = &self.raft;
        config.election_timeout_ticks = raft.election_timeout_ticks;
        config.heartbeat_ticks = raft.heartbeat_ticks;
        config.lease_margin_ticks = raft.lease_margin_ticks;
        config.max_inflight_messages = raft.max_inflight_messages;
        config.max_message_bytes = raft.max_message_bytes;
        config.max_uncommitted_bytes = raft.max_uncommitted_bytes;
        config.max_apply_bytes = raft.max_apply_bytes;
        config.max_pending_reads = raft.max_pending_reads;
        config.pre_vote = raft.pre_vote;
        config.check_quorum = raft.check_quorum;
        // Every snapshot send ends in a report (`SnapshotEvent::Sent`), bounded by its time
        // budget; a timer re-send would start a second copy of a large shard mid-transfer.
        config.snapshot_reports = true;
        config.seed = group.get().wrapping_mul(0x2545_F491_4F6C_DD1D) ^ member.get();
        config
    }

    /// The tick length.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }

    /// The address of `node` in `initial_cluster`.
    pub fn address_of(&self, node: NodeId) -> Option<&str> {
        self.initial_cluster
            .iter()
            .find(|e| e.node == node)
            .map(|e| e.addr.as_str())
    }
}

/// The config field of a PD setting named by `Settings::validate`.
fn pd_field(name: &str) -> &'static str {
    match name {
        "replication_factor" => "replication_factor",
        "max_operators" => "pd.max_operators",
        "max_snapshots_per_node" => "pd.max_snapshots_per_node",
        "heartbeat_timeout_ms" => "pd.heartbeat_timeout_ms",
        "max_down_time_ms" => "pd.max_down_time_ms",
        "operator_step_timeout_ms" => "pd.operator_step_timeout_ms",
        _ => "pd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
cluster = "local"
listen_addr = "127.0.0.12:7100"
data_dir = "data/node-2"
initial_cluster = ["1@127.0.0.11:7100", "2@127.0.0.12:7100", "3@127.0.0.13:7100"]
[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-2.pem"
key = "/abs/node-2.key"
"#;

    #[test]
    fn a_minimal_file_gets_defaults_and_resolved_paths() {
        let config = NodeConfig::parse(GOOD, Path::new("/etc/ringkv")).unwrap();
        assert_eq!(config.node_id, NodeId(2));
        assert_eq!(config.initial_shards, 16);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.data_dir, Path::new("/etc/ringkv/data/node-2"));
        assert_eq!(config.tls.key, Path::new("/abs/node-2.key"));
        assert_eq!(config.raft.tick_ms, 100);
        assert_eq!(config.limits.max_key_bytes, 4096);
        assert_eq!(config.initial_cluster[2].to_string(), "3@127.0.0.13:7100");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: [(&str, &str, &str); 11] = [
            ("node_id = 2", "node_id = 0", "node_id"),
            ("node_id = 2", "node_id = 4294967296", "node_id"),
            (
                "\"3@127.0.0.13:7100\"",
                "\"4294967299@127.0.0.13:7100\"",
                "initial_cluster",
            ),
            ("node_id = 2", "node_id = 4", "initial_cluster"),
            (
                "\"2@127.0.0.12:7100\"",
                "\"2127.0.0.12:7100\"",
                "initial_cluster",
            ),
            (
                "\"2@127.0.0.12:7100\"",
                "\"1@127.0.0.12:7100\"",
                "initial_cluster",
            ),
            ("cluster = \"local\"", "cluster = \"no spaces\"", "cluster"),
            (
                "listen_addr = \"127.0.0.12:7100\"",
                "listen_addr = \"x\"",
                "listen_addr",
            ),
            (
                "[tls]",
                "replication_factor = 4\n[tls]",
                "replication_factor",
            ),
            ("[tls]", "initial_shards = 0\n[tls]", "initial_shards"),
            (
                "key = \"/abs/node-2.key\"",
                "key = \"k\"\n[raft]\nheartbeat_ticks = 20",
                "raft",
            ),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replace(from, to);
            match NodeConfig::parse(&text, Path::new(".")) {
                Err(Error::ConfigInvalid { field: got, .. }) => {
                    assert!(got.starts_with(field), "{to}: got field {got}");
                }
                other => panic!("{to}: expected an invalid field, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_node_either_bootstraps_or_joins() {
        let joining = GOOD.replace(
            "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
            "join = [\"127.0.0.11:7100\"]\nnode_id = 4",
        )
        .replace("node_id = 2\n", "");
        let config = NodeConfig::parse(&joining, Path::new("/")).unwrap();
        assert!(config.initial_cluster.is_empty());
        assert!(!config.hosts_pd());
        assert_eq!(config.join, vec!["127.0.0.11:7100".to_string()]);
        let cases: [(&str, &str, &str); 5] = [
            (
                "key = \"/abs/node-2.key\"",
                "key = \"k\"\n[pd]\nmax_operators = 0",
                "pd.max_operators",
            ),
            (
                "key = \"/abs/node-2.key\"",
                "key = \"k\"\n[pd]\nheartbeat_timeout_ms = 100",
                "pd.heartbeat_timeout_ms",
            ),
            (
                "key = \"/abs/node-2.key\"",
                "key = \"k\"\n[pd]\ntick_interval_ms = 0",
                "pd.tick_interval_ms",
            ),
            ("[tls]", "join = [\"127.0.0.11:7100\"]\n[tls]", "join"),
            ("initial_cluster = [", "initial_clusterx = [", ""),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replace(from, to);
            match NodeConfig::parse(&text, Path::new(".")) {
                Err(Error::ConfigInvalid { field: got, .. }) => assert_eq!(got, field, "{to}"),
                Err(Error::ConfigParse { .. }) if field.is_empty() => {}
                other => panic!("{to}: expected an invalid field, got {other:?}"),
            }
        }
        let neither = GOOD.replace(
            "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
            "",
        );
        assert!(matches!(
            NodeConfig::parse(&neither, Path::new(".")),
            Err(Error::ConfigInvalid {
                field: "initial_cluster",
                ..
            })
        ));
        let wildcard = joining.replace("127.0.0.12:7100\"", "0.0.0.0:7100\"");
        assert!(matches!(
            NodeConfig::parse(&wildcard, Path::new(".")),
            Err(Error::ConfigInvalid {
                field: "listen_addr",
                ..
            })
        ));
    }

    #[test]
    fn http_is_https_unless_plain_on_loopback() {
        assert!(
            NodeConfig::parse(GOOD, Path::new("."))
                .unwrap()
                .http
                .is_none()
        );
        let https = GOOD.replace("[tls]", "http_addr = \"0.0.0.0:8100\"\n[tls]");
        let http = NodeConfig::parse(&https, Path::new("."))
            .unwrap()
            .http
            .unwrap();
        assert!(http.tls);
        assert_eq!(http.addr, "0.0.0.0:8100".parse().unwrap());
        assert_eq!(http.slow_request, Duration::from_secs(1));
        let plain = GOOD.replace(
            "[tls]",
            "http_addr = \"127.0.0.12:8100\"\nhttp_tls = false\nslow_request_ms = 5\n[tls]",
        );
        let http = NodeConfig::parse(&plain, Path::new("."))
            .unwrap()
            .http
            .unwrap();
        assert!(!http.tls);
        assert_eq!(http.slow_request, Duration::from_millis(5));
        for (text, field) in [
            (
                "http_addr = \"10.0.0.1:8100\"\nhttp_tls = false",
                "http_tls",
            ),
            ("http_addr = \"0.0.0.0:8100\"\nhttp_tls = false", "http_tls"),
            ("http_addr = \"localhost:8100\"", "http_addr"),
            (
                "http_addr = \"127.0.0.1:1\"\nslow_request_ms = 0",
                "slow_request_ms",
            ),
        ] {
            let bad = GOOD.replace("[tls]", &format!("{text}\n[tls]"));
            match NodeConfig::parse(&bad, Path::new(".")) {
                Err(Error::ConfigInvalid { field: got, .. }) => assert_eq!(got, field, "{text}"),
                other => panic!("{text}: expected an invalid field, got {other:?}"),
            }
        }
        let json = GOOD.replace("[tls]", "log_format = \"json\"\n[tls]");
        assert_eq!(
            NodeConfig::parse(&json, Path::new(".")).unwrap().log_format,
            LogFormat::Json
        );
        let bad = GOOD.replace("[tls]", "log_format = \"xml\"\n[tls]");
        assert!(matches!(
            NodeConfig::parse(&bad, Path::new(".")),
            Err(Error::ConfigParse { .. })
        ));
    }

    #[test]
    fn typos_and_missing_fields_are_parse_errors() {
        let typo = GOOD.replace("[tls]", "initial_shard = 8\n[tls]");
        assert!(matches!(
            NodeConfig::parse(&typo, Path::new(".")),
            Err(Error::ConfigParse { reason, .. }) if reason.contains("initial_shard")
        ));
        let missing = GOOD.replace("cluster = \"local\"", "");
        assert!(matches!(
            NodeConfig::parse(&missing, Path::new(".")),
            Err(Error::ConfigParse { .. })
        ));
        let limits = GOOD.to_string() + "[limits]\nmax_key_bytes = 0\n";
        assert!(matches!(
            NodeConfig::parse(&limits, Path::new(".")),
            Err(Error::ConfigInvalid {
                field: "limits.max_key_bytes",
                ..
            })
        ));
    }

    #[test]
    fn connection_and_request_limits_are_checked_by_name() {
        let parsed = NodeConfig::parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(parsed.limits.client_timeout_max_ms, 30_000);
        assert!(parsed.limits.client_address_validation);
        assert!(parsed.limits.max_client_connections < parsed.limits.max_connections);
        for (table, field) in [
            (
                "client_timeout_max_ms = 1000\n",
                "limits.client_timeout_max_ms",
            ),
            (
                "client_read_timeout_ms = 0\n",
                "limits.client_read_timeout_ms",
            ),
            (
                "client_write_timeout_ms = 0\n",
                "limits.client_write_timeout_ms",
            ),
            (
                "client_idle_timeout_ms = 0\n",
                "limits.client_idle_timeout_ms",
            ),
            (
                "max_client_connections = 0\n",
                "limits.max_client_connections",
            ),
            (
                "client_inbound_bytes_max = 1048576\n",
                "limits.client_inbound_bytes_max",
            ),
            (
                "raft_inbound_bytes_max = 1048576\n",
                "limits.raft_inbound_bytes_max",
            ),
        ] {
            let text = GOOD.to_string() + "[limits]\n" + table;
            match NodeConfig::parse(&text, Path::new(".")) {
                Err(Error::ConfigInvalid { field: named, .. }) => assert_eq!(named, field),
                other => panic!("{table}: expected {field} to be refused, got {other:?}"),
            }
        }
        let text = GOOD.to_string()
            + "[limits]\nmax_client_connections = 10\nclient_address_validation = false\n";
        let parsed = NodeConfig::parse(&text, Path::new(".")).unwrap();
        assert_eq!(parsed.limits.max_client_connections, 10);
        assert!(!parsed.limits.client_address_validation);
    }

    #[test]
    fn the_documented_examples_are_valid() {
        let example = include_str!("../../../config/node.example.toml");
        let config = NodeConfig::parse(example, Path::new("/x/config")).unwrap();
        assert_eq!(config.initial_cluster.len(), 3);
        assert_eq!(config.raft.log_compaction_entries, 100_000);
        assert!(!config.debug.fault_injection);
        for (id, text) in [
            (1, include_str!("../../../config/local-3/node-1.toml")),
            (2, include_str!("../../../config/local-3/node-2.toml")),
            (3, include_str!("../../../config/local-3/node-3.toml")),
        ] {
            let config = NodeConfig::parse(text, Path::new("/x/config/local-3")).unwrap();
            assert_eq!(config.node_id, NodeId(id));
            assert_eq!(
                config.address_of(NodeId(id)),
                Some(config.listen_addr.to_string().as_str())
            );
            assert_eq!(config.advertise_addr, config.listen_addr.to_string());
        }
    }

    #[test]
    fn addresses_may_be_dns_names_and_advertise_defaults_sensibly() {
        let named = GOOD
            .replace("127.0.0.11:7100", "ringkv-1:7100")
            .replace("\"2@127.0.0.12:7100\"", "\"2@ringkv-2.ringkv.svc:7100\"")
            .replace("127.0.0.13:7100", "ringkv-3:7100")
            .replace(
                "listen_addr = \"127.0.0.12:7100\"",
                "listen_addr = \"0.0.0.0:7100\"",
            );
        let config = NodeConfig::parse(&named, Path::new("/")).unwrap();
        assert_eq!(
            config.advertise_addr, "ringkv-2.ringkv.svc:7100",
            "own initial entry"
        );
        assert_eq!(config.address_of(NodeId(1)), Some("ringkv-1:7100"));
        let explicit = named.replace(
            "[tls]",
            "advertise_addr = \"ringkv-2.ringkv.svc:7100\"\n[tls]",
        );
        assert!(NodeConfig::parse(&explicit, Path::new("/")).is_ok());
        let other = named.replace("[tls]", "advertise_addr = \"elsewhere:7100\"\n[tls]");
        assert!(matches!(
            NodeConfig::parse(&other, Path::new("/")),
            Err(Error::ConfigInvalid {
                field: "advertise_addr",
                ..
            })
        ));
        // A joining node on 0.0.0.0 needs advertise_addr; join entries may be names.
        let joining = GOOD
            .replace(
                "initial_cluster = [\"1@127.0.0.11:7100\", \"2@127.0.0.12:7100\", \"3@127.0.0.13:7100\"]",
                "join = [\"ringkv-1:7100\", \"10.0.0.1:7100\"]",
            )
            .replace("node_id = 2", "node_id = 4")
            .replace("listen_addr = \"127.0.0.12:7100\"", "listen_addr = \"0.0.0.0:7100\"");
        assert!(matches!(
            NodeConfig::parse(&joining, Path::new("/")),
            Err(Error::ConfigInvalid {
                field: "listen_addr",
                ..
            })
        ));
        let joining = joining.replace("[tls]", "advertise_addr = \"ringkv-4:7100\"\n[tls]");
        let config = NodeConfig::parse(&joining, Path::new("/")).unwrap();
        assert_eq!(config.advertise_addr, "ringkv-4:7100");
        assert_eq!(config.join, vec!["ringkv-1:7100", "10.0.0.1:7100"]);
        for bad in ["ringkv-4", "ringkv-4:0", "bad name:1"] {
            let text = joining.replace("ringkv-4:7100", bad);
            assert!(
                matches!(
                    NodeConfig::parse(&text, Path::new("/")),
                    Err(Error::ConfigInvalid {
                        field: "advertise_addr",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
