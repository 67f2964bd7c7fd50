//! Incoming connections: the accept loop (connection limit, QUIC address validation) and the
//! serving of one connection (client slots for connections without a node certificate, peer
//! streams and client requests).

use crate::client_service::serve_requests;
use crate::endpoint::Shared;
use crate::peer::lock;
use crate::receive::handle_stream;
use crate::stats::add;
use crate::tls;
use ringkv_types::{NodeId, PeerIdentity};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tracing::debug;

/// QUIC application error code: a client connection was refused because
/// `max_client_connections` client connections are open.
pub(crate) const CLOSE_CLIENTS_FULL: u32 = 0x12;

/// Accepts incoming connections until the endpoint closes.
///
/// Before the handshake only the total (`max_connections`) is checked, and an address that has
/// not been validated and is not a known peer address is sent a QUIC Retry (when
/// `client_address_validation` is on). After the handshake, connections whose certificate names
/// no node of this cluster count against `max_client_connections`; nodes do not.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.endpoint.open_connections() >= shared.config.max_connections {
            add(&shared.counters.connections_refused, 1);
            debug!(remote = %incoming.remote_address(), "connection limit reached; refusing");
            incoming.refuse();
            continue;
        }
        if shared.config.client_address_validation
            && !incoming.remote_address_validated()
            && incoming.may_retry()
            && !lock(&shared.peer_addrs).contains(&incoming.remote_address())
        {
            add(&shared.counters.address_validations, 1);
            if let Err(error) = incoming.retry() {
                error.into_incoming().ignore();
            }
            continue;
        }
        let task_shared = shared.clone();
        shared.spawn(async move {
            match incoming.await {
                Ok(connection) => serve_connection(task_shared, connection, None).await,
                Err(error) => {
                    add(&task_shared.counters.handshake_failures, 1);
                    debug!(%error, "incoming handshake failed");
                }
            }
        });
    }
}

/// A client connection slot, released on drop.
struct ClientSlot<'a>(&'a AtomicUsize);

impl<'a> ClientSlot<'a> {
    fn take(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection until it closes: peer streams (unidirectional) and client requests
/// (bidirectional). `verified_peer` is the node we dialed (its certificate name was checked by
/// the handshake); `None` for accepted connections, whose peer proves its identity per stream.
/// An accepted connection without a node certificate takes a client slot for its lifetime, or
/// is closed when none is free.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    verified_peer: Option<NodeId>,
) {
    let identity = Arc::new(tls::peer_identity(&connection, &shared.config.cluster));
    let _slot = match (*identity).clone() {
        PeerIdentity::Node(_) => {
            lock(&shared.peer_addrs).insert(connection.remote_address());
            None
        }
        _ if verified_peer.is_some() => None,
        _ => {
            let Some(slot) = ClientSlot::take(
                &shared.client_connections,
                shared.config.max_client_connections,
            ) else {
                add(&shared.counters.clients_refused, 1);
                debug!(remote = %connection.remote_address(), "client connection limit reached");
                connection.close(CLOSE_CLIENTS_FULL.into(), b"too many client connections");
                return;
            };
            Some(slot)
        }
    };
    shared.spawn(serve_requests(
        shared.clone(),
        connection.clone(),
        identity.clone(),
    ));
    while let Ok(stream) = connection.accept_uni().await {
        shared.spawn(handle_stream(
            shared.clone(),
            connection.clone(),
            stream,
            verified_peer,
        ));
    }
}
