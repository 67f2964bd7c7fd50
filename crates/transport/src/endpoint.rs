//! [`Transport`]: a node's one QUIC endpoint (one UDP port) that accepts and dials.

use crate::accept::accept_loop;
pub(crate) use crate::accept::serve_connection;
use crate::certs::TlsIdentity;
use crate::client::ClientConnection;
use crate::client_service::ClientHandler;
use crate::config::{TransportConfig, node_server_name};
use crate::error::{Error, Result};
use crate::fault::{FaultInjector, Verdict};
use crate::inbound::RaftReceiver;
use crate::peer::{Peer, lock};
use crate::snapshot::{IncomingSnapshot, send_snapshot};
use crate::stats::{PeerStats, TransportCounters, TransportStats, add};
use crate::tls;
use ringkv_types::raft::Message;
use ringkv_types::{NodeId, RaftBatch};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tracing::warn;

/// How long `send_snapshot` waits for a connection to the peer.
const SNAPSHOT_CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// State shared by the transport handle and its tasks.
pub(crate) struct Shared {
    pub config: TransportConfig,
    pub endpoint: quinn::Endpoint,
    /// The configuration of the connections we dial; replaced by [`Transport::reload_identity`].
    pub client_config: Mutex<quinn::ClientConfig>,
    pub peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    pub raft_tx: crate::inbound::RaftSender,
    pub snapshot_tx: mpsc::Sender<IncomingSnapshot>,
    pub handler: Option<Arc<dyn ClientHandler>>,
    pub client_permits: Arc<Semaphore>,
    /// Bytes of client requests in flight (`client_inbound_bytes_max`).
    pub client_bytes: Arc<Semaphore>,
    /// Established client connections (`max_client_connections`).
    pub client_connections: AtomicUsize,
    /// Addresses peers listen (and dial) from: exempt from address validation.
    pub peer_addrs: Mutex<HashSet<SocketAddr>>,
    pub faults: FaultInjector,
    pub counters: TransportCounters,
    tasks: Mutex<JoinSet<()>>,
    shutting_down: AtomicBool,
}

impl Shared {
    /// Spawns a task that `shutdown` aborts. Returns `None` once shutting down.
    pub(crate) fn spawn(
        &self,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Option<AbortHandle> {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        if self.shutting_down.load(Ordering::Acquire) {
            return None;
        }
        Some(tasks.spawn(task))
    }

    /// The configuration for a new outgoing connection.
    pub(crate) fn dial_config(&self) -> quinn::ClientConfig {
        lock(&self.client_config).clone()
    }

    /// The link to `id`, created (without an address) if absent.
    pub(crate) fn peer(self: &Arc<Self>, id: NodeId) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        peers
            .entry(id)
            .or_insert_with(|| Peer::start(self, id, None))
            .clone()
    }
}

/// What the node receives: Raft batches and snapshots from peers.
#[derive(Debug)]
pub struct Inbound {
    /// Raft batches, each from one peer (`from` of every message is that peer, checked).
    /// Bounded by `raft_inbound_batches_max` batches and `raft_inbound_bytes_max` bytes; when
    /// full, batches are dropped and counted.
    pub raft: RaftReceiver,
    /// Incoming snapshots, read chunk by chunk. Bounded by `snapshot_inbound_max`.
    pub snapshots: mpsc::Receiver<IncomingSnapshot>,
}

/// What happened to a batch given to [`Transport::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum SendOutcome {
    /// Queued for sending (or held back by an injected delay).
    Queued,
    /// Some messages were dropped because the peer's queue was full.
    QueueFull {
        /// Messages dropped.
        dropped: u64,
    },
    /// Dropped by fault injection.
    Faulted,
    /// Not sent: the destination is this node, a message is not addressed from this node to the
    /// destination, or the transport is shutting down.
    Refused,
}

/// Builds a [`Transport`].
pub struct TransportBuilder {
    config: TransportConfig,
    identity: TlsIdentity,
    handler: Option<Arc<dyn ClientHandler>>,
    faults: FaultInjector,
}

impl TransportBuilder {
    /// The client service handler. Without one, client requests are answered `Unavailable`.
    #[must_use]
    pub fn handler(mut self, handler: impl ClientHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// A fault table shared with other transports (tests).
    #[must_use]
    pub fn faults(mut self, faults: FaultInjector) -> Self {
        self.faults = faults;
        self
    }

    /// Binds the UDP socket and starts accepting. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration, [`Error::Tls`] for unusable certificates,
    /// [`Error::Bind`] when the address cannot be bound.
    pub fn start(self) -> Result<(Transport, Inbound)> {
        let config = self.config;
        config.validate()?;
        let server_config = tls::server_config(&self.identity, &config)?;
        let client_config = tls::client_config(
            &self.identity,
            config.keep_alive,
            config.idle_timeout,
            config.max_concurrent_bidi_streams,
        )?;
        let bind_error = |source| Error::Bind {
            addr: config.bind_addr,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.bind_addr).map_err(bind_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no async runtime found")))?;
        let endpoint = quinn::Endpoint::new(
            tls::endpoint_config(&self.identity),
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(bind_error)?;
        let (raft_tx, raft) = crate::inbound::raft_channel(
            config.raft_inbound_batches_max,
            config.raft_inbound_bytes_max,
        );
        let (snapshot_tx, snapshots) = mpsc::channel(config.snapshot_inbound_max);
        let shared = Arc::new(Shared {
            client_permits: Arc::new(Semaphore::new(config.client_inflight_max)),
            client_bytes: Arc::new(Semaphore::new(
                usize::try_from(config.client_inbound_bytes_max)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            client_connections: AtomicUsize::new(0),
            peer_addrs: Mutex::new(HashSet::new()),
            config,
            endpoint,
            client_config: Mutex::new(client_config),
            peers: Mutex::new(HashMap::new()),
            raft_tx,
            snapshot_tx,
            handler: self.handler,
            faults: self.faults,
            counters: TransportCounters::default(),
            tasks: Mutex::new(JoinSet::new()),
            shutting_down: AtomicBool::new(false),
        });
        shared.spawn(accept_loop(shared.clone()));
        Ok((Transport { shared }, Inbound { raft, snapshots }))
    }
}

/// A node's transport: one QUIC endpoint that carries Raft traffic to and from peer nodes and
/// serves client requests.
///
/// How the node drives it:
/// 1. `Transport::builder(config, identity).handler(h).start()` gives the handle and an
///    [`Inbound`] whose receivers the event loop polls.
/// 2. `add_peer(id, addr)` for every node it shares a group with.
/// 3. Each loop turn, one [`send`](Self::send) per destination with every message for it
///    (non-blocking; a full queue drops and counts, Raft retransmits).
/// 4. Snapshots go through [`send_snapshot`](Self::send_snapshot) in a spawned task; its result
///    feeds `report_snapshot`.
/// 5. [`shutdown`](Self::shutdown) on exit.
pub struct Transport {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.config.node_id)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Starts building a transport for `config.node_id`, presenting `identity`.
    pub fn builder(config: TransportConfig, identity: TlsIdentity) -> TransportBuilder {
        TransportBuilder {
            config,
            identity,
            handler: None,
            faults: FaultInjector::new(),
        }
    }

    /// This node.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// The bound UDP address.
    ///
    /// # Errors
    /// [`Error::Bind`] if the socket address cannot be read.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.shared
            .endpoint
            .local_addr()
            .map_err(|source| Error::Bind {
                addr: self.shared.config.bind_addr,
                source,
            })
    }

    /// The fault table (tests).
    pub fn faults(&self) -> &FaultInjector {
        &self.shared.faults
    }

    /// Adds a peer or updates its address. The node with the smaller id dials; the other side
    /// only needs the entry to exist (it is created on first contact anyway).
    ///
    /// `addr` is `ip:port` or `host:port`; the dialer resolves a name at every dial, so a peer
    /// that comes back under a new IP is found on the next reconnect.
    pub fn add_peer(&self, id: NodeId, addr: impl std::fmt::Display) {
        if id == self.node_id() {
            return;
        }
        let addr = addr.to_string();
        if let Ok(socket) = addr.parse::<SocketAddr>() {
            lock(&self.shared.peer_addrs).insert(socket);
        }
        let peer = self.shared.peer(id);
        peer.addr.send_if_modified(|current| {
            let changed = current.as_deref() != Some(addr.as_str());
            *current = Some(addr);
            changed
        });
    }

    /// Removes a peer: stops its tasks, closes its connection, drops what is queued.
    pub fn remove_peer(&self, id: NodeId) {
        let removed = lock(&self.shared.peers).remove(&id);
        if let Some(peer) = removed {
            peer.stop();
        }
    }

    /// Queues `batch` for `to` without waiting. Votes, heartbeats and responses go on the control
    /// stream, appends on the bulk stream; messages of one kind keep their order.
    pub fn send(&self, to: NodeId, batch: RaftBatch) -> SendOutcome {
        if to == self.node_id() || self.shared.shutting_down.load(Ordering::Acquire) {
            return SendOutcome::Refused;
        }
        if batch.is_empty() {
            return SendOutcome::Queued;
        }
        let peer = self.shared.peer(to);
        if !batch.is_between(self.node_id(), to) {
            // The receiver would close the connection over it; refuse here instead.
            debug_assert!(false, "batch for {to} holds messages addressed elsewhere");
            warn!(%to, "refusing a batch with messages not from this node to {to}");
            add(&peer.counters.send_drops, batch.len() as u64);
            return SendOutcome::Refused;
        }
        match self.shared.faults.verdict(self.node_id(), to) {
            Verdict::Pass => {}
            Verdict::Drop => {
                add(&peer.counters.send_drops, batch.len() as u64);
                return SendOutcome::Faulted;
            }
            Verdict::Delay(delay) => {
                self.shared.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = peer.enqueue(batch);
                });
                return SendOutcome::Queued;
            }
        }
        match peer.enqueue(batch) {
            0 => SendOutcome::Queued,
            dropped => SendOutcome::QueueFull { dropped },
        }
    }

    /// Streams a snapshot to `to`: `message` (an `InstallSnapshot`, its data usually empty) and
    /// then everything `data` yields, in chunks of `snapshot_chunk_bytes`, on a stream of its own.
    /// QUIC flow control paces the sender to the receiver's reading. Returns the data bytes sent
    /// once the receiving transport has acknowledged all of them (received, not necessarily read
    /// by the node yet: the follower's Raft response is what confirms installation). Wrap the
    /// call in a timeout: a receiver that neither reads nor drops the snapshot stalls it.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] when there is no connection within a few seconds or it fails,
    /// [`Error::SnapshotSource`] when `data` fails, [`Error::SnapshotAborted`] when the receiver
    /// refuses (too many snapshots) or gives up, and fault injection as a lost connection.
    pub async fn send_snapshot<R: AsyncRead + Unpin>(
        &self,
        to: NodeId,
        message: Message,
        data: R,
    ) -> Result<u64> {
        match self.shared.faults.verdict(self.node_id(), to) {
            Verdict::Pass => {}
            Verdict::Drop => {
                return Err(Error::ConnectionLost {
                    reason: "cut by fault injection".into(),
                });
            }
            Verdict::Delay(delay) => tokio::time::sleep(delay).await,
        }
        let peer = self.shared.peer(to);
        let connection = peer
            .live_connection(SNAPSHOT_CONNECTION_WAIT)
            .await
            .ok_or_else(|| Error::ConnectionLost {
                reason: format!("no connection to {to}"),
            })?;
        send_snapshot(&self.shared, &peer, &connection, message, data).await
    }

    /// Counters of the link to `id`, if it is a known peer.
    pub fn peer_stats(&self, id: NodeId) -> Option<PeerStats> {
        lock(&self.shared.peers)
            .get(&id)
            .map(|peer| peer.counters.snapshot())
    }

    /// Every known peer with its link counters and, when connected, the connection's smoothed
    /// round-trip time (for metrics, read at scrape time).
    pub fn peer_links(&self) -> Vec<(NodeId, PeerStats, Option<std::time::Duration>)> {
        lock(&self.shared.peers)
            .iter()
            .map(|(id, peer)| {
                let rtt = peer
                    .connection
                    .borrow()
                    .as_ref()
                    .filter(|c| c.close_reason().is_none())
                    .map(quinn::Connection::rtt);
                (*id, peer.counters.snapshot(), rtt)
            })
            .collect()
    }

    /// Whether the link to `id` has a live connection now.
    pub fn is_connected(&self, id: NodeId) -> bool {
        lock(&self.shared.peers).get(&id).is_some_and(|peer| {
            peer.connection
                .borrow()
                .as_ref()
                .is_some_and(|c| c.close_reason().is_none())
        })
    }

    /// Transport-wide counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// Opens a client connection to node `node` at `addr` from this endpoint, presenting this
    /// node's certificate (e.g. to forward a request to the leader).
    ///
    /// # Errors
    /// [`Error::Connect`] when the handshake fails.
    pub async fn connect_client(
        &self,
        node: NodeId,
        addr: impl std::fmt::Display,
    ) -> Result<ClientConnection> {
        let addr = crate::resolve::resolve(&addr.to_string()).await?;
        let server_name = node_server_name(node, &self.shared.config.cluster);
        self.connect_client_named(addr, &server_name).await
    }

    /// Opens a client connection to whatever node listens at `addr` (its id unknown: a joining
    /// node knows only addresses). The server's certificate must name the host of `addr`: its
    /// IP (an IP SAN) or its DNS name (a DNS SAN; `ringctl certs --dns-name`), and chain to the
    /// cluster CA. A name is resolved now.
    ///
    /// # Errors
    /// [`Error::Connect`] when the handshake fails, [`Error::Resolve`] for a name that does
    /// not resolve.
    pub async fn connect_client_addr(
        &self,
        addr: impl std::fmt::Display,
    ) -> Result<ClientConnection> {
        let text = addr.to_string();
        let socket = crate::resolve::resolve(&text).await?;
        self.connect_client_named(socket, crate::resolve::host_of(text.trim()))
            .await
    }

    async fn connect_client_named(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<ClientConnection> {
        let connecting = self
            .shared
            .endpoint
            .connect_with(self.shared.dial_config(), addr, server_name)
            .map_err(|e| Error::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let connection = connecting.await.map_err(|e| Error::Connect {
            addr,
            reason: e.to_string(),
        })?;
        Ok(ClientConnection::new(
            connection,
            self.shared.config.max_frame_bytes,
        ))
    }

    /// Presents `identity` (certificate, key) and trusts its CAs (a bundle) on every connection
    /// from now on, accepted or dialed; connections already open keep the certificates their
    /// handshake verified. Both configurations are built before either is swapped, so an
    /// unusable identity changes nothing.
    ///
    /// The stateless-reset and connection-id keys stay those derived from the key the
    /// transport started with (they must not change under open connections).
    ///
    /// # Errors
    /// [`Error::Tls`] when the certificate, key or CAs cannot be used.
    pub fn reload_identity(&self, identity: &TlsIdentity) -> Result<()> {
        self.identity_reloader().reload(identity)
    }

    /// A handle that reloads this transport's identity ([`Transport::reload_identity`]) from
    /// elsewhere (a signal handler) while the transport itself is owned by the node's loop.
    pub fn identity_reloader(&self) -> IdentityReloader {
        IdentityReloader {
            shared: self.shared.clone(),
        }
    }

    /// Closes every connection, stops every task and waits (up to a second) for the endpoint to
    /// drain. The UDP port is free once this returns and the handle is dropped.
    pub async fn shutdown(self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        tasks.shutdown().await;
        let peers: Vec<_> = lock(&self.shared.peers)
            .drain()
            .map(|(_, peer)| peer)
            .collect();
        for peer in peers {
            peer.stop();
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
    }
}

/// Reloads a transport's identity; see [`Transport::identity_reloader`].
#[derive(Clone)]
pub struct IdentityReloader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IdentityReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityReloader").finish_non_exhaustive()
    }
}

impl IdentityReloader {
    /// See [`Transport::reload_identity`].
    ///
    /// # Errors
    /// [`Error::Tls`] when the certificate, key or CAs cannot be used.
    pub fn reload(&self, identity: &TlsIdentity) -> Result<()> {
        let config = &self.shared.config;
        let server = tls::server_config(identity, config)?;
        let client = tls::client_config(
            identity,
            config.keep_alive,
            config.idle_timeout,
            config.max_concurrent_bidi_streams,
        )?;
        self.shared.endpoint.set_server_config(Some(server));
        *lock(&self.shared.client_config) = client;
        Ok(())
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        lock(&self.shared.tasks).abort_all();
        for peer in lock(&self.shared.peers).values() {
            peer.stop();
        }
    }
}
