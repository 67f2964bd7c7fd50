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
//!
//! This file holds the [`Metrics`] of the first two sources; each collector has its own file
//! (`transport.rs`, `disk.rs`, `process.rs`).

mod disk;
mod process;
mod transport;

use disk::DiskCollector;
use process::ProcessCollector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use ringkv_transport::Transport;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;
use transport::TransportCollector;

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

/// Registers `metric` as `name` (with the registry's `ringkv_` prefix) and returns the handle
/// the node updates (a clone sharing the registered value).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// A latency histogram: 19 buckets from 50 µs to about 13 s.
fn latency_histogram() -> Histogram {
    // 50 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

impl Metrics {
    /// The metrics of a node whose data lives in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let mut registry = Registry::with_prefix("ringkv");
        // Fields in registration order (the order of the exposition).
        let mut metrics = Self {
            http_requests: registered(
                &mut registry,
                "http_requests",
                "HTTP API requests by operation and result",
                Family::<Labels2, Counter>::default(),
            ),
            http_request_duration: registered(
                &mut registry,
                "http_request_duration_seconds",
                "HTTP API request latency by operation",
                Family::<Labels1, Histogram>::new_with_constructor(latency_histogram as fn() -> _),
            ),
            requests: registered(
                &mut registry,
                "requests",
                "Native (QUIC) client requests answered, by operation and result",
                Family::<Labels2, Counter>::default(),
            ),
            request_duration: registered(
                &mut registry,
                "request_duration_seconds",
                "Native (QUIC) client request latency by operation, from arrival to answer",
                Family::<Labels1, Histogram>::new_with_constructor(latency_histogram as fn() -> _),
            ),
            raft_leader_changes: registered(
                &mut registry,
                "raft_leader_changes",
                "Leader changes seen by local replicas",
                Counter::default(),
            ),
            raft_campaigns: registered(
                &mut registry,
                "raft_campaigns",
                "Elections started by local replicas (became candidate)",
                Counter::default(),
            ),
            raft_proposals: registered(
                &mut registry,
                "raft_proposals",
                "Entries proposed by local leaders",
                Counter::default(),
            ),
            sessions_expired: registered(
                &mut registry,
                "sessions_expired",
                "Idle client sessions (exactly-once records) dropped by local replicas",
                Counter::default(),
            ),
            keys_expired: registered(
                &mut registry,
                "keys_expired",
                "Keys whose removal this node proposed as leader after their TTL ran out",
                Counter::default(),
            ),
            raft_dropped_messages: registered(
                &mut registry,
                "raft_dropped_messages",
                "Raft messages dropped by the event loop (removed members, unknown groups)",
                Counter::default(),
            ),
            raft_invalid_messages: registered(
                &mut registry,
                "raft_invalid_messages",
                "Peer Raft messages dropped as malformed (indexes, terms, entry runs out of shape)",
                Counter::default(),
            ),
            tls_reloads: registered(
                &mut registry,
                "tls_reloads",
                "Certificate, key and CA bundle reloads (SIGHUP) by result (ok, error)",
                Family::<Labels1, Counter>::default(),
            ),
            raft_shards: registered(
                &mut registry,
                "raft_shards",
                "Local replicas by role",
                Family::<Labels1, Gauge>::default(),
            ),
            raft_shards_quiescent: registered(
                &mut registry,
                "raft_shards_quiescent",
                "Local replicas that are quiescent (not ticked)",
                Gauge::default(),
            ),
            peer_nodes_down: registered(
                &mut registry,
                "peer_nodes_down",
                "Peer nodes sharing a shard with this node, silent for an election timeout",
                Gauge::default(),
            ),
            peer_node_down_reports: registered(
                &mut registry,
                "peer_node_down_reports",
                "Times a silent peer node was reported down to the local shards",
                Counter::default(),
            ),
            raft_commit_lag: registered(
                &mut registry,
                "raft_commit_lag_entries",
                "Entries appended but not committed, summed over local replicas",
                Gauge::default(),
            ),
            raft_apply_lag: registered(
                &mut registry,
                "raft_apply_lag_entries",
                "Entries committed but not applied, summed over local replicas",
                Gauge::default(),
            ),
            storage_fsync_duration: registered(
                &mut registry,
                "storage_fsync_duration_seconds",
                "Group commit latency (journal write and fdatasync)",
                latency_histogram(),
            ),
            storage_space_alarm: registered(
                &mut registry,
                "storage_space_alarm",
                "1 while the data dir's free space is under storage.space_reserve_mib (writes adding \
             data are refused with NoSpace)",
                Gauge::default(),
            ),
            storage_free_bytes: registered(
                &mut registry,
                "storage_free_bytes",
                "Free bytes on the data dir's filesystem",
                Gauge::default(),
            ),
            snapshots_in_flight: registered(
                &mut registry,
                "snapshots_in_flight",
                "Snapshots being received (staged) or sent, by direction",
                Family::<Labels1, Gauge>::default(),
            ),
            snapshots_limited: registered(
                &mut registry,
                "snapshots_limited",
                "Snapshots over storage.snapshots_inbound_max / snapshots_outbound_max, by direction \
             (inbound: refused, the sender retries; outbound: waited for a slot)",
                Family::<Labels1, Counter>::default(),
            ),
            storage_group_commit_entries: registered(
                &mut registry,
                "storage_group_commit_entries",
                "Raft log entries per group commit",
                Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            ),
            storage_group_commit_bytes: registered(
                &mut registry,
                "storage_group_commit_bytes",
                "Bytes per group commit",
                Histogram::new(exponential_buckets(256.0, 4.0, 12)),
            ),
            pd_operators: registered(
                &mut registry,
                "pd_operators",
                "Operators the placement driver ended, by kind and result (cluster-wide)",
                Family::<Labels2, Gauge>::default(),
            ),
            pd_operators_in_flight: registered(
                &mut registry,
                "pd_operators_in_flight",
                "Operators in flight at the placement driver, by kind",
                Family::<Labels1, Gauge>::default(),
            ),
            pd_node_replicas: registered(
                &mut registry,
                "pd_node_replicas",
                "Replicas per node as the placement driver last heard",
                Family::<[(&'static str, String); 1], Gauge>::default(),
            ),
            pd_node_leaders: registered(
                &mut registry,
                "pd_node_leaders",
                "Leaders per node as the placement driver last heard",
                Family::<[(&'static str, String); 1], Gauge>::default(),
            ),
            transport: Arc::new(TransportCollector::default()),
            registry,
        };
        metrics
            .registry
            .register_collector(Box::new(metrics.transport.clone()));
        metrics.registry.register_collector(Box::new(DiskCollector {
            data_dir: data_dir.to_path_buf(),
        }));
        metrics
            .registry
            .register_collector(Box::new(ProcessCollector));
        metrics
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

/// Encodes one counter read at scrape time.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one gauge read at scrape time.
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
