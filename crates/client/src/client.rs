//! [`Client`]: connection pool, routing and the retry loop.

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
mod pd;

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

    /// Reads `key` with linearizable consistency. `Ok(None)` when the key does not exist.
    ///
    /// # Errors
    /// See [`Error`]; retryable conditions are retried within the budget first.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency. `Stale` reads may be served by any replica.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Option<Bytes>> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Get {
            key: key.clone(),
            consistency,
        };
        match self.execute(&key, op, None).await? {
            KvResult::Value { value, .. } => Ok(value),
            _ => Err(Error::UnexpectedResponse { request: "get" }),
        }
    }

    /// Whether `key` exists (HAS), read with linearizable consistency. The value is not sent.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn exists(&self, key: impl Into<Bytes>) -> Result<bool> {
        self.exists_with(key, ReadConsistency::Linearizable).await
    }

    /// Whether `key` exists, read with the given consistency. The value is not sent.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn exists_with(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<bool> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Exists {
            key: key.clone(),
            consistency,
        };
        match self.execute(&key, op, None).await? {
            KvResult::Exists { exists, .. } => Ok(exists),
            _ => Err(Error::UnexpectedResponse { request: "exists" }),
        }
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// See [`Error`]. After [`Error::Exhausted`] the write may or may not have been applied.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Put {
            key: key.clone(),
            value: value.into(),
        };
        self.write(&key, op, "put").await.map(|_| ())
    }

    /// Removes `key` (succeeds whether or not it existed).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<()> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Delete { key: key.clone() };
        self.write(&key, op, "delete").await.map(|_| ())
    }

    /// Sets `key` to `new` (deletes it when `new` is `None`) if its current value is `expected`
    /// (`None` = absent). Returns whether it swapped and the value it found.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<CasOutcome> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::CompareAndSwap {
            key: key.clone(),
            expected,
            new,
        };
        match self.write(&key, op, "compare_and_swap").await? {
            KvResult::Swapped {
                succeeded,
                previous,
                ..
            } => Ok(CasOutcome {
                succeeded,
                previous,
            }),
            _ => Err(Error::UnexpectedResponse {
                request: "compare_and_swap",
            }),
        }
    }

    /// Applies `ops` atomically, in order. Every key must belong to the same shard.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`], [`Error::CrossShardBatch`], or see [`Error`].
    pub async fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        let ops = ops
            .into_iter()
            .map(|op| {
                Ok(match op {
                    BatchOp::Put { key, value } => BatchOp::Put {
                        key: self.wire_key(key)?,
                        value,
                    },
                    BatchOp::Delete { key } => BatchOp::Delete {
                        key: self.wire_key(key)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let key = {
            let routing = self.read_routing();
            let mut shard = None;
            for op in &ops {
                let key = match op {
                    BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
                };
                let Some(descriptor) = routing.descriptor_for_key(key) else {
                    continue;
                };
                match shard {
                    None => shard = Some(descriptor.id),
                    Some(first) if first != descriptor.id => {
                        return Err(Error::CrossShardBatch {
                            first,
                            other: descriptor.id,
                        });
                    }
                    Some(_) => {}
                }
            }
            match ops.first() {
                Some(BatchOp::Put { key, .. } | BatchOp::Delete { key }) => key.clone(),
                None => return Err(Error::EmptyBatch),
            }
        };
        self.write(&key, KvOp::Batch { ops }, "batch")
            .await
            .map(|_| ())
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

    async fn write(&self, key: &[u8], op: KvOp, request: &'static str) -> Result<KvResult> {
        // The lease is held until the call ends, retries included: one write per session.
        let mut lease = self.inner.sessions.lease();
        let session = lease.next_write();
        match self.execute(key, op, session).await? {
            KvResult::Value { .. } | KvResult::Exists { .. } => {
                Err(Error::UnexpectedResponse { request })
            }
            result => Ok(result),
        }
    }

    /// Runs one key-value operation through the retry loop. The same `session` (and so the
    /// same sequence number) is sent on every attempt.
    async fn execute(
        &self,
        key: &[u8],
        op: KvOp,
        session: Option<WriteSession>,
    ) -> Result<KvResult> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.request_timeout;
        let mut backoff = Backoff::new(config.retry.backoff_min, config.retry.backoff_max);
        let mut pacing = Pacing::new();
        let mut failed_nodes = HashSet::new();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let generation = self.inner.map_generation.load(Ordering::Acquire);
            let failure = match self
                .attempt(key, &op, session, deadline, &mut failed_nodes)
                .await
            {
                Ok(result) => return Ok(result),
                Err(failure) => failure,
            };
            let (error, pause, reload) = match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::Retry {
                    error,
                    pause,
                    reload,
                } => (error, pacing.pause(pause, REROUTES_IN_A_ROW_MAX), reload),
            };
            debug!(attempts, %error, pause, reload, "retrying");
            let exhausted = |last| Error::Exhausted {
                attempts,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                last: Box::new(last),
            };
            if attempts >= config.retry.attempts_max || Instant::now() >= deadline {
                return Err(exhausted(error));
            }
            if reload {
                // A failed reload is one more failed attempt; the next attempt tells.
                let _ = self.reload_map(generation, Some(deadline)).await;
            }
            if pause {
                let delay = backoff.next_delay(&self.inner.jitter);
                let wake = (Instant::now() + delay).min(deadline);
                tokio::time::sleep_until(wake).await;
                if Instant::now() >= deadline {
                    return Err(exhausted(error));
                }
            }
        }
    }

    async fn attempt(
        &self,
        key: &[u8],
        op: &KvOp,
        session: Option<WriteSession>,
        deadline: Instant,
        failed_nodes: &mut HashSet<NodeId>,
    ) -> std::result::Result<KvResult, Failure> {
        let stale = matches!(
            op,
            KvOp::Get {
                consistency: ReadConsistency::Stale,
                ..
            } | KvOp::Exists {
                consistency: ReadConsistency::Stale,
                ..
            }
        );
        // Nodes marked down are stepped around. (Nodes that failed earlier in this call are
        // not: the routing guess already moved past them, and a hint naming one again, e.g. a
        // node that answered after a pause and leads now, must be followed.)
        let now = Instant::now();
        let avoid = |node: NodeId| self.inner.health.is_down(node, now);
        // The first attempt of a stale read goes to a random replica; retries follow routing.
        let route = if stale && failed_nodes.is_empty() {
            let choice = self.inner.jitter.next_u64();
            self.read_routing().route_any_replica(key, choice, &avoid)
        } else {
            self.read_routing().route(key, &avoid)
        };
        let Some(route) = route else {
            return Err(Failure::Retry {
                error: Error::NoShardMap {
                    reason: "the cached map has no replica for the key".into(),
                },
                pause: true,
                reload: true,
            });
        };
        let attempt_deadline = deadline.min(Instant::now() + self.inner.config.attempt_timeout);
        let budget = attempt_deadline.saturating_duration_since(Instant::now());
        let request = Request::Kv(KvRequest {
            shard: route.shard,
            epoch: route.epoch,
            session,
            timeout_ms: u32::try_from(budget.as_millis()).unwrap_or(u32::MAX).max(1),
            op: op.clone(),
        });
        let response = match self.call(route.node, &request, attempt_deadline).await {
            Ok(response) => response,
            Err(Error::UnknownNode { node }) => {
                // A node that joined after the client last learned the cluster (a move or a
                // repair put a replica there): learn the node list, then the map, and retry.
                self.refresh_nodes(deadline).await;
                let known = self.address_of(node).is_some();
                if !known {
                    self.write_routing().unreachable(route.shard, node, &avoid);
                }
                return Err(Failure::Retry {
                    error: Error::UnknownNode { node },
                    pause: !known,
                    reload: !known,
                });
            }
            Err(error) => {
                if !error.is_retryable() {
                    return Err(Failure::Fatal(error));
                }
                // Unreachable: try the next replica; once all failed, reload the map.
                failed_nodes.insert(route.node);
                let avoid = |node: NodeId| {
                    failed_nodes.contains(&node) || self.inner.health.is_down(node, now)
                };
                // The guess moves past every node that failed in this call (unless all did).
                self.write_routing()
                    .unreachable(route.shard, route.node, &avoid);
                let all_failed = failed_nodes.len() >= route.replicas;
                if all_failed {
                    failed_nodes.clear();
                }
                return Err(Failure::Retry {
                    error,
                    pause: all_failed,
                    reload: all_failed,
                });
            }
        };
        let wire = match response {
            Response::Kv(result) => return Ok(result),
            Response::Error(wire) => wire,
            Response::Admin(_) => {
                return Err(Failure::Fatal(Error::UnexpectedResponse { request: "kv" }));
            }
        };
        let update = match &wire {
            WireError::NotLeader {
                leader_hint,
                descriptor,
            } => {
                // Only nodes marked down veto a hint: a node that failed earlier in this call
                // but answers its probes again (a restart, a pause) may well be the leader now,
                // and the re-probe clears a false alarm within `reprobe_interval`.
                self.write_routing().not_leader(
                    route.shard,
                    route.node,
                    *leader_hint,
                    descriptor.clone(),
                    &avoid,
                )
            }
            WireError::EpochMismatch { descriptor } => {
                self.write_routing().epoch_mismatch(descriptor.clone())
            }
            WireError::ShardNotFound { .. } | WireError::KeyNotInShard { .. } => Update::Reload,
            WireError::Internal { .. } => {
                // The node is failing: another replica may do better.
                self.write_routing()
                    .unreachable(route.shard, route.node, &avoid);
                Update::Backoff
            }
            wire if wire.is_retryable() => Update::Backoff,
            _ => return Err(Failure::Fatal(Error::from_wire(wire))),
        };
        Err(Failure::Retry {
            error: Error::Server(wire),
            pause: update != Update::Rerouted,
            reload: update == Update::Reload,
        })
    }

    /// Sends one request to `node` and waits for the answer until `deadline`.
    async fn call(&self, node: NodeId, request: &Request, deadline: Instant) -> Result<Response> {
        let wrapped;
        let request = match self.token(deadline).await? {
            Some(token) => {
                wrapped = Request::WithToken {
                    token,
                    request: Box::new(request.clone()),
                };
                &wrapped
            }
            None => request,
        };
        self.call_plain(node, request, deadline).await
    }

    /// [`Client::call`] without adding the client's token.
    async fn call_plain(
        &self,
        node: NodeId,
        request: &Request,
        deadline: Instant,
    ) -> Result<Response> {
        let connection = self.connection(node, deadline).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let addr = self.address_of(node);
        // While the call waits, the node is probed: a node that died or froze fails the call
        // after about `suspect_after + probe_timeout`, not after the whole attempt timeout.
        let outcome = tokio::select! {
            biased;
            outcome = connection.call(request, timeout) => Ok(outcome),
            evidence = self.watch(addr) => Err(evidence),
        };
        let forget = |client: &Self| {
            client
                .inner
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&node);
        };
        match outcome {
            Ok(Ok(response)) => {
                self.inner.health.mark_up(node);
                Ok(response)
            }
            Ok(Err(source)) => {
                // A lost connection is redialed next time. A lost connection or a failed
                // stream is evidence against the node (the re-probe clears it at once if the
                // node answers, e.g. after a restart); a timeout is not, as the probes during
                // the call found the node alive.
                forget(self);
                if !matches!(source, ringkv_transport::Error::Timeout { .. }) {
                    self.mark_down(node);
                }
                Err(Error::Transport { node, source })
            }
            Err(evidence) => {
                forget(self);
                connection.close();
                self.mark_down(node);
                Err(Error::NodeDown {
                    node,
                    evidence: probe_evidence(evidence),
                })
            }
        }
    }

    /// Probes `addr` after `suspect_after` and then every `suspect_after`; resolves only with
    /// the first probe that finds the node refused or silent. Never resolves without an
    /// address, or while the probes cannot run (a name that does not resolve is no evidence).
    async fn watch(&self, addr: Option<String>) -> Probe {
        let Some(addr) = addr else {
            return std::future::pending().await;
        };
        let policy = self.inner.config.failover;
        loop {
            tokio::time::sleep(policy.suspect_after).await;
            match ringkv_transport::probe(&addr, policy.probe_timeout).await {
                Ok(outcome) if !outcome.is_alive() => return outcome,
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// The pooled connection to `node`, dialing it if needed (one dial per node at a time).
    async fn connection(&self, node: NodeId, deadline: Instant) -> Result<ClientConnection> {
        // A connection the node closed (idle clients are closed after
        // `limits.client_idle_timeout_ms`) is dropped and redialed, not used and failed.
        let cached = |inner: &Inner| {
            let mut connections = inner
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match connections.get(&node) {
                Some(connection) if connection.is_closed() => {
                    connections.remove(&node);
                    None
                }
                other => other.cloned(),
            }
        };
        if let Some(connection) = cached(&self.inner) {
            return Ok(connection);
        }
        let addr = self
            .inner
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned();
        let Some(addr) = addr else {
            return Err(Error::UnknownNode { node });
        };
        let dialing = self
            .inner
            .dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(node)
            .or_default()
            .clone();
        let timeout_error = |after: Duration| Error::Transport {
            node,
            source: ringkv_transport::Error::Timeout {
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            },
        };
        let dial_deadline = deadline.min(Instant::now() + self.inner.config.connect_timeout);
        let _guard = tokio::time::timeout_at(dial_deadline, dialing.lock())
            .await
            .map_err(|_| timeout_error(self.inner.config.connect_timeout))?;
        if let Some(connection) = cached(&self.inner) {
            return Ok(connection);
        }
        // The dial races a probe: quinn ignores ICMP, so a dial to a dead node would wait for
        // the whole connect timeout, while the probe is refused or unanswered much sooner.
        let dial = tokio::time::timeout_at(dial_deadline, self.inner.endpoint.connect(node, &addr));
        let probe_timeout = self.inner.config.failover.probe_timeout;
        let check = unless_alive(ringkv_transport::probe(&addr, probe_timeout));
        let dialed = tokio::select! {
            biased;
            dialed = dial => dialed,
            evidence = check => {
                self.mark_down(node);
                return Err(Error::NodeDown { node, evidence: probe_evidence(evidence) });
            }
        };
        let connection = match dialed {
            Ok(Ok(connection)) => connection,
            Ok(Err(source)) => {
                self.mark_down(node);
                return Err(Error::Transport { node, source });
            }
            Err(_) => {
                self.mark_down(node);
                return Err(timeout_error(self.inner.config.connect_timeout));
            }
        };
        self.inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, connection.clone());
        Ok(connection)
    }

    /// The known address of `node`.
    fn address_of(&self, node: NodeId) -> Option<String> {
        self.inner
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    /// Every node to ask for cluster-wide information: the seed endpoints first (in the
    /// configured order, starting at a rotating offset), then the nodes learned later.
    fn nodes_to_ask(&self) -> Vec<NodeId> {
        let seeds = &self.inner.seeds;
        let start = self.inner.next_seed.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<NodeId> = (0..seeds.len())
            .filter_map(|offset| seeds.get((start + offset) % seeds.len()))
            .map(|endpoint| endpoint.node)
            .collect();
        for endpoint in self.nodes() {
            if !order.contains(&endpoint.node) {
                order.push(endpoint.node);
            }
        }
        // Nodes believed down are asked last (stable: the order is kept otherwise).
        let now = Instant::now();
        order.sort_by_key(|node| self.inner.health.is_down(*node, now));
        order
    }

    /// Learns the node list from the first node that answers `GetNodes` before `deadline`
    /// (best effort).
    async fn refresh_nodes(&self, deadline: Instant) {
        for node in self.nodes_to_ask() {
            if Instant::now() >= deadline || self.learn_nodes(node, deadline).await {
                return;
            }
        }
    }

    /// Asks `node` for every node's address and adds the ones not known yet (best effort: a
    /// failure leaves routing to the known nodes). Returns whether `node` answered.
    async fn learn_nodes(&self, node: NodeId, deadline: Instant) -> bool {
        let deadline = deadline.min(Instant::now() + self.inner.config.attempt_timeout);
        let request = Request::Admin(AdminRequest::GetNodes);
        match self.call(node, &request, deadline).await {
            Ok(Response::Admin(AdminResult::Nodes(nodes))) => {
                let mut addresses = self
                    .inner
                    .addresses
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Bounded by what one answer carries; configured endpoints are kept as given.
                for NodeAddress { node, addr } in nodes.into_iter().take(NODES_LEARNED_MAX) {
                    if node.is_some() {
                        addresses.entry(node).or_insert(addr);
                    }
                }
                true
            }
            Ok(other) => {
                debug!(?other, "GetNodes not answered");
                false
            }
            Err(error) => {
                debug!(%error, "GetNodes failed");
                false
            }
        }
    }

    /// Loads the shard map from the known nodes (seed endpoints first), one after the other,
    /// unless another call reloaded it since `seen_generation`. When the new map names nodes
    /// the client has no address for (nodes that joined), the node list is learned too. With a
    /// `deadline`, no node is asked after it (a call's reload stays within the call's budget).
    async fn reload_map(&self, seen_generation: u64, deadline: Option<Instant>) -> Result<()> {
        let _guard = self.inner.reload.lock().await;
        if self.inner.map_generation.load(Ordering::Acquire) != seen_generation {
            return Ok(());
        }
        let mut last = String::from("no endpoint tried");
        for node in self.nodes_to_ask() {
            let attempt_deadline = Instant::now() + self.inner.config.attempt_timeout;
            let deadline = match deadline {
                Some(overall) if Instant::now() >= overall => break,
                Some(overall) => overall.min(attempt_deadline),
                None => attempt_deadline,
            };
            let request = Request::Admin(AdminRequest::GetShardMap);
            match self.call(node, &request, deadline).await {
                Ok(Response::Admin(AdminResult::ShardMap(map))) if map.covers_ring() => {
                    let version = map.version;
                    let unknown = {
                        let addresses = self
                            .inner
                            .addresses
                            .read()
                            .unwrap_or_else(PoisonError::into_inner);
                        map.shards
                            .iter()
                            .flat_map(|d| d.replicas.iter())
                            .any(|r| !addresses.contains_key(&r.node))
                    };
                    if unknown {
                        self.learn_nodes(node, deadline).await;
                    }
                    if self.write_routing().replace_map(map) {
                        self.inner.map_generation.fetch_add(1, Ordering::AcqRel);
                        debug!(version, node = %node, "shard map loaded");
                        return Ok(());
                    }
                    last = format!("{} sent an older map (version {version})", node);
                }
                Ok(Response::Admin(AdminResult::ShardMap(_))) => {
                    last = format!("{} sent a map that does not cover the ring", node);
                }
                Ok(Response::Error(
                    wire @ (WireError::Unauthenticated { .. } | WireError::PermissionDenied { .. }),
                )) => return Err(Error::from_wire(wire)),
                Ok(Response::Error(wire)) => last = format!("{}: {wire}", node),
                Ok(_) => last = format!("{}: unexpected response", node),
                Err(error) => last = error.to_string(),
            }
        }
        if self.read_routing().map().covers_ring() {
            // Keep routing with the cached map; nobody had a newer one.
            return Ok(());
        }
        Err(Error::NoShardMap { reason: last })
    }
}

/// Resolves a `host:port` seed and connects to the first of its addresses that answers as a
/// node of the cluster; returns the node (id from its certificate, the address as written) and the
/// connection. Bounded by `timeout` per address and for the lookup.
async fn dial_seed_address(
    endpoint: &ClientEndpoint,
    address: &str,
    timeout: Duration,
    probe_timeout: Duration,
) -> std::result::Result<(Endpoint, ClientConnection), String> {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| format!("name lookup timed out after {timeout:?}"))?
        .map_err(|error| format!("cannot resolve: {error}"))?;
    let mut last = String::from("the name resolves to no address");
    for addr in resolved.take(8) {
        // Raced with a probe, like every dial: a dead seed costs one probe, not `timeout`.
        let dial = tokio::time::timeout(timeout, endpoint.connect_any_node(addr));
        let check = unless_alive(ringkv_transport::probe::probe_addr(
            addr,
            Instant::now() + probe_timeout,
        ));
        let dialed = tokio::select! {
            biased;
            dialed = dial => dialed,
            evidence = check => {
                last = format!("{addr}: {}", probe_evidence(evidence));
                continue;
            }
        };
        match dialed {
            // Keep the address as written (a name is resolved again at every redial).
            Ok(Ok((node, connection))) => {
                let addr = address.trim().to_string();
                return Ok((Endpoint { node, addr }, connection));
            }
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => last = format!("{addr}: no answer within {timeout:?}"),
        }
    }
    Err(last)
}

/// What a failed probe found, in words for errors.
/// The probe's evidence when it finds the node refused or silent; never resolves when the node
/// answers (or the probe cannot run), so it only wins a race against a dial on evidence.
async fn unless_alive(
    probe: impl std::future::Future<Output = ringkv_transport::Result<Probe>>,
) -> Probe {
    match probe.await {
        Ok(outcome) if !outcome.is_alive() => outcome,
        Ok(_) | Err(_) => std::future::pending().await,
    }
}

fn probe_evidence(probe: Probe) -> &'static str {
    match probe {
        Probe::Alive { .. } => "answered",
        Probe::Refused => "refused (nothing listens on its port)",
        Probe::Silent => "silent (no answer to a liveness probe)",
    }
}

/// Re-probes `node` every `reprobe_interval` while it is marked down: an answer clears the
/// mark (routing uses the node again), silence or a refusal renews it. Ends when the mark is
/// gone (cleared by a successful call, or expired) or the client was dropped.
async fn reprobe(inner: Weak<Inner>, node: NodeId) {
    let mut first = true;
    loop {
        let (policy, addr) = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let policy = inner.config.failover;
            let addr = inner
                .addresses
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&node)
                .cloned();
            if !inner.health.keep_reprobing(node, Instant::now()) || addr.is_none() {
                inner.health.reprobe_ended(node, Instant::now());
                return;
            }
            (policy, addr.unwrap_or_default())
        };
        // The first probe goes at once: the mark may come from a lost connection to a node
        // that merely restarted, which should not be avoided for long.
        if !first {
            tokio::time::sleep(policy.reprobe_interval).await;
        }
        first = false;
        let outcome = ringkv_transport::probe(&addr, policy.probe_timeout).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match outcome {
            Ok(outcome) if outcome.is_alive() => {
                debug!(%node, "node answers again");
                inner.health.mark_up(node);
            }
            Ok(_) => {
                inner.health.mark_down(node, Instant::now());
            }
            // No evidence either way (a name that does not resolve now): keep the mark as is.
            Err(_) => {}
        }
    }
}
