//! Starting and stopping a node: open the store, restore or bootstrap the groups, start the
//! transport, and run the event loop until shutdown.

use crate::bootstrap;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, LoopChannels};
use crate::group::{Group, NodeStorage};
use crate::service::Service;
use ringkv_raft::{RawNode, Role};
use ringkv_storage::{NodeIdentity, Store, StoreConfig};
use ringkv_transport::certs::TlsIdentity;
use ringkv_transport::{Transport, TransportConfig};
use ringkv_types::{LogIndex, NodeId, ShardId, ShardMap, ring};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Name of the meta record holding the placement driver's applied shard map.
pub const META_SHARD_MAP: &[u8] = b"pd/shard_map";

/// A running node. Dropping it stops the node as [`NodeHandle::stop`] does, without waiting.
#[derive(Debug)]
pub struct NodeHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
    local_addr: SocketAddr,
}

impl NodeHandle {
    /// The bound UDP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the node gracefully: the loop finishes its turn, waits for pending group commits,
    /// flushes the store and closes the transport.
    ///
    /// # Errors
    /// The error that stopped the loop earlier, if any.
    pub async fn stop(mut self) -> Result<()> {
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

/// A stable 64-bit id of a cluster name, kept in the store's node identity.
fn cluster_id(cluster: &str) -> u64 {
    ring::position(cluster.as_bytes())
}

/// Loads the applied shard map, or bootstraps and saves the initial one.
fn load_or_bootstrap_map(store: &Store, config: &NodeConfig) -> Result<ShardMap> {
    if let Some(bytes) = store.meta(META_SHARD_MAP)? {
        let map: ShardMap = postcard::from_bytes(&bytes).map_err(|error| Error::Corrupt {
            what: "shard map",
            reason: error.to_string(),
        })?;
        return Ok(map);
    }
    let nodes: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    let map =
        bootstrap::initial_shard_map(&nodes, config.initial_shards, config.replication_factor);
    let bytes = postcard::to_stdvec(&map).map_err(|error| Error::Corrupt {
        what: "shard map (encode)",
        reason: error.to_string(),
    })?;
    // IMPORTANT: durable before any group is created from it, so a restart sees the same map.
    store.set_meta(META_SHARD_MAP, &bytes)?;
    info!(
        shards = map.shards.len(),
        "bootstrapped the initial shard map"
    );
    Ok(map)
}

/// Opens the data dir, checking (or recording) that it belongs to this node and cluster.
fn open_store(config: &NodeConfig) -> Result<Store> {
    let mut store_config = StoreConfig::new(&config.data_dir);
    store_config.cache_bytes = config.storage.cache_mib << 20;
    store_config.writer_queue_depth = config.storage.writer_queue_depth;
    let store = Store::open(store_config)?;
    let expected = NodeIdentity {
        node: config.node_id,
        cluster: cluster_id(&config.cluster),
    };
    match store.identity()? {
        None => store.set_identity(expected)?,
        Some(found) if found == expected => {}
        Some(found) => {
            return Err(Error::WrongDataDir {
                path: config.data_dir.clone(),
                found: format!("node {} of cluster #{:x}", found.node.get(), found.cluster),
                expected: format!(
                    "node {} of cluster {}",
                    config.node_id.get(),
                    config.cluster
                ),
            });
        }
    }
    Ok(store)
}

/// Creates the replica of every local group, resuming from disk.
fn open_groups(
    store: &Store,
    config: &NodeConfig,
    map: &ShardMap,
) -> Result<BTreeMap<ShardId, Group>> {
    let nodes: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    let mut descriptors = vec![bootstrap::pd_descriptor(&nodes)];
    descriptors.extend(map.shards.iter().cloned());
    let mut groups = BTreeMap::new();
    for descriptor in descriptors {
        if descriptor.replica_on(config.node_id).is_none() {
            continue;
        }
        let shard = descriptor.id;
        let storage = store.group(shard)?;
        let brand_new = storage.hard_state().term == ringkv_types::Term::ZERO
            && storage.bounds().1 == LogIndex::ZERO;
        let applied = store.applied(shard)?;
        let conf_saved = store.conf_state(shard)?.is_some();
        let mut raft_config = config.raft_config(shard);
        raft_config.applied = applied.index;
        let conf = Group::conf_of(&descriptor);
        let mut raw = RawNode::new(raft_config, NodeStorage::new(storage, conf))?;
        let preferred = bootstrap::preferred_leader(
            &nodes,
            config.initial_shards,
            config.replication_factor,
            shard,
        );
        if brand_new && preferred == Some(config.node_id) {
            // Only on a group that has never run: no leader can hold a lease yet.
            raw.campaign()?;
        }
        groups.insert(
            shard,
            Group {
                shard,
                descriptor,
                raw,
                leader: NodeId::NONE,
                role: Role::Follower,
                applied: applied.index,
                conf_saved,
                proposals: BTreeMap::new(),
                reads_new: Vec::new(),
                reads_sent: Default::default(),
                reads_ready: Vec::new(),
                pending_install: None,
                installing: None,
            },
        );
    }
    // Every group with state on disk must be one of ours: anything else means the data dir
    // was used with another layout (a changed initial_cluster or replication_factor).
    for shard in store.groups()? {
        if !groups.contains_key(&shard) {
            warn!(%shard, "the data dir holds a group this node does not host; ignoring it");
        }
    }
    if map.shards.len() as u64 != config.initial_shards {
        info!(
            shards = map.shards.len(),
            initial_shards = config.initial_shards,
            "using the shard map saved in the data dir; initial_shards only applies at bootstrap"
        );
    }
    Ok(groups)
}

/// Starts a node: store, groups, transport and event loop. Must run inside a Tokio runtime.
///
/// # Errors
/// Storage, certificate or bind failures, or a data dir of another node.
pub async fn start(config: NodeConfig) -> Result<NodeHandle> {
    let store = open_store(&config)?;
    let map = load_or_bootstrap_map(&store, &config)?;
    let groups = open_groups(&store, &config, &map)?;
    info!(
        node = %config.node_id,
        groups = groups.len(),
        data_dir = %config.data_dir.display(),
        "opened the store"
    );

    let identity = TlsIdentity::load(&config.tls.ca_cert, &config.tls.cert, &config.tls.key)?;
    let mut transport_config =
        TransportConfig::new(config.node_id, config.cluster.clone(), config.listen_addr);
    transport_config.client_inflight_max = config.limits.client_inflight_max;
    transport_config.client_request_timeout =
        Duration::from_millis(config.limits.client_request_timeout_ms);
    transport_config.raft_inbound_batches_max = config.limits.raft_inbound_batches_max;
    let (calls_tx, calls) = mpsc::channel(config.limits.client_queue);
    let (transport, inbound) = Transport::builder(transport_config, identity)
        .handler(Service::new(calls_tx))
        .start()?;
    let local_addr = transport.local_addr()?;
    for endpoint in &config.initial_cluster {
        transport.add_peer(endpoint.node, endpoint.addr);
    }
    info!(node = %config.node_id, addr = %local_addr, "listening");

    let (shutdown_tx, shutdown) = oneshot::channel();
    let event_loop = EventLoop::new(config, store, transport, map, groups);
    let channels = LoopChannels {
        inbound,
        calls,
        shutdown,
    };
    let task = tokio::spawn(event_loop.run(channels));
    Ok(NodeHandle {
        shutdown: Some(shutdown_tx),
        task,
        local_addr,
    })
}
