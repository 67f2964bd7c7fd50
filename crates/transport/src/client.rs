//! The calling side of the client service, for the client library, `ringctl` and node-to-node
//! forwarding.

use crate::certs::TlsIdentity;
use crate::config::node_server_name;
use crate::error::{Error, Result};
use crate::tls;
use ringkv_types::envelope::HEADER_LEN;
use ringkv_types::{NodeId, Request, Response, codec};
use std::net::SocketAddr;
use std::time::Duration;

/// A client's QUIC endpoint: presents a client (or node) certificate, trusts only the cluster CA.
#[derive(Debug)]
pub struct ClientEndpoint {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    /// For [`ClientEndpoint::connect_any_node`].
    any_node_config: quinn::ClientConfig,
    cluster: String,
    max_frame_bytes: u64,
}

impl ClientEndpoint {
    /// Binds a client endpoint (use port 0) for `cluster`. Keep-alive 5 s, idle timeout 30 s.
    /// Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Tls`] for unusable certificates, [`Error::Bind`] when binding fails.
    pub fn new(identity: &TlsIdentity, cluster: &str, bind_addr: SocketAddr) -> Result<Self> {
        Self::with_timeouts(
            identity,
            cluster,
            bind_addr,
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
    }

    /// [`ClientEndpoint::new`] with the QUIC keep-alive interval and idle timeout of its
    /// connections. A short idle timeout (a few keep-alives) lets a connection to a node that
    /// died silently fail by itself soon after, at the cost of a keep-alive packet per
    /// interval per connection.
    ///
    /// # Errors
    /// [`Error::Tls`] for unusable certificates or an idle timeout quinn cannot express,
    /// [`Error::Bind`] when binding fails.
    pub fn with_timeouts(
        identity: &TlsIdentity,
        cluster: &str,
        bind_addr: SocketAddr,
        keep_alive: Duration,
        idle_timeout: Duration,
    ) -> Result<Self> {
        let config = tls::client_config(identity, keep_alive, idle_timeout, 1024)?;
        let any_node_config =
            tls::any_node_client_config(identity, cluster, keep_alive, idle_timeout, 1024)?;
        let endpoint = quinn::Endpoint::client(bind_addr).map_err(|source| Error::Bind {
            addr: bind_addr,
            source,
        })?;
        Ok(Self {
            endpoint,
            config,
            any_node_config,
            cluster: cluster.to_string(),
            max_frame_bytes: 16 * 1024 * 1024,
        })
    }

    /// Connects to node `node` at `addr`; the node's certificate must name
    /// `node-<node>.<cluster>`.
    ///
    /// A node that rejects *our* certificate may let this succeed; the refusal then shows up as
    /// [`Error::ConnectionLost`] on the first call.
    ///
    /// # Errors
    /// [`Error::Connect`] when the handshake fails, [`Error::Resolve`] for a name that does
    /// not resolve.
    ///
    /// `addr` is `ip:port` or `host:port`; a name is resolved now, at every call.
    pub async fn connect(
        &self,
        node: NodeId,
        addr: impl std::fmt::Display,
    ) -> Result<ClientConnection> {
        let addr = crate::resolve::resolve(&addr.to_string()).await?;
        let server_name = node_server_name(node, &self.cluster);
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), addr, &server_name)
            .map_err(|e| Error::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let connection = connecting.await.map_err(|e| Error::Connect {
            addr,
            reason: e.to_string(),
        })?;
        Ok(ClientConnection::new(connection, self.max_frame_bytes))
    }

    /// Connects to whichever node of the cluster listens at `addr` and returns its id, read
    /// from its certificate (which must chain to the cluster CA and name exactly one
    /// `node-<id>.<cluster>`, verified for that name). For seed endpoints given as `host:port`.
    ///
    /// # Errors
    /// [`Error::Connect`] when the handshake fails (including a certificate that names no
    /// node of this cluster).
    pub async fn connect_any_node(&self, addr: SocketAddr) -> Result<(NodeId, ClientConnection)> {
        let failed = |reason: String| Error::Connect { addr, reason };
        // The name is not checked (the verifier finds the node name in the certificate); it is
        // sent as SNI only.
        let server_name = format!("ringkv-node.{}", self.cluster);
        let connecting = self
            .endpoint
            .connect_with(self.any_node_config.clone(), addr, &server_name)
            .map_err(|e| failed(e.to_string()))?;
        let connection = connecting.await.map_err(|e| failed(e.to_string()))?;
        let Some(node) = crate::any_node::peer_node(&connection, &self.cluster) else {
            connection.close(0u32.into(), b"not a node");
            return Err(failed("the peer's certificate names no node".into()));
        };
        Ok((
            node,
            ClientConnection::new(connection, self.max_frame_bytes),
        ))
    }

    /// Closes all connections (each peer is sent a CONNECTION_CLOSE) and waits at most
    /// `linger` for them to drain.
    ///
    /// Draining takes three probe timeouts per connection (RFC 9000 section 10.2): a few tens
    /// of milliseconds to a live node nearby, but about 3 s for a connection whose handshake
    /// never finished (a dial to a dead node, whose RTT estimate is still the initial 333 ms).
    /// Nothing is lost by not waiting for it: the close frames go out when the connections'
    /// drivers next run, which `linger` leaves time for.
    pub async fn close_within(&self, linger: Duration) {
        self.endpoint.close(0u32.into(), b"client closed");
        let _ = tokio::time::timeout(linger, self.endpoint.wait_idle()).await;
    }

    /// Closes all connections and waits for them to drain, however long that takes (see
    /// [`ClientEndpoint::close_within`] for a bounded wait).
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"client closed");
        self.endpoint.wait_idle().await;
    }
}

/// A connection to one node's client service. Cheap to clone; calls run concurrently, one
/// stream each.
#[derive(Clone, Debug)]
pub struct ClientConnection {
    connection: quinn::Connection,
    max_frame_bytes: u64,
}

impl ClientConnection {
    pub(crate) fn new(connection: quinn::Connection, max_frame_bytes: u64) -> Self {
        Self {
            connection,
            max_frame_bytes,
        }
    }

    /// Sends `request` and waits for the response, for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::ConnectionLost`] (also what a certificate refusal looks
    /// like), [`Error::Codec`] for an undecodable response.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response> {
        let after_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        tokio::time::timeout(timeout, self.call_inner(request))
            .await
            .map_err(|_| Error::Timeout { after_ms })?
    }

    async fn call_inner(&self, request: &Request) -> Result<Response> {
        let lost = |error: &dyn std::fmt::Display| Error::ConnectionLost {
            reason: error.to_string(),
        };
        let mut frame = Vec::new();
        codec::encode_into(request, &mut frame, self.max_frame_bytes)?;
        let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| lost(&e))?;
        // A server that answers without reading the request (`Busy`) stops the stream; its
        // answer is still worth reading, so a failed write only counts if no answer follows.
        let written = send.write_all(&frame).await;
        if written.is_ok() {
            send.finish().map_err(|e| lost(&e))?;
        }
        let limit = usize::try_from(self.max_frame_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(HEADER_LEN);
        let bytes = match (recv.read_to_end(limit).await, written) {
            (Ok(bytes), _) => bytes,
            (Err(_), Err(error)) => return Err(lost(&error)),
            (Err(error), Ok(())) => return Err(lost(&error)),
        };
        Ok(codec::decode(&bytes, self.max_frame_bytes)?)
    }

    /// Opens a watch stream: sends `request` (a `Request::Watch`, possibly inside a
    /// `WithToken`) and returns the stream of its frames. The request side stays open: dropping
    /// the [`WatchStream`] (or [`WatchStream::cancel`]) tells the node to stop.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`], [`Error::Codec`], [`Error::Timeout`] when the stream could
    /// not be opened and the request sent within `timeout`.
    pub async fn watch(&self, request: &Request, timeout: Duration) -> Result<WatchStream> {
        let after_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let lost = |error: &dyn std::fmt::Display| Error::ConnectionLost {
            reason: error.to_string(),
        };
        let mut frame = Vec::new();
        codec::encode_into(request, &mut frame, self.max_frame_bytes)?;
        let open = async {
            let (mut send, recv) = self.connection.open_bi().await.map_err(|e| lost(&e))?;
            send.write_all(&frame).await.map_err(|e| lost(&e))?;
            Ok::<_, Error>(WatchStream {
                send,
                recv,
                max_frame_bytes: self.max_frame_bytes,
            })
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| Error::Timeout { after_ms })?
    }

    /// Whether the connection is closed (by either side, e.g. a node closing it after
    /// `client_idle_timeout`, or lost): a caller holding it should dial again.
    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.connection.close(0u32.into(), b"done");
    }
}

/// The frames of one watch ([`ClientConnection::watch`]), read as the caller asks for them:
/// a caller that stops reading stops the node's sending (QUIC flow control), and the node
/// cancels a watcher that falls too far behind.
#[derive(Debug)]
pub struct WatchStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame_bytes: u64,
}

impl WatchStream {
    /// The next frame; `None` when the node finished the stream.
    ///
    /// # Errors
    /// [`Error::ConnectionLost`] when the stream or connection broke (also a reset by the
    /// node), [`Error::Codec`] for an undecodable frame.
    pub async fn next(&mut self) -> Result<Option<ringkv_types::WatchFrame>> {
        let lost = |error: &dyn std::fmt::Display| Error::ConnectionLost {
            reason: error.to_string(),
        };
        let mut header = [0u8; HEADER_LEN];
        match self.recv.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(error) => return Err(lost(&error)),
        }
        let length = ringkv_types::envelope::peek_length(&header, self.max_frame_bytes)
            .map_err(|error| lost(&error))?;
        let mut bytes = vec![0u8; HEADER_LEN + length];
        if let Some(head) = bytes.get_mut(..HEADER_LEN) {
            head.copy_from_slice(&header);
        }
        if let Some(body) = bytes.get_mut(HEADER_LEN..) {
            self.recv.read_exact(body).await.map_err(|e| lost(&e))?;
        }
        Ok(Some(codec::decode(&bytes, self.max_frame_bytes)?))
    }

    /// Tells the node to stop sending (it ends the watch).
    pub fn cancel(mut self) {
        let _ = self.send.finish();
        let _ = self.recv.stop(0u32.into());
    }
}
