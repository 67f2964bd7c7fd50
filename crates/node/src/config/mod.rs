//! The node's TOML configuration: schema, defaults, path resolution and validation. The tables
//! and their defaults are in `sections.rs`, the value checks in `validate.rs`.
//!
//! Every field is documented with its trade-offs in `config/node.example.toml`. Relative paths
//! are relative to the directory of the configuration file. Unknown fields are errors, so a typo
//! never silently falls back to a default.

use crate::error::{Error, Result};
use ringkv_types::NodeId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod sections;
mod validate;

/// A node's address, `<node id>@<host:port>`: one definition with the client's seeds.
pub use ringkv_transport::resolve::Endpoint;
pub use sections::{
    AuthSection, DebugSection, HttpConfig, LimitsConfig, LogFormat, PdSection, RaftConfig,
    StorageSection, TlsConfig,
};

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

/// Most shards a cluster may start with (`initial_shards`): the design target is 10,000 idle
/// shards per node (docs/perf.md).
pub const MAX_INITIAL_SHARDS: u64 = 16_384;

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
        if raw.initial_shards == 0 || raw.initial_shards > MAX_INITIAL_SHARDS {
            return Err(invalid(
                "initial_shards",
                format!("must be in 1..={MAX_INITIAL_SHARDS}"),
            ));
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
        config.quiesce = raft.quiesce;
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
mod tests;
