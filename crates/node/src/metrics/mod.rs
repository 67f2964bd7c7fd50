//! Prometheus metrics of a node (`GET /metrics`, see `docs/http.md` for the list).
//!
//! Every series is prefixed `ringkv_` and follows Prometheus naming (`_total` counters,
//! `_seconds` and `_bytes` base units). Labels have bounded values only: operation names,
//! results (error codes), roles, directions, operator kinds and peer node ids; never a key, a
//! value or a user string.
//!
//! Three sources:
//! - counters and histograms updated where things happen (HTTP handlers, the event loop's
//!   proposals, leader changes, dropped messages, group commits);
//! - gauges the event loop sets once per tick (shards by role, commit and apply lag, PD's
//!   operator counts);
//! - collectors that read at scrape time what others already count: the transport's per-peer
//!   counters and round-trip times (`ringkv_transport::stats`, not counted twice), the size of
//!   the data dir, and the process (`/proc/self`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use ringkv_transport::Transport;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// Two labels with static values.
pub type Labels2 = [(&'static str, &'static str); 2];
/// One label with a static value.
pub type Labels1 = [(&'static str, &'static str); 1];

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP API requests by `op` and `result` (`ok` or the error code).
    pub http_requests: Family<Labels2, Counter>,
    /// HTTP API request latency by `op`.
    pub http_request_duration: Family<Labels1, Histogram>,
    /// Native client requests by `op` and `result`.
    pub requests: Family<Labels2, Counter>,
    /// Native client request latency by `op`.
    pub request_duration: Family<Labels1, Histogram>,
    /// Times a local replica saw its group's leader change (elections, transfers).
    pub raft_leader_changes: Counter,
    /// Elections started by local replicas (a replica became candidate after its election
    /// timeout, or on a leader transfer). A steady rise without failures means the election
    /// timeout is too short for this machine's stalls.
    pub raft_campaigns: Counter,
    /// Entries proposed by local leaders (writes, PD commands, splits, membership changes).
    pub raft_proposals: Counter,
    /// Raft messages the event loop dropped (for removed members or unknown groups).
    pub raft_dropped_messages: Counter,
    /// Client sessions dropped by expiry passes applied by local replicas.
    pub sessions_expired: Counter,
    /// Keys whose removal this node proposed, as leader, after their TTL ran out.
    pub keys_expired: Counter,
    /// Peer Raft messages dropped as malformed at the node boundary (`ringkv_raft::validate`).
    pub raft_invalid_messages: Counter,
    /// Certificate reloads (SIGHUP) by `result` (`ok`, `error`).
    pub tls_reloads: Family<Labels1, Counter>,
    /// Local replicas by `role`.
    pub raft_shards: Family<Labels1, Gauge>,
    /// Local replicas that are quiescent (not ticked: `raft.quiesce`).
    pub raft_shards_quiescent: Gauge,
    /// Peer nodes sharing a shard with this node that are silent for an election timeout.
    pub peer_nodes_down: Gauge,
    /// Times a silent peer node was reported down to the local shards.
    pub peer_node_down_reports: Counter,
    /// Entries appended but not committed, summed over local replicas.
    pub raft_commit_lag: Gauge,
    /// Entries committed but not applied, summed over local replicas.
    pub raft_apply_lag: Gauge,
    /// Journal commit latency, its fdatasync included (one per group commit).
    pub storage_fsync_duration: Histogram,
    /// Raft log entries per group commit.
    pub storage_group_commit_entries: Histogram,
    /// Bytes per group commit.
    pub storage_group_commit_bytes: Histogram,
    /// 1 while the low-disk-space alarm is up (client writes adding data refused), else 0.
    pub storage_space_alarm: Gauge,
    /// Free bytes on the data dir's filesystem.
    pub storage_free_bytes: Gauge,
    /// Snapshots being received (staged) or sent, by `direction` (`inbound`, `outbound`).
    pub snapshots_in_flight: Family<Labels1, Gauge>,
    /// Snapshots over the concurrency limit, by `direction`: inbound ones refused, outbound
    /// ones that waited for a slot.
    pub snapshots_limited: Family<Labels1, Counter>,
    /// Operators PD finished or cancelled, by `kind` and `result` (cluster-wide, from this
    /// node's PD view).
    pub pd_operators: Family<Labels2, Gauge>,
    /// Operators in flight at PD by `kind`.
    pub pd_operators_in_flight: Family<Labels1, Gauge>,
    /// Replicas per node as PD last heard (balance), by `node`.
    pub pd_node_replicas: Family<[(&'static str, String); 1], Gauge>,
    /// Leaders per node as PD last heard (balance), by `node`.
    pub pd_node_leaders: Family<[(&'static str, String); 1], Gauge>,
    transport: Arc<TransportCollector>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Metrics {
    /// The metrics of a node whose data lives in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let mut registry = Registry::with_prefix("ringkv");
        let http_requests = Family::<Labels2, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP API requests by operation and result",
            http_requests.clone(),
        );
        let http_request_duration =
            Family::<Labels1, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "HTTP API request latency by operation",
            http_request_duration.clone(),
        );
        let requests = Family::<Labels2, Counter>::default();
        registry.register(
            "requests",
            "Native (QUIC) client requests answered, by operation and result",
            requests.clone(),
        );
        let request_duration =
            Family::<Labels1, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "request_duration_seconds",
            "Native (QUIC) client request latency by operation, from arrival to answer",
            request_duration.clone(),
        );
        let raft_leader_changes = Counter::default();
        registry.register(
            "raft_leader_changes",
            "Leader changes seen by local replicas",
            raft_leader_changes.clone(),
        );
        let raft_campaigns = Counter::default();
        registry.register(
            "raft_campaigns",
            "Elections started by local replicas (became candidate)",
            raft_campaigns.clone(),
        );
        let raft_proposals = Counter::default();
        registry.register(
            "raft_proposals",
            "Entries proposed by local leaders",
            raft_proposals.clone(),
        );
        let sessions_expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Idle client sessions (exactly-once records) dropped by local replicas",
            sessions_expired.clone(),
        );
        let keys_expired = Counter::default();
        registry.register(
            "keys_expired",
            "Keys whose removal this node proposed as leader after their TTL ran out",
            keys_expired.clone(),
        );
        let raft_dropped_messages = Counter::default();
        registry.register(
            "raft_dropped_messages",
            "Raft messages dropped by the event loop (removed members, unknown groups)",
            raft_dropped_messages.clone(),
        );
        let raft_invalid_messages = Counter::default();
        registry.register(
            "raft_invalid_messages",
            "Peer Raft messages dropped as malformed (indexes, terms, entry runs out of shape)",
            raft_invalid_messages.clone(),
        );
        let tls_reloads = Family::<Labels1, Counter>::default();
        registry.register(
            "tls_reloads",
            "Certificate, key and CA bundle reloads (SIGHUP) by result (ok, error)",
            tls_reloads.clone(),
        );
        let raft_shards = Family::<Labels1, Gauge>::default();
        registry.register("raft_shards", "Local replicas by role", raft_shards.clone());
        let raft_shards_quiescent = Gauge::default();
        registry.register(
            "raft_shards_quiescent",
            "Local replicas that are quiescent (not ticked)",
            raft_shards_quiescent.clone(),
        );
        let peer_nodes_down = Gauge::default();
        registry.register(
            "peer_nodes_down",
            "Peer nodes sharing a shard with this node, silent for an election timeout",
            peer_nodes_down.clone(),
        );
        let peer_node_down_reports = Counter::default();
        registry.register(
            "peer_node_down_reports",
            "Times a silent peer node was reported down to the local shards",
            peer_node_down_reports.clone(),
        );
        let raft_commit_lag = Gauge::default();
        registry.register(
            "raft_commit_lag_entries",
            "Entries appended but not committed, summed over local replicas",
            raft_commit_lag.clone(),
        );
        let raft_apply_lag = Gauge::default();
        registry.register(
            "raft_apply_lag_entries",
            "Entries committed but not applied, summed over local replicas",
            raft_apply_lag.clone(),
        );
        let storage_fsync_duration = latency_histogram();
        registry.register(
            "storage_fsync_duration_seconds",
            "Group commit latency (journal write and fdatasync)",
            storage_fsync_duration.clone(),
        );
        let storage_space_alarm = Gauge::default();
        registry.register(
            "storage_space_alarm",
            "1 while the data dir's free space is under storage.space_reserve_mib (writes adding \
             data are refused with NoSpace)",
            storage_space_alarm.clone(),
        );
        let storage_free_bytes = Gauge::default();
        registry.register(
            "storage_free_bytes",
            "Free bytes on the data dir's filesystem",
            storage_free_bytes.clone(),
        );
        let snapshots_in_flight = Family::<Labels1, Gauge>::default();
        registry.register(
            "snapshots_in_flight",
            "Snapshots being received (staged) or sent, by direction",
            snapshots_in_flight.clone(),
        );
        let snapshots_limited = Family::<Labels1, Counter>::default();
        registry.register(
            "snapshots_limited",
            "Snapshots over storage.snapshots_inbound_max / snapshots_outbound_max, by direction \
             (inbound: refused, the sender retries; outbound: waited for a slot)",
            snapshots_limited.clone(),
        );
        let storage_group_commit_entries = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "storage_group_commit_entries",
            "Raft log entries per group commit",
            storage_group_commit_entries.clone(),
        );
        let storage_group_commit_bytes = Histogram::new(exponential_buckets(256.0, 4.0, 12));
        registry.register(
            "storage_group_commit_bytes",
            "Bytes per group commit",
            storage_group_commit_bytes.clone(),
        );
        let pd_operators = Family::<Labels2, Gauge>::default();
        registry.register(
            "pd_operators",
            "Operators the placement driver ended, by kind and result (cluster-wide)",
            pd_operators.clone(),
        );
        let pd_operators_in_flight = Family::<Labels1, Gauge>::default();
        registry.register(
            "pd_operators_in_flight",
            "Operators in flight at the placement driver, by kind",
            pd_operators_in_flight.clone(),
        );
        let pd_node_replicas = Family::<[(&'static str, String); 1], Gauge>::default();
        registry.register(
            "pd_node_replicas",
            "Replicas per node as the placement driver last heard",
            pd_node_replicas.clone(),
        );
        let pd_node_leaders = Family::<[(&'static str, String); 1], Gauge>::default();
        registry.register(
            "pd_node_leaders",
            "Leaders per node as the placement driver last heard",
            pd_node_leaders.clone(),
        );
        let transport = Arc::new(TransportCollector::default());
        registry.register_collector(Box::new(transport.clone()));
        registry.register_collector(Box::new(DiskCollector {
            data_dir: data_dir.to_path_buf(),
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            http_requests,
            http_request_duration,
            requests,
            request_duration,
            raft_leader_changes,
            raft_campaigns,
            raft_proposals,
            raft_dropped_messages,
            raft_invalid_messages,
            tls_reloads,
            sessions_expired,
            keys_expired,
            raft_shards,
            raft_shards_quiescent,
            peer_nodes_down,
            peer_node_down_reports,
            raft_commit_lag,
            raft_apply_lag,
            storage_fsync_duration,
            storage_group_commit_entries,
            storage_group_commit_bytes,
            storage_space_alarm,
            storage_free_bytes,
            snapshots_in_flight,
            snapshots_limited,
            pd_operators,
            pd_operators_in_flight,
            pd_node_replicas,
            pd_node_leaders,
            transport,
        }
    }

    /// Registers the watch hub's series: `ringkv_watchers` (gauge) and
    /// `ringkv_watchers_cancelled_total` (counter of watchers cancelled as slow).
    pub fn register_watch(&mut self, hub: &crate::watch::WatchHub) {
        self.registry.register(
            "watchers",
            "Watchers registered on this node (one per watched shard)",
            hub.watchers_gauge.clone(),
        );
        self.registry.register(
            "watchers_cancelled",
            "Watchers cancelled by this node because they fell behind (SlowWatcher)",
            hub.cancelled_slow.clone(),
        );
    }

    /// Lets the transport collector read `transport` (held weakly: the node owns it).
    pub fn set_transport(&self, transport: Weak<Transport>) {
        let _ = self.transport.transport.set(transport);
    }

    /// Counts one native client request.
    pub fn request(&self, op: &'static str, result: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&[("op", op), ("result", result)])
            .inc();
        self.request_duration
            .get_or_create(&[("op", op)])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, op: &'static str, result: &'static str, elapsed: Duration) {
        self.http_requests
            .get_or_create(&[("op", op), ("result", result)])
            .inc();
        self.http_request_duration
            .get_or_create(&[("op", op)])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    ///
    /// # Errors
    /// A formatting error (never for a `String` writer in practice).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 << 10);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: T,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<T>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The transport's own counters, read at scrape time.
#[derive(Debug, Default)]
struct TransportCollector {
    transport: OnceLock<Weak<Transport>>,
}

/// One per-peer counter family: `(name, help, value of a link in direction)`.
type PeerCounter = (
    &'static str,
    &'static str,
    fn(&ringkv_transport::PeerStats) -> [(&'static str, u64); 2],
);

/// One per-peer counter without direction: `(name, help, value of a link)`.
type PeerSingle = (
    &'static str,
    &'static str,
    fn(&ringkv_transport::PeerStats) -> u64,
);

impl Collector for TransportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(transport) = self.transport.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let links = transport.peer_links();
        let totals = transport.stats();
        drop(transport);
        let families: [PeerCounter; 3] = [
            (
                "transport_bytes",
                "Raft bytes per peer and direction",
                |s| [("sent", s.bytes_sent), ("received", s.bytes_received)],
            ),
            (
                "transport_messages",
                "Raft messages per peer and direction",
                |s| [("sent", s.messages_sent), ("received", s.messages_received)],
            ),
            (
                "transport_dropped_messages",
                "Raft messages the transport dropped per peer and direction (queues full)",
                |s| [("sent", s.send_drops), ("received", s.receive_drops)],
            ),
        ];
        for (name, help, values) in families {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (peer, stats, _) in &links {
                let peer = peer.get().to_string();
                for (direction, value) in values(stats) {
                    let labels = [("peer", peer.as_str()), ("direction", direction)];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let singles: [PeerSingle; 2] = [
            (
                "transport_reconnects",
                "Connections re-established per peer",
                |s| s.reconnects,
            ),
            (
                "transport_connect_failures",
                "Failed connection attempts per peer",
                |s| s.connect_failures,
            ),
        ];
        for (name, help, value) in singles {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (peer, stats, _) in &links {
                let peer = peer.get().to_string();
                ConstCounter::new(value(stats))
                    .encode(family.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        let mut rtt = encoder.encode_descriptor(
            "transport_rtt_seconds",
            "Smoothed round-trip time per connected peer (QUIC)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (peer, _, round_trip) in &links {
            if let Some(round_trip) = round_trip {
                let peer = peer.get().to_string();
                ConstGauge::new(round_trip.as_secs_f64())
                    .encode(rtt.encode_family(&[("peer", peer.as_str())])?)?;
            }
        }
        counter(
            &mut encoder,
            "transport_handshake_failures",
            "TLS handshakes that failed (peers and clients)",
            totals.handshake_failures,
        )?;
        counter(
            &mut encoder,
            "client_requests",
            "Native client requests received",
            totals.client_requests,
        )?;
        counter(
            &mut encoder,
            "client_busy",
            "Native client requests refused as busy",
            totals.client_busy,
        )?;
        counter(
            &mut encoder,
            "client_timeouts",
            "Native client requests that timed out",
            totals.client_timeouts,
        )?;
        let limits = [
            (
                "transport_connections_refused",
                "Connections refused before the handshake (limits.max_connections)",
                totals.connections_refused,
            ),
            (
                "transport_clients_refused",
                "Client connections closed after the handshake (limits.max_client_connections)",
                totals.clients_refused,
            ),
            (
                "transport_address_validations",
                "New connections sent a QUIC Retry to validate their address",
                totals.address_validations,
            ),
            (
                "client_read_timeouts",
                "Client requests not received within limits.client_read_timeout_ms",
                totals.client_read_timeouts,
            ),
            (
                "client_write_timeouts",
                "Client responses not read within limits.client_write_timeout_ms",
                totals.client_write_timeouts,
            ),
            (
                "client_idle_closed",
                "Client connections closed after limits.client_idle_timeout_ms without a request",
                totals.client_idle_closed,
            ),
            (
                "client_bytes_busy",
                "Client requests refused as busy by limits.client_inbound_bytes_max",
                totals.client_bytes_busy,
            ),
            (
                "transport_raft_inbound_budget_drops",
                "Raft batches from peers dropped by limits.raft_inbound_bytes_max",
                totals.raft_inbound_budget_drops,
            ),
        ];
        for (name, help, value) in limits {
            counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// The size of the data dir, walked at scrape time.
#[derive(Debug)]
struct DiskCollector {
    data_dir: PathBuf,
}

/// Files visited at most per scrape (the store holds tens to hundreds).
const DISK_FILES_MAX: usize = 100_000;

fn dir_bytes(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    let mut visited = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > DISK_FILES_MAX {
                return total;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

impl Collector for DiskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "storage_disk_bytes",
            "Bytes of the node's data dir on disk",
            dir_bytes(&self.data_dir) as i64,
        )
    }
}

/// CPU, memory and open files from `/proc/self` (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn open_fds() -> Option<i64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(seconds) = cpu_seconds() {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                metric.metric_type(),
            )?)?;
        }
        if let Some(bytes) = resident_bytes() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                bytes,
            )?;
        }
        if let Some(fds) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors of the process",
                fds,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), [0u8; 100]).unwrap();
        let metrics = Metrics::new(dir.path());
        metrics.http_request("get", "ok", Duration::from_millis(3));
        metrics.request("put", "busy", Duration::from_millis(1));
        metrics.raft_proposals.inc();
        metrics
            .raft_shards
            .get_or_create(&[("role", "leader")])
            .set(2);
        let text = metrics.encode().unwrap();
        for expected in [
            "ringkv_http_requests_total{op=\"get\",result=\"ok\"} 1",
            "ringkv_requests_total{op=\"put\",result=\"busy\"} 1",
            "ringkv_request_duration_seconds_count{op=\"put\"} 1",
            "ringkv_http_request_duration_seconds_count{op=\"get\"} 1",
            "ringkv_raft_proposals_total 1",
            "ringkv_raft_shards{role=\"leader\"} 2",
            "ringkv_storage_disk_bytes 100",
            "# TYPE ringkv_process_cpu_seconds_total counter",
            "ringkv_process_open_fds ",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("ringkv_"), "{line}");
        }
    }
}
