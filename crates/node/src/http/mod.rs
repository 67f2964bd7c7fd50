//! The HTTP API and health endpoints every `ringkvd` serves on `http_addr` (see `docs/http.md`).
//!
//! axum on hyper 1; HTTPS with the node's certificate through tokio-rustls and the ring
//! provider (as the transport), plain HTTP only on a loopback address (`http_tls = false`,
//! checked by the config). One accept loop, a task per connection, at most
//! `limits.http_connections_max` connections at once (more wait in the kernel's backlog).
//!
//! Routes: `/livez`, `/readyz`, `/metrics` (`health.rs`), the key-value routes (`kv.rs` and the
//! `kv_*.rs` beside it, executed through the embedded client of `forward.rs`), each behind the principal check of [`auth`].

pub mod auth;
mod body;
mod caller;
mod cluster;
pub mod error;
mod forward;
mod health;
mod kv;
mod kv_batch;
mod kv_cas;
mod kv_read;
mod kv_ttl;
mod op;
mod params;
mod tls;
mod watch;

#[cfg(test)]
mod routes_test;

use crate::config::{HttpConfig, NodeConfig};
use crate::error::{Error, Result};
use crate::health::HealthReader;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ringkv_transport::certs::TlsIdentity;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument as _, debug, info, warn};

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    health: HealthReader,
    metrics: Arc<Metrics>,
    authenticator: Arc<crate::auth::Authenticator>,
    slow_request: Duration,
    next_request_id: AtomicU64,
    forwarder: Arc<forward::Forwarder>,
    max_value_bytes: usize,
    max_request_bytes: usize,
}

impl AppState {
    /// Counts one API request of `op` that ended with `result` after `elapsed`.
    fn record(&self, op: op::Op, result: &'static str, elapsed: Duration) {
        self.inner.metrics.http_request(op.label(), result, elapsed);
    }
}

/// The running HTTP server; dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    reload: HttpReload,
}

impl HttpServer {
    /// The bound TCP address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that reloads this server's certificates.
    pub fn reloader(&self) -> HttpReload {
        self.reload.clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it ends them all.
        self.task.abort();
    }
}

/// Binds `http.addr` and serves the API until the returned server is dropped.
///
/// # Errors
/// [`Error::Io`] when the address cannot be bound, [`Error::Fatal`] for a TLS setup failure.
pub async fn start(
    config: &NodeConfig,
    http: &HttpConfig,
    identity: &TlsIdentity,
    health: HealthReader,
    metrics: Arc<Metrics>,
    authenticator: Arc<crate::auth::Authenticator>,
) -> Result<HttpServer> {
    let acceptor = match http.tls {
        true => Some(Arc::new(std::sync::RwLock::new(
            tokio_rustls::TlsAcceptor::from(tls::server_config(identity)?),
        ))),
        false => None,
    };
    let listener = TcpListener::bind(http.addr).await.map_err(|error| {
        Error::Io(std::io::Error::new(
            error.kind(),
            format!("cannot bind http_addr {}: {error}", http.addr),
        ))
    })?;
    let local_addr = listener.local_addr()?;
    let state = AppState::new(
        config,
        identity,
        health,
        metrics,
        authenticator,
        http.slow_request,
    );
    let reload = HttpReload {
        acceptor: acceptor.clone(),
        forwarder: state.inner.forwarder.clone(),
    };
    let router = router(state);
    let connections = Arc::new(Semaphore::new(config.limits.http_connections_max));
    info!(addr = %local_addr, tls = http.tls, "HTTP API listening");
    let task = tokio::spawn(accept_loop(
        Arc::from(config.cluster.as_str()),
        listener,
        acceptor,
        router,
        connections,
    ));
    Ok(HttpServer {
        local_addr,
        task,
        reload,
    })
}

/// The HTTPS acceptor, swapped by a certificate reload.
type AcceptorSlot = Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>;

/// Reloads the HTTP server's certificates: the HTTPS port's (new connections) and the
/// embedded client's (next request).
#[derive(Clone)]
pub struct HttpReload {
    acceptor: Option<AcceptorSlot>,
    forwarder: Arc<forward::Forwarder>,
}

impl std::fmt::Debug for HttpReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpReload")
            .field("tls", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpReload {
    /// Uses `identity` from now on.
    ///
    /// # Errors
    /// [`Error::Fatal`] when it does not make a TLS configuration (nothing changes then).
    pub async fn reload(&self, identity: &TlsIdentity) -> Result<()> {
        if let Some(slot) = &self.acceptor {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(identity)?);
            *slot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = acceptor;
        }
        self.forwarder.reload(identity).await;
        Ok(())
    }
}

impl AppState {
    fn new(
        config: &NodeConfig,
        identity: &TlsIdentity,
        health: HealthReader,
        metrics: Arc<Metrics>,
        authenticator: Arc<crate::auth::Authenticator>,
        slow_request: Duration,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                health,
                metrics,
                authenticator,
                slow_request,
                next_request_id: AtomicU64::new(1),
                forwarder: Arc::new(forward::Forwarder::new(config, identity)),
                max_value_bytes: usize::try_from(config.limits.max_value_bytes)
                    .unwrap_or(usize::MAX),
                max_request_bytes: usize::try_from(config.limits.max_request_bytes)
                    .unwrap_or(usize::MAX),
            }),
        }
    }
}

/// Every route of the API as (method, path). `routes_test.rs` checks that the router serves
/// exactly these and that `docs/openapi.yaml` documents exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/kv/{key}"),
    ("HEAD", "/v1/kv/{key}"),
    ("PUT", "/v1/kv/{key}"),
    ("DELETE", "/v1/kv/{key}"),
    ("POST", "/v1/kv/{key}/cas"),
    ("GET", "/v1/kv/{key}/ttl"),
    ("POST", "/v1/kv/{key}/persist"),
    ("POST", "/v1/batch"),
    ("GET", "/v1/kv"),
    ("POST", "/v1/kv:batchGet"),
    ("GET", "/v1/cluster/status"),
    ("GET", "/v1/cluster/shards"),
    ("GET", "/v1/cluster/nodes"),
    ("GET", "/v1/openapi.yaml"),
    ("POST", "/v1/auth/token"),
    ("GET", "/v1/watch"),
];

/// Every route of the API (listed in [`ROUTES`]).
fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", axum::routing::get(health::livez))
        .route("/readyz", axum::routing::get(health::readyz))
        .route("/metrics", axum::routing::get(health::metrics))
        .route(
            "/v1/kv/{key}",
            axum::routing::get(kv::get)
                .head(kv::head)
                .put(kv::put)
                .delete(kv::delete),
        )
        .route("/v1/kv/{key}/cas", axum::routing::post(kv_cas::cas))
        .route("/v1/kv/{key}/ttl", axum::routing::get(kv_ttl::ttl))
        .route("/v1/kv/{key}/persist", axum::routing::post(kv_ttl::persist))
        .route("/v1/batch", axum::routing::post(kv_batch::batch))
        .route("/v1/kv", axum::routing::get(kv_read::scan))
        .route("/v1/kv:batchGet", axum::routing::post(kv_read::batch_get))
        .route("/v1/cluster/status", axum::routing::get(cluster::status))
        .route("/v1/cluster/shards", axum::routing::get(cluster::shards))
        .route("/v1/cluster/nodes", axum::routing::get(cluster::nodes))
        .route("/v1/openapi.yaml", axum::routing::get(openapi))
        .route("/v1/auth/token", axum::routing::post(auth::login))
        .route("/v1/watch", axum::routing::get(watch::watch))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_span,
        ))
        .with_state(state)
}

/// The OpenAPI document of this API (`docs/openapi.yaml`, compiled in).
pub const OPENAPI_YAML: &str = include_str!("../../../../docs/openapi.yaml");

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI_YAML,
    )
}

/// A request id and a span on each request; a `warn` line when it took longer than
/// `slow_request_ms`.
async fn request_span(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = state.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::info_span!("http", request_id = id, %method, path = %path);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        if elapsed >= state.inner.slow_request {
            warn!(
                status,
                elapsed_ms = elapsed.as_millis() as u64,
                "slow request"
            );
        } else {
            debug!(status, elapsed_us = elapsed.as_micros() as u64, "request");
        }
    });
    response
}

async fn accept_loop(
    cluster: Arc<str>,
    listener: TcpListener,
    acceptor: Option<AcceptorSlot>,
    router: Router,
    connections: Arc<Semaphore>,
) {
    let mut tasks = JoinSet::new();
    loop {
        // Reap finished connections so the set stays bounded by the semaphore.
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off a little instead of spinning.
                warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.as_ref().map(|slot| {
            slot.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        let router = router.clone();
        let cluster = cluster.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map_or(ringkv_types::PeerIdentity::Anonymous, |leaf| {
                                    ringkv_transport::certs::certificate_identity(leaf, &cluster)
                                });
                            serve(tls, ConnectionInfo { peer, identity }, router).await
                        }
                        Ok(Err(error)) => debug!(%peer, %error, "HTTPS handshake failed"),
                        Err(_) => debug!(%peer, "HTTPS handshake timed out"),
                    }
                }
                None => {
                    let identity = ringkv_types::PeerIdentity::Anonymous;
                    serve(stream, ConnectionInfo { peer, identity }, router).await
                }
            }
        });
    }
}

/// Serves one connection (HTTP/1.1 or HTTP/2, as negotiated) until it closes.
async fn serve<S>(stream: S, connection: ConnectionInfo, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = connection.peer;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(connection.clone());
        tower::ServiceExt::oneshot(router.clone(), request)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// Facts about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Who its client certificate names (verified against the cluster CA by the handshake);
    /// anonymous without one.
    pub identity: ringkv_types::PeerIdentity,
}
