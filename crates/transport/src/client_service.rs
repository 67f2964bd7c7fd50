//! The client service: one bidirectional stream per request, answered by a user-supplied
//! handler under a bound on concurrent requests and a timeout.

use crate::endpoint::Shared;
use crate::stats::add;
use ringkv_types::envelope::{self, HEADER_LEN};
use ringkv_types::{PeerIdentity, Request, Response, WatchFrame, WireError, codec};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing::debug;

/// The future a [`ClientHandler`] returns.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// A registered watch, as the handler hands it to the transport: its frames in order
/// (`Started`, events, one `End`), `None` after the end.
pub trait WatchFeed: Send + 'static {
    /// The next frame to send; waits for one.
    fn next_frame(&mut self) -> Pin<Box<dyn Future<Output = Option<WatchFrame>> + Send + '_>>;
}

/// The future [`ClientHandler::watch`] returns: the feed, or the refusal to send.
pub type WatchFuture =
    Pin<Box<dyn Future<Output = Result<Box<dyn WatchFeed>, WireError>> + Send + 'static>>;

/// Answers client requests; implemented by the node (any
/// `Fn(PeerIdentity, Request) -> impl Future<Output = Response>` closure also qualifies).
///
/// `peer` is who the connection's TLS session proves the caller is, computed once per
/// connection by the transport (see [`PeerIdentity`]); the handler must authorize the request
/// against it (the node does so in `ringkv_node::auth`).
///
/// The transport serves at most `client_inflight_max` requests at once, counted from the moment
/// their stream is accepted (beyond that it answers `Busy` without reading the request), and
/// at most `client_inbound_bytes_max` request bytes (`Busy` before the body is read). It
/// answers `Timeout` when a handler runs past the request's `timeout_ms` (clamped to
/// `client_timeout_max`; the handler sees the clamped value) or `client_request_timeout`; the
/// future is then dropped.
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

    /// Registers the watch `request` (a `Request::Watch`, possibly inside a `WithToken`). The
    /// transport then sends the feed's frames on the request's stream until the feed ends, the
    /// caller finishes or resets its side, or a frame is not read within
    /// `client_write_timeout`. Defaults to refusing (`Unavailable`).
    fn watch(&self, peer: PeerIdentity, request: Request) -> WatchFuture {
        let _ = (peer, request);
        Box::pin(std::future::ready(Err(WireError::Unavailable)))
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

/// QUIC application error code: the connection was closed after `client_idle_timeout` without
/// a request.
pub(crate) const CLOSE_IDLE: u32 = 0x13;
/// QUIC stream error code: the request was not received within `client_read_timeout`, or its
/// response not read within `client_write_timeout`.
const STREAM_TIMEOUT: u32 = 0x14;

/// Accepts request streams on `connection` until it closes. `peer` is the caller's identity,
/// read from the TLS session once by the caller. A client connection (not a node) with no
/// request in flight for `client_idle_timeout` is closed.
pub(crate) async fn serve_requests(
    shared: Arc<Shared>,
    connection: quinn::Connection,
    peer: Arc<PeerIdentity>,
) {
    let remote = connection.remote_address();
    debug!(%remote, %peer, "client connection");
    let is_node = matches!(*peer, PeerIdentity::Node(_));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let watchers = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = if is_node {
            connection.accept_bi().await
        } else {
            match tokio::time::timeout(shared.config.client_idle_timeout, connection.accept_bi())
                .await
            {
                Ok(accepted) => accepted,
                Err(_) if in_flight.load(Ordering::Acquire) > 0 => continue,
                Err(_) => {
                    add(&shared.counters.client_idle_closed, 1);
                    debug!(%remote, %peer, "closing an idle client connection");
                    connection.close(CLOSE_IDLE.into(), b"idle");
                    return;
                }
            }
        };
        let Ok((send, recv)) = accepted else { return };
        let guard = InFlight::enter(&in_flight);
        // Per-request tasks end with their stream or connection (every step has a timeout);
        // they are not tracked.
        let task_shared = shared.clone();
        let task_peer = peer.clone();
        let task_watchers = watchers.clone();
        tokio::spawn(async move {
            handle_request(task_shared, task_peer, remote, task_watchers, send, recv).await;
            drop(guard);
        });
    }
}

/// Counts a request of one connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one request stream. The in-flight permit is taken before anything is read, and the
/// request's bytes (from its frame header) are taken from `client_inbound_bytes_max` before its
/// body is buffered; both are held until the response is written (or the write times out).
async fn handle_request(
    shared: Arc<Shared>,
    peer: Arc<PeerIdentity>,
    remote: std::net::SocketAddr,
    watchers: Arc<AtomicUsize>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max_payload = shared.config.max_frame_bytes;
    let Ok(permit) = shared.client_permits.clone().try_acquire_owned() else {
        add(&shared.counters.client_busy, 1);
        return answer(&shared, send, &Response::Error(WireError::Busy)).await;
    };
    let deadline = tokio::time::Instant::now() + shared.config.client_read_timeout;
    let mut header = [0u8; HEADER_LEN];
    match tokio::time::timeout_at(deadline, recv.read_exact(&mut header)).await {
        Ok(Ok(())) => {}
        Ok(Err(quinn::ReadExactError::FinishedEarly(read))) => {
            return truncated(&shared, send, read).await;
        }
        Ok(Err(error)) => return debug!(%error, "client request stream failed"),
        Err(_) => return read_timed_out(&shared, send, recv),
    }
    let length = match envelope::peek_length(&header, max_payload) {
        Ok(length) => length,
        Err(error) => {
            let response = Response::Error(WireError::InvalidRequest {
                reason: error.to_string(),
            });
            return answer(&shared, send, &response).await;
        }
    };
    let total = HEADER_LEN + length;
    // `total` fits in u32: `validate` keeps `max_frame_bytes` below 4 GiB.
    let budget = u32::try_from(total)
        .ok()
        .and_then(|n| shared.client_bytes.clone().try_acquire_many_owned(n).ok());
    let Some(bytes_permit) = budget else {
        add(&shared.counters.client_busy, 1);
        add(&shared.counters.client_bytes_busy, 1);
        return answer(&shared, send, &Response::Error(WireError::Busy)).await;
    };
    let mut bytes = vec![0u8; total];
    if let Some(head) = bytes.get_mut(..HEADER_LEN) {
        head.copy_from_slice(&header);
    }
    if let Some(body) = bytes.get_mut(HEADER_LEN..) {
        match tokio::time::timeout_at(deadline, recv.read_exact(body)).await {
            Ok(Ok(())) => {}
            Ok(Err(quinn::ReadExactError::FinishedEarly(read))) => {
                return truncated(&shared, send, HEADER_LEN + read).await;
            }
            Ok(Err(error)) => return debug!(%error, "client request stream failed"),
            Err(_) => return read_timed_out(&shared, send, recv),
        }
    }
    let response = match codec::decode::<Request>(&bytes, max_payload) {
        Ok(request) if is_watch(&request) => {
            drop(bytes);
            drop(bytes_permit);
            return serve_watch(shared, peer, watchers, permit, request, send, recv).await;
        }
        Ok(request) => {
            drop(recv);
            drop(bytes);
            dispatch(&shared, &peer, remote, request).await
        }
        Err(error) => Response::Error(WireError::InvalidRequest {
            reason: error.to_string(),
        }),
    };
    answer(&shared, send, &response).await;
    drop(bytes_permit);
    drop(permit);
}

/// Whether `request` is a watch (possibly inside a token).
fn is_watch(request: &Request) -> bool {
    match request {
        Request::Watch(_) => true,
        Request::WithToken { request, .. } => matches!(**request, Request::Watch(_)),
        _ => false,
    }
}

/// Counts a watch of one connection while it lives.
struct WatchSlot(Arc<AtomicUsize>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves a watch stream: registers it with the handler (under the connection's cap on
/// watches), then sends its frames as they come. The in-flight permit is released once the
/// watch is registered: a watch lasts, and counts against `watchers_per_connection_max` (and
/// the node's own cap) instead. Ends when the feed ends, when the caller finishes or resets
/// its side (a cancel), or when a frame is not read within `client_write_timeout`.
async fn serve_watch(
    shared: Arc<Shared>,
    peer: Arc<PeerIdentity>,
    watchers: Arc<AtomicUsize>,
    permit: tokio::sync::OwnedSemaphorePermit,
    request: Request,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(handler) = shared.handler.clone() else {
        let _ = write_frame(
            &shared,
            &mut send,
            &WatchFrame::Refused(WireError::Unavailable),
        )
        .await;
        return;
    };
    let taken = watchers.fetch_add(1, Ordering::AcqRel);
    let slot = WatchSlot(watchers);
    if taken >= shared.config.watchers_per_connection_max {
        add(&shared.counters.client_busy, 1);
        let _ = write_frame(&shared, &mut send, &WatchFrame::Refused(WireError::Busy)).await;
        let _ = send.finish();
        return;
    }
    let registered = tokio::time::timeout(
        shared.config.client_request_timeout,
        handler.watch((*peer).clone(), request),
    )
    .await;
    drop(permit);
    let mut feed = match registered {
        Ok(Ok(feed)) => feed,
        Ok(Err(error)) => {
            let _ = write_frame(&shared, &mut send, &WatchFrame::Refused(error)).await;
            let _ = send.finish();
            return;
        }
        Err(_) => {
            let _ = write_frame(&shared, &mut send, &WatchFrame::Refused(WireError::Timeout)).await;
            let _ = send.finish();
            return;
        }
    };
    add(&shared.counters.client_requests, 1);
    let mut scratch = [0u8; 64];
    loop {
        let frame = tokio::select! {
            frame = feed.next_frame() => frame,
            // The caller finished or reset its side: it cancelled the watch.
            _ = recv.read(&mut scratch) => break,
        };
        let Some(frame) = frame else { break };
        let last = matches!(frame, WatchFrame::End(_));
        if !write_frame(&shared, &mut send, &frame).await {
            drop(slot);
            return;
        }
        if last {
            break;
        }
    }
    let _ = send.finish();
    drop(feed);
    drop(slot);
}

/// Writes one watch frame; `false` (the stream reset) when it could not be sent in time.
async fn write_frame(shared: &Shared, send: &mut quinn::SendStream, frame: &WatchFrame) -> bool {
    let mut bytes = Vec::new();
    if codec::encode_into(frame, &mut bytes, shared.config.max_frame_bytes).is_err() {
        let _ = send.reset(STREAM_TIMEOUT.into());
        return false;
    }
    match tokio::time::timeout(shared.config.client_write_timeout, send.write_all(&bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            debug!(%error, "watcher went away");
            false
        }
        Err(_) => {
            add(&shared.counters.client_write_timeouts, 1);
            debug!("watcher did not read its frame in time; resetting the stream");
            let _ = send.reset(STREAM_TIMEOUT.into());
            false
        }
    }
}

/// Answers a request stream the client finished before a whole frame.
async fn truncated(shared: &Shared, send: quinn::SendStream, read: usize) {
    let response = Response::Error(WireError::InvalidRequest {
        reason: format!("request stream ended after {read} bytes, inside its frame"),
    });
    answer(shared, send, &response).await;
}

fn read_timed_out(shared: &Shared, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    add(&shared.counters.client_read_timeouts, 1);
    debug!("client request not received in time");
    let _ = recv.stop(STREAM_TIMEOUT.into());
    let _ = send.reset(STREAM_TIMEOUT.into());
}

/// Writes `response` and finishes the stream, giving up (and resetting the stream) after
/// `client_write_timeout`.
async fn answer(shared: &Shared, mut send: quinn::SendStream, response: &Response) {
    let max_payload = shared.config.max_frame_bytes;
    let mut frame = Vec::new();
    if let Err(error) = codec::encode_into(response, &mut frame, max_payload) {
        frame.clear();
        let fallback = Response::Error(WireError::Internal {
            reason: error.to_string(),
        });
        if codec::encode_into(&fallback, &mut frame, max_payload).is_err() {
            return;
        }
    }
    match tokio::time::timeout(shared.config.client_write_timeout, send.write_all(&frame)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        Ok(Err(error)) => debug!(%error, "client went away before the response"),
        Err(_) => {
            add(&shared.counters.client_write_timeouts, 1);
            debug!("client did not read its response in time; resetting the stream");
            let _ = send.reset(STREAM_TIMEOUT.into());
        }
    }
}

/// Clamps a request's `timeout_ms` to `max_ms` (0, the server default, stays 0).
fn clamp_timeout(request: &mut Request, max_ms: u32) {
    match request {
        Request::WithToken { request, .. } => clamp_timeout(request, max_ms),
        Request::Kv(kv) => kv.timeout_ms = kv.timeout_ms.min(max_ms),
        _ => {}
    }
}

async fn dispatch(
    shared: &Shared,
    peer: &PeerIdentity,
    remote: std::net::SocketAddr,
    mut request: Request,
) -> Response {
    let Some(handler) = &shared.handler else {
        return Response::Error(WireError::Unavailable);
    };
    let max_ms = u32::try_from(shared.config.client_timeout_max.as_millis()).unwrap_or(u32::MAX);
    clamp_timeout(&mut request, max_ms);
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
