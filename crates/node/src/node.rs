//! Starting and stopping a node: open the store, restore or bootstrap the groups (`node/open.rs`),
//! start the transport, and run the event loop until shutdown.

use crate::agent::Agent;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, LoopChannels};
use crate::service::Service;
use crate::store_check;
use ringkv_transport::certs::TlsIdentity;
use ringkv_transport::{Transport, TransportConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

mod open;
pub use open::{
    BOOTSTRAP_START, LocalState, create_group_batch, initial_hard_state, recorded_bootstrap,
};
pub(crate) use open::{cluster_id, open_group};
use open::{holds_nothing, load_or_bootstrap_map, open_groups, open_store};

/// A file the node writes into its data dir when the placement driver removed it; a node with
/// this file refuses to start (its replicas were rebuilt elsewhere). See [`crate::removed_marker`].
pub use crate::removed_marker::REMOVED_MARKER;

/// Name of the meta record holding the placement driver's applied shard map.
pub const META_SHARD_MAP: &[u8] = b"pd/shard_map";

/// Name of the meta record holding the bootstrap settings this node created its groups with
/// ([`crate::bootstrap::bootstrap_fields`], postcard).
pub const META_BOOTSTRAP: &[u8] = b"node/bootstrap";

/// Calls from the node agent queued for the loop (it makes a few per heartbeat).
const AGENT_QUEUE: usize = 16;

/// A running node. Dropping it stops the node as [`NodeHandle::stop`] does, without waiting.
#[derive(Debug)]
pub struct NodeHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
    local_addr: SocketAddr,
    http: Option<crate::http::HttpServer>,
    tls: TlsReload,
}

/// Reloads the node's certificate, key and CA bundle from the configured paths
/// ([`NodeHandle::reload_tls`]).
#[derive(Clone, Debug)]
pub struct TlsReload {
    config: Arc<NodeConfig>,
    reloader: ringkv_transport::IdentityReloader,
    http: Option<crate::http::HttpReload>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl TlsReload {
    /// Reads `tls.cert`, `tls.key` and `tls.ca_cert` again and, when they load, fit together
    /// and the certificate still names this node, uses them for every new connection of the
    /// node's transport. Otherwise nothing changes: the files in use stay in use. Logs the
    /// outcome and counts it in `ringkv_tls_reloads_total{result}`.
    ///
    /// # Errors
    /// Why the new files were refused (file, PEM, certificate name or TLS errors).
    pub async fn reload(&self) -> Result<()> {
        let tls = &self.config.tls;
        let outcome = match TlsIdentity::load(&tls.ca_cert, &tls.cert, &tls.key)
            .map_err(Error::from)
            .and_then(|identity| {
                check_certificate_names_this_node(&identity, &self.config)?;
                self.reloader.reload(&identity)?;
                Ok(identity)
            }) {
            Ok(identity) => match &self.http {
                Some(http) => http
                    .reload(&identity)
                    .await
                    .map(|()| identity.trust_roots().count()),
                None => Ok(identity.trust_roots().count()),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(cas) => {
                self.metrics
                    .tls_reloads
                    .get_or_create(&[("result", "ok")])
                    .inc();
                info!(
                    cert = %tls.cert.display(),
                    ca_cert = %tls.ca_cert.display(),
                    trusted_cas = cas,
                    "reloaded the certificate, key and CA bundle; new connections use them"
                );
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .tls_reloads
                    .get_or_create(&[("result", "error")])
                    .inc();
                warn!(
                    %error,
                    "certificate reload refused; the certificate, key and CAs in use stay in use"
                );
                Err(error)
            }
        }
    }
}

impl NodeHandle {
    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound TCP address of the HTTP server, when `http_addr` is set.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(crate::http::HttpServer::local_addr)
    }

    /// Reloads the certificate, key and CA bundle (see [`TlsReload::reload`]); `ringkvd` calls
    /// it on SIGHUP.
    ///
    /// # Errors
    /// Why the new files were refused; the old ones stay in use.
    pub async fn reload_tls(&self) -> Result<()> {
        self.tls.reload().await
    }

    /// A handle for [`NodeHandle::reload_tls`] that outlives borrows of the node handle.
    pub fn tls_reloader(&self) -> TlsReload {
        self.tls.clone()
    }

    /// Stops the node gracefully: the loop finishes its turn, waits for pending group commits,
    /// flushes the store and closes the transport.
    ///
    /// # Errors
    /// The error that stopped the loop earlier, if any.
    pub async fn stop(mut self) -> Result<()> {
        // No new HTTP requests once stopping starts.
        self.http.take();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.join().await
    }

    /// Waits until the loop ends (on its own only after a fatal error).
    ///
    /// # Errors
    /// The fatal error.
    pub async fn join(&mut self) -> Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join_error) => Err(Error::Io(std::io::Error::other(format!(
                "event loop task failed: {join_error}"
            )))),
        }
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Refuses a certificate that does not name `node-<node_id>.<cluster>`: with another node's
/// certificate, peers would route that node's traffic here (or refuse every stream, as the
/// stream header and the certificate disagree), which is far harder to diagnose than this.
///
/// # Errors
/// [`Error::CertificateMismatch`] naming the file, who it is for, and who this node is.
pub fn check_certificate_names_this_node(
    identity: &TlsIdentity,
    config: &NodeConfig,
) -> Result<()> {
    let found = identity.peer_identity(&config.cluster);
    if found == ringkv_types::PeerIdentity::Node(config.node_id) {
        return Ok(());
    }
    Err(Error::CertificateMismatch {
        path: config.tls.cert.clone(),
        found: found.to_string(),
        node: config.node_id,
        cluster: config.cluster.clone(),
    })
}

/// Starts a node: store, groups, transport and event loop. Must run inside a Tokio runtime.
///
/// # Errors
/// Storage, certificate or bind failures, or a data dir of another node.
pub async fn start(mut config: NodeConfig) -> Result<NodeHandle> {
    if let Some(reason) = crate::removed_marker::read(&config.data_dir) {
        return Err(Error::Fatal { reason });
    }
    // The certificate first: a node presenting another node's name must not touch its store.
    let identity = TlsIdentity::load(&config.tls.ca_cert, &config.tls.cert, &config.tls.key)?;
    check_certificate_names_this_node(&identity, &config)?;
    let (store, store_identity) = open_store(&config)?;
    let check_with_pd = holds_nothing(&store)?;
    let bootstrap_fields = recorded_bootstrap(&store, &mut config)?;
    let start_state: crate::service::SharedStartState =
        Arc::new(std::sync::Mutex::new(ringkv_types::StartState {
            checking: check_with_pd,
            bootstrap: bootstrap_fields,
        }));

    let http_identity = config.http.as_ref().map(|_| identity.clone());
    let mut transport_config =
        TransportConfig::new(config.node_id, config.cluster.clone(), config.listen_addr);
    transport_config.client_inflight_max = config.limits.client_inflight_max;
    transport_config.watchers_per_connection_max = config.limits.watchers_per_connection_max;
    transport_config.client_request_timeout =
        Duration::from_millis(config.limits.client_request_timeout_ms);
    transport_config.raft_inbound_batches_max = config.limits.raft_inbound_batches_max;
    transport_config.max_frame_bytes = crate::config::FRAME_BYTES_MAX;
    transport_config.raft_inbound_bytes_max = config.limits.raft_inbound_bytes_max;
    transport_config.max_connections = config.limits.max_connections;
    transport_config.max_client_connections = config.limits.max_client_connections;
    transport_config.client_address_validation = config.limits.client_address_validation;
    transport_config.client_inbound_bytes_max = config.limits.client_inbound_bytes_max;
    transport_config.client_read_timeout =
        Duration::from_millis(config.limits.client_read_timeout_ms);
    transport_config.client_write_timeout =
        Duration::from_millis(config.limits.client_write_timeout_ms);
    transport_config.client_timeout_max =
        Duration::from_millis(config.limits.client_timeout_max_ms);
    transport_config.client_idle_timeout =
        Duration::from_millis(config.limits.client_idle_timeout_ms);
    let (calls_tx, calls) = mpsc::channel(config.limits.client_queue);
    let authenticator = Arc::new(crate::auth::Authenticator::new(
        config.cluster.clone(),
        Duration::from_secs(config.auth.token_ttl),
    ));
    let watch_hub = Arc::new(crate::watch::WatchHub::new(crate::watch::WatchLimits {
        history_bytes: usize::try_from(config.limits.watch_history_bytes).unwrap_or(usize::MAX),
        buffer_bytes_max: usize::try_from(config.limits.watch_buffer_bytes_max)
            .unwrap_or(usize::MAX),
        watchers_max: config.limits.watchers_max,
    }));
    let mut metrics = crate::metrics::Metrics::new(&config.data_dir);
    metrics.register_watch(&watch_hub);
    let metrics = std::sync::Arc::new(metrics);
    // The transport starts before any group exists: a new data dir is checked with PD through
    // it first. Raft messages and client calls wait in their queues until the loop runs.
    let (transport, inbound) = Transport::builder(transport_config, identity)
        .handler(
            Service::new(calls_tx.clone(), authenticator.clone())
                .with_metrics(metrics.clone())
                .with_start_state(start_state.clone())
                .with_watch(watch_hub.clone()),
        )
        .start()?;
    if check_with_pd {
        store_check::check_new_store(&config, &transport, &store_identity).await?;
    }
    // IMPORTANT: before the groups are created: a peer checking its own new data dir must
    // not count this node as one that has not created the cluster once it has.
    start_state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .checking = false;

    let (map, pd_state) = load_or_bootstrap_map(&store, &config)?;
    let (groups, mut local) = open_groups(&store, &config)?;
    info!(
        node = %config.node_id,
        groups = groups.len(),
        data_dir = %config.data_dir.display(),
        "opened the store"
    );
    if let Some(state) = &pd_state {
        authenticator.update(&state.auth);
    }
    let local_addr = transport.local_addr()?;
    for endpoint in &config.initial_cluster {
        transport.add_peer(endpoint.node, &endpoint.addr);
    }
    // Nodes that joined later: the agent refreshes these from the PD leader.
    for info in pd_state.iter().flat_map(|state| state.nodes.values()) {
        if info.id == config.node_id {
            continue;
        }
        if let Ok(addr) = ringkv_transport::resolve::check_host_port(&info.addr) {
            transport.add_peer(info.id, addr);
        }
    }
    let (agent_tx, agent_rx) = mpsc::channel(AGENT_QUEUE);
    let agent = Agent::new(config.clone(), store.clone(), calls_tx, agent_tx)
        .with_store_incarnation(store_identity.incarnation);
    info!(node = %config.node_id, addr = %local_addr, "listening");

    let (shutdown_tx, shutdown) = oneshot::channel();
    local.pd_state = pd_state;
    let (health_publisher, health) = crate::health::channel();
    let http = match (&config.http, &http_identity) {
        (Some(http), Some(identity)) => {
            let authenticator = authenticator.clone();
            Some(
                crate::http::start(
                    &config,
                    http,
                    identity,
                    health,
                    metrics.clone(),
                    authenticator,
                )
                .await?,
            )
        }
        _ => None,
    };
    let tls = TlsReload {
        config: Arc::new(config.clone()),
        reloader: transport.identity_reloader(),
        http: http.as_ref().map(crate::http::HttpServer::reloader),
        metrics: metrics.clone(),
    };
    let mut event_loop = EventLoop::new(config, store, transport, map, groups, local, agent)
        .with_health(health_publisher)
        .with_metrics(metrics)
        .with_watch(watch_hub);
    event_loop.set_authenticator(authenticator);
    let channels = LoopChannels {
        inbound,
        calls,
        shutdown,
        agent: agent_rx,
    };
    let task = tokio::spawn(event_loop.run(channels));
    Ok(NodeHandle {
        shutdown: Some(shutdown_tx),
        task,
        local_addr,
        http,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::open::*;
    use super::*;
    use crate::bootstrap;
    use crate::replica_meta;
    use ringkv_storage::{Store, StoreConfig, WriteBatchBuilder};
    use ringkv_types::raft::HardState;
    use ringkv_types::{LogIndex, NodeId, ShardDescriptor, ShardId, Term};
    use ringkv_types::{ReplicaRole, member_id, ring::Arc};

    fn descriptor(shard: u64) -> ShardDescriptor {
        ShardDescriptor {
            id: ShardId(shard),
            arc: Arc::FULL,
            epoch: bootstrap::INITIAL_EPOCH,
            replicas: [1, 2, 3]
                .into_iter()
                .map(|node| {
                    ringkv_types::Replica::new(member_id(NodeId(node), 1), ReplicaRole::Voter)
                })
                .collect(),
        }
    }

    /// A node given another node's certificate (or a client's) refuses to start, says whose
    /// certificate it is, and leaves its data dir alone.
    #[tokio::test]
    async fn a_certificate_for_another_node_stops_the_start() {
        use ringkv_transport::certs::{ClusterCa, Validity};
        let dir = tempfile::tempdir().unwrap();
        let validity = Validity::days_from_now(1);
        let ca = ClusterCa::generate("c1", validity).unwrap();
        ca.to_pem_pair().write(dir.path(), "ca").unwrap();
        ca.issue_node(NodeId(2), &[], validity)
            .unwrap()
            .write(dir.path(), "node-2")
            .unwrap();
        ca.issue_client("ringctl", validity)
            .unwrap()
            .write(dir.path(), "client")
            .unwrap();
        for (stem, found) in [
            ("node-2", "node n2"),
            ("client", "client certificate ringctl"),
        ] {
            let text = format!(
                r#"node_id = 1
cluster = "c1"
listen_addr = "127.0.0.1:1"
data_dir = "data"
initial_cluster = ["1@127.0.0.1:1"]
initial_shards = 1
replication_factor = 1
[tls]
ca_cert = "ca.pem"
cert = "{stem}.pem"
key = "{stem}.key"
"#
            );
            let config = NodeConfig::parse(&text, dir.path()).unwrap();
            let error = start(config)
                .await
                .expect_err("started with a foreign certificate");
            assert!(
                matches!(
                    error,
                    Error::CertificateMismatch {
                        node: NodeId(1),
                        ..
                    }
                ),
                "{error}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("{stem}.pem is for {found}")),
                "{message}"
            );
            assert!(message.contains("node-1.c1"), "{message}");
            assert!(!dir.path().join("data").exists(), "the store was opened");
        }
    }

    /// A split that replaces an uninitialized replica keeps the term and vote it persisted:
    /// a replica must never vote twice in one term (Raft §5.2). A replica that only heard of
    /// lower terms starts at the initial term with no vote.
    #[test]
    fn a_new_group_keeps_a_higher_persisted_term_and_vote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let voted = HardState {
            term: Term(9),
            vote: member_id(NodeId(2), 1),
            commit: LogIndex::ZERO,
        };
        let mut batch = WriteBatchBuilder::new();
        batch.set_hard_state(ShardId(7), voted);
        store.write(batch).unwrap();
        store
            .write(create_group_batch(&descriptor(7), BOOTSTRAP_START, Some(voted), false).unwrap())
            .unwrap();
        let state = store.group(ShardId(7)).unwrap().hard_state();
        assert_eq!(state.term, Term(9));
        assert_eq!(state.vote, voted.vote);
        assert_eq!(state.commit, LogIndex(bootstrap::INITIAL_LOG_INDEX));

        let old = HardState {
            term: Term(2),
            vote: member_id(NodeId(3), 1),
            commit: LogIndex::ZERO,
        };
        store
            .write(create_group_batch(&descriptor(8), BOOTSTRAP_START, Some(old), false).unwrap())
            .unwrap();
        let state = store.group(ShardId(8)).unwrap().hard_state();
        assert_eq!(state.term, Term(bootstrap::INITIAL_LOG_INDEX));
        assert_eq!(state.vote, NodeId::NONE);
        assert_eq!(
            replica_meta::load_descriptors(&store)
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            vec![ShardId(7), ShardId(8)]
        );
        let storage = store.group(ShardId(8)).unwrap();
        assert!(is_brand_new(&storage));
        assert!(!is_brand_new(&store.group(ShardId(7)).unwrap()));
    }

    /// A group created where its keys' versions stand (a split's new shard continuing its
    /// parent's log) records it, and a replica opened over it applies puts without reading
    /// their previous values; one created without the claim (a child of the first split
    /// format) reads them.
    #[test]
    fn a_group_that_continues_its_parents_versions_opens_knowing_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("data"))).unwrap();
        let config = NodeConfig::parse(
            r#"node_id = 1
cluster = "c1"
listen_addr = "127.0.0.1:1"
data_dir = "data"
initial_cluster = ["1@127.0.0.1:1"]
replication_factor = 1
[tls]
ca_cert = "ca.pem"
cert = "node.pem"
key = "node.key"
"#,
            dir.path(),
        )
        .unwrap();
        let start = (LogIndex(40), Term(3));
        for (shard, claim) in [(7, true), (8, false)] {
            store
                .write(create_group_batch(&descriptor(shard), start, None, claim).unwrap())
                .unwrap();
            let group = open_group(
                &store,
                &config,
                ShardId(shard),
                member_id(NodeId(1), 1),
                Some(descriptor(shard)),
            )
            .unwrap();
            let data = group.machine.data().unwrap();
            assert_eq!(data.versions_follow_index, claim, "shard {shard}");
        }
    }
}
