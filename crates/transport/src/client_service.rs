//! The client service: one bidirectional stream per request, answered by a user-supplied
//! handler under a bound on concurrent requests and a timeout.

use crate::endpoint::Shared;
use crate::stats::add;
use ringkv_types::envelope::HEADER_LEN;
use ringkv_types::{PeerIdentity, Request, Response, WireError, codec};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// The future a [`ClientHandler`] returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// Answers client requests; implemented by the node (any
/// `Fn(PeerIdentity, Request) -> impl Future<Output = Response>` closure also qualifies).
///
/// `peer` is who the connection's TLS session proves the caller is, computed once per
/// connection by the transport (see [`PeerIdentity`]); the handler must authorize the request
/// against it (the node does so in `ringkv_node::auth`).
///
/// The transport runs at most `client_inflight_max` handler futures at once (beyond that it
/// answers `Busy` without calling the handler) and answers `Timeout` when one runs past the
/// request's `timeout_ms` (or `client_request_timeout`); the future is then dropped.
pub trait ClientHandler: Send + Sync + 'static {
    /// Answers one request. Errors are answered as `Response::Error`.
    fn handle(&self, peer: PeerIdentity, request: Request) -> ResponseFuture;

    /// As [`ClientHandler::handle`], also given the caller's address (the QUIC connection's
    /// remote address), for handlers that count per source (failed logins). Defaults to
    /// `handle`.
    fn handle_from(
        &self,
        peer: PeerIdentity,
        remote: std::net::SocketAddr,
        request: Request,
    ) -> ResponseFuture {
        let _ = remote;
        self.handle(peer, request)
    }
}

impl<F, Fut> ClientHandler for F
where
    F: Fn(PeerIdentity, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn handle(&self, peer: PeerIdentity, request: Request) -> ResponseFuture {
        Box::pin(self(peer, request))
    }
}

/// Accepts request streams on `connection` until it closes. The caller's identity is read
/// from the TLS session once, here, and handed to the handler with every request.
pub(crate) async fn serve_requests(shared: Arc<Shared>, connection: quinn::Connection) {
    let peer = Arc::new(crate::tls::peer_identity(
        &connection,
        &shared.config.cluster,
    ));
    let remote = connection.remote_address();
    debug!(%remote, %peer, "client connection");
    while let Ok((send, recv)) = connection.accept_bi().await {
        // Per-request tasks end with their stream or connection; they are not tracked.
        tokio::spawn(handle_request(
            shared.clone(),
            peer.clone(),
            remote,
            send,
            recv,
        ));
    }
}

async fn handle_request(
    shared: Arc<Shared>,
    peer: Arc<PeerIdentity>,
    remote: std::net::SocketAddr,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max_payload = shared.config.max_frame_bytes;
    let limit = usize::try_from(max_payload)
        .unwrap_or(usize::MAX)
        .saturating_add(HEADER_LEN);
    let read = tokio::time::timeout(
        shared.config.client_request_timeout,
        recv.read_to_end(limit),
    )
    .await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => return debug!(%error, "client request stream failed"),
        Err(_) => return debug!("client request not received in time"),
    };
    let response = match codec::decode::<Request>(&bytes, max_payload) {
        Ok(request) => dispatch(&shared, &peer, remote, request).await,
        Err(error) => Response::Error(WireError::InvalidRequest {
            reason: error.to_string(),
        }),
    };
    let mut frame = Vec::new();
    if let Err(error) = codec::encode_into(&response, &mut frame, max_payload) {
        frame.clear();
        let fallback = Response::Error(WireError::Internal {
            reason: error.to_string(),
        });
        if codec::encode_into(&fallback, &mut frame, max_payload).is_err() {
            return;
        }
    }
    if let Err(error) = send.write_all(&frame).await {
        return debug!(%error, "client went away before the response");
    }
    let _ = send.finish();
}

async fn dispatch(
    shared: &Shared,
    peer: &PeerIdentity,
    remote: std::net::SocketAddr,
    request: Request,
) -> Response {
    let Some(handler) = &shared.handler else {
        return Response::Error(WireError::Unavailable);
    };
    let Ok(permit) = shared.client_permits.clone().try_acquire_owned() else {
        add(&shared.counters.client_busy, 1);
        return Response::Error(WireError::Busy);
    };
    let inner = match &request {
        Request::WithToken { request, .. } => request.as_ref(),
        request => request,
    };
    let budget = match inner {
        Request::Kv(kv) if kv.timeout_ms > 0 => Duration::from_millis(kv.timeout_ms.into()),
        _ => shared.config.client_request_timeout,
    };
    let outcome =
        tokio::time::timeout(budget, handler.handle_from(peer.clone(), remote, request)).await;
    drop(permit);
    match outcome {
        Ok(response) => {
            add(&shared.counters.client_requests, 1);
            response
        }
        Err(_) => {
            add(&shared.counters.client_timeouts, 1);
            Response::Error(WireError::Timeout)
        }
    }
}
