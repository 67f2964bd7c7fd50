//! [`Client`]: its shared state and construction. The calls live in the submodules: `kv`
//! (key-value calls and the retry loop), `connection` (dialling, probes, calls), `discovery`
//! (node list and shard map), `pd` (placement-driver calls), `auth` (logins and tokens).

use crate::backoff::{Backoff, Jitter, Pacing, random_u64};
use crate::config::{ClientConfig, Credentials, Endpoint, TlsSource};
use crate::error::{Error, Result};
use crate::health::Health;
use crate::routing::{Routing, Update};
use crate::session::SessionPool;
use bytes::Bytes;
use ringkv_transport::certs::TlsIdentity;
use ringkv_transport::{ClientConnection, ClientEndpoint, Probe};
use ringkv_types::inspect::{InspectRequest, InspectResult};
use ringkv_types::{
    AdminRequest, AdminResult, BatchOp, KvOp, KvRequest, KvResult, NodeAddress, NodeId, NodeStatus,
    ReadConsistency, Request, Response, ShardDescriptor, ShardMap, WireError, WriteSession,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

mod auth;
mod connection;
mod discovery;
mod kv;
mod pd;
mod scan;
mod ttl;
mod versions;
mod watch;

pub use scan::{Scan, ScanEntry, ScanOptions};
pub use ttl::KeyTtl;
pub use versions::{VersionCasOutcome, Versioned};
pub use watch::{Watch, WatchEvent, WatchEventType, WatchOptions};

use connection::{dial_seed_address, reprobe};

pub use auth::IssuedToken;

/// Most node addresses taken from one `GetNodes` answer.
const NODES_LEARNED_MAX: usize = 1024;
/// Immediate retries in a row (reroutes) before a call backs off anyway: one per replica of a
/// three-way replicated shard (see [`Pacing`]).
const REROUTES_IN_A_ROW_MAX: usize = 3;

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the new value was stored.
    pub succeeded: bool,
    /// The value before the operation (`None` when the key was absent). On failure, this is
    /// what the next attempt should expect.
    pub previous: Option<Bytes>,
}

/// A smart client for a ringkv cluster: it caches the shard map, sends each request straight to
/// the leader of the key's shard, and retries reroutes and transient failures within a budget.
///
/// Cheap to clone (clones share connections, routing and write sessions). Every write carries
/// `(session id, sequence)` and a retry reuses it, so a write is applied at most once however
/// often it is retried. A session has at most one write in flight (the node keeps only the last
/// sequence per session and shard), so concurrent writes borrow distinct sessions from a pool.
///
/// # Example
///
/// ```no_run
/// use ringkv_client::{Client, ClientConfig, TlsSource};
///
/// # async fn run() -> ringkv_client::Result<()> {
/// let tls = TlsSource::Files {
///     ca_cert: "data/local/certs/ca.pem".into(),
///     cert: "data/local/certs/client-ringctl.pem".into(),
///     key: "data/local/certs/client-ringctl.key".into(),
/// };
/// let endpoints = ClientConfig::parse_endpoints(&["1@127.0.0.11:7100", "2@127.0.0.12:7100"])?;
/// let client = Client::connect(ClientConfig::new(endpoints, "local", tls)).await?;
/// client.put("greeting", "hello").await?;
/// assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// client.delete("greeting").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// The seed nodes: the configured endpoints, then the nodes found at the seed addresses.
    seeds: Vec<Endpoint>,
    endpoint: ClientEndpoint,
    /// Node addresses: the configured endpoints plus what `GetNodes` taught (bounded by the
    /// cluster's size).
    addresses: RwLock<HashMap<NodeId, String>>,
    connections: Mutex<HashMap<NodeId, ClientConnection>>,
    /// One dial at a time per node, so a burst of calls shares one connection.
    dialing: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    routing: RwLock<Routing>,
    /// Serialises map reloads; `map_generation` lets waiters skip a reload that just happened.
    reload: tokio::sync::Mutex<()>,
    map_generation: AtomicU64,
    /// Where the next map reload starts in the endpoint list.
    next_seed: AtomicUsize,
    sessions: SessionPool,
    jitter: Jitter,
    /// The node that last answered a placement-driver call (group 0's leader, as far as known).
    pd_leader: Mutex<Option<NodeId>>,
    /// The namespace keys are encoded in; `None`: raw keys (root, nodes).
    namespace: Option<String>,
    /// The token sent with every request (token or password credentials).
    token: tokio::sync::Mutex<Option<auth::IssuedToken>>,
    /// Nodes believed down (failed probes or calls); routing avoids them.
    health: Health,
}

/// Why one attempt failed, and what to do next.
enum Failure {
    /// Give up: the error cannot be fixed by retrying.
    Fatal(Error),
    /// Try again; `pause` asks for a backoff first, `reload` for a fresh shard map.
    Retry {
        error: Error,
        pause: bool,
        reload: bool,
    },
}

impl Client {
    /// Connects to the cluster: sets up TLS, then loads the shard map from the first seed
    /// endpoint that answers. Connections to other nodes are made on first use.
    ///
    /// # Errors
    /// [`Error::Config`] / [`Error::InvalidEndpoint`] for a bad configuration,
    /// [`Error::Setup`] for unusable TLS files or a failed bind, [`Error::NoShardMap`] when no
    /// endpoint answered with a shard map.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let identity = match &config.tls {
            TlsSource::Identity(identity) => identity.clone(),
            TlsSource::Files { ca_cert, cert, key } => {
                TlsIdentity::load(ca_cert, cert, key).map_err(|source| Error::Setup { source })?
            }
            TlsSource::CaOnly { ca_cert } => {
                TlsIdentity::ca_only(ca_cert).map_err(|source| Error::Setup { source })?
            }
        };
        let namespace = auth::default_namespace(&config, &identity)?;
        let token = match &config.credentials {
            Credentials::Token(token) => Some(auth::IssuedToken {
                token: token.clone(),
                expires_at_ms: u64::MAX,
            }),
            _ => None,
        };
        let endpoint = ClientEndpoint::with_timeouts(
            &identity,
            &config.cluster,
            config.bind_addr,
            config.failover.keep_alive,
            config.failover.idle_timeout,
        )
        .map_err(|source| Error::Setup { source })?;
        let mut addresses = HashMap::new();
        for Endpoint { node, addr } in &config.endpoints {
            if addresses
                .insert(*node, addr.clone())
                .is_some_and(|a| a != *addr)
            {
                return Err(Error::Config {
                    reason: format!("node {node} is listed with two addresses"),
                });
            }
        }
        let mut seeds = config.endpoints.clone();
        let mut connections = HashMap::new();
        let mut failures = Vec::new();
        for address in &config.seed_addresses {
            let dial = dial_seed_address(
                &endpoint,
                address,
                config.connect_timeout,
                config.failover.probe_timeout,
            );
            match dial.await {
                Ok((found, connection)) => {
                    // A configured `id@addr` for the same node keeps its address.
                    addresses
                        .entry(found.node)
                        .or_insert_with(|| found.addr.clone());
                    if !seeds.iter().any(|seed| seed.node == found.node) {
                        connections.insert(found.node, connection);
                        seeds.push(found);
                    }
                }
                Err(reason) => failures.push(format!("{address}: {reason}")),
            }
        }
        if seeds.is_empty() {
            return Err(Error::NoShardMap {
                reason: format!("no seed endpoint answered ({})", failures.join("; ")),
            });
        }
        for failure in &failures {
            debug!(%failure, "seed address skipped");
        }
        let health = Health::new(config.failover.down_mark_ttl);
        let client = Self {
            inner: Arc::new(Inner {
                health,
                config,
                seeds,
                endpoint,
                addresses: RwLock::new(addresses),
                connections: Mutex::new(connections),
                dialing: Mutex::new(HashMap::new()),
                routing: RwLock::new(Routing::default()),
                reload: tokio::sync::Mutex::new(()),
                map_generation: AtomicU64::new(0),
                next_seed: AtomicUsize::new(0),
                sessions: SessionPool::default(),
                jitter: Jitter::new(random_u64()),
                pd_leader: Mutex::new(None),
                namespace,
                token: tokio::sync::Mutex::new(token),
            }),
        };
        if let Credentials::Password { user, password } = &client.inner.config.credentials {
            let issued = client.login(user, password).await?;
            *client.inner.token.lock().await = Some(issued);
        }
        client.reload_map(0, None).await?;
        Ok(client)
    }

    /// The seed endpoints: the configured ones, then those found at the `host:port` seed
    /// addresses (with the node ids their certificates name).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.seeds
    }

    /// Every node the client can reach: the seed endpoints plus the nodes the cluster reported
    /// (`GetNodes`), sorted by node id.
    pub fn nodes(&self) -> Vec<Endpoint> {
        let mut nodes: Vec<Endpoint> = self
            .inner
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(node, addr)| Endpoint {
                node: *node,
                addr: addr.clone(),
            })
            .collect();
        nodes.sort_by_key(|endpoint| endpoint.node);
        nodes
    }

    /// The shard map, freshly loaded from the cluster (the cache is updated too).
    ///
    /// # Errors
    /// [`Error::NoShardMap`] when no node answered.
    pub async fn shard_map(&self) -> Result<ShardMap> {
        let generation = self.inner.map_generation.load(Ordering::Acquire);
        self.reload_map(generation, None).await?;
        Ok(self.cached_shard_map())
    }

    /// The cached shard map, without a network call.
    pub fn cached_shard_map(&self) -> ShardMap {
        self.read_routing().map().clone()
    }

    /// The cached descriptor of the shard owning `key`.
    pub fn shard_for_key(&self, key: &[u8]) -> Option<ShardDescriptor> {
        self.read_routing().descriptor_for_key(key).cloned()
    }

    /// Asks `node` for its status (replicas, roles, terms, indexes). One attempt, bounded by
    /// the attempt timeout.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::Transport`], [`Error::Server`].
    pub async fn node_status(&self, node: NodeId) -> Result<NodeStatus> {
        let timeout = self.inner.config.attempt_timeout;
        let deadline = Instant::now() + timeout;
        let response = self
            .call(node, &Request::Admin(AdminRequest::NodeStatus), deadline)
            .await?;
        match response {
            Response::Admin(AdminResult::NodeStatus(status)) => Ok(status),
            Response::Error(wire) => Err(Error::from_wire(wire)),
            _ => Err(Error::UnexpectedResponse {
                request: "node_status",
            }),
        }
    }

    /// Runs the database inspector on `node` (its own store). One attempt, bounded by the
    /// request timeout (the node reads up to the request's limit of records).
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::Transport`], [`Error::Server`] (a refusal or a read
    /// error on the node).
    pub async fn inspect(&self, node: NodeId, request: InspectRequest) -> Result<InspectResult> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let response = self
            .call(
                node,
                &Request::Admin(AdminRequest::Inspect(request)),
                deadline,
            )
            .await?;
        match response {
            Response::Admin(AdminResult::Inspect(result)) => Ok(result),
            Response::Error(wire) => Err(Error::Server(wire)),
            _ => Err(Error::UnexpectedResponse { request: "inspect" }),
        }
    }

    /// Closes every connection (each node is told at once) and waits at most
    /// [`FailoverPolicy::close_linger`](crate::FailoverPolicy::close_linger) for them to drain.
    ///
    /// The wait is short on purpose: draining lasts three probe timeouts per connection, about
    /// 3 s for a dial to a dead node that never completed its handshake, and nothing is gained
    /// by waiting for it (this used to add a second to every `ringctl` command run while a node
    /// was down).
    pub async fn close(&self) {
        let linger = self.inner.config.failover.close_linger;
        self.inner.endpoint.close_within(linger).await;
    }

    /// The nodes the client currently believes down (failed a liveness probe or a call, not
    /// yet answering a re-probe), sorted.
    pub fn nodes_down(&self) -> Vec<NodeId> {
        let mut down: Vec<NodeId> = self
            .nodes()
            .into_iter()
            .map(|endpoint| endpoint.node)
            .filter(|node| self.is_down(*node))
            .collect();
        down.sort();
        down
    }

    /// Whether `node` is marked down now.
    fn is_down(&self, node: NodeId) -> bool {
        self.inner.health.is_down(node, Instant::now())
    }

    /// Records evidence that `node` is down, and starts its background re-probe unless one
    /// runs (the task holds only a weak reference: it ends with the client).
    fn mark_down(&self, node: NodeId) {
        if self.inner.health.mark_down(node, Instant::now()) {
            debug!(%node, "node marked down");
            tokio::spawn(reprobe(Arc::downgrade(&self.inner), node));
        }
    }

    fn read_routing(&self) -> std::sync::RwLockReadGuard<'_, Routing> {
        self.inner
            .routing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write_routing(&self) -> std::sync::RwLockWriteGuard<'_, Routing> {
        self.inner
            .routing
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
