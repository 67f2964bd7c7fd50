//! The client service: the transport's [`ClientHandler`] resolves the caller's principal,
//! authorizes the request ([`crate::auth::authorize`]), then hands it to the event loop through
//! a bounded queue and awaits the answer. Also the request checks that need no Raft state
//! (shard arc, epoch, limits), kept pure so they are unit-tested.
//!
//! `check.rs` holds those checks, `command.rs` turns a write into its state-machine command,
//! `labels.rs` names requests and answers for the metrics; this file is the handler.

mod check;
mod command;
mod labels;

pub use check::check_request;
pub use command::command_of;

use crate::auth::{Authenticator, Principal, authorize, describe, is_audited};
use crate::metrics::Metrics;
use crate::watch::WatchHub;
use labels::{op_label, result_label};
use ringkv_transport::{ClientHandler, ResponseFuture, WatchFuture};
use ringkv_types::{
    AdminRequest, AdminResult, PeerIdentity, Request, Response, StartState, WireError,
};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// One client request on its way to the event loop, with the slot for its answer.
#[derive(Debug)]
pub struct ClientCall {
    /// The request.
    pub request: Request,
    /// Where the loop answers. Dropped unanswered when the client gave up (timeout).
    pub reply: oneshot::Sender<Response>,
}

/// The node's [`ClientHandler`]: authenticate, authorize, enqueue (answer `Busy` when the
/// queue is full).
#[derive(Clone, Debug)]
pub struct Service {
    calls: mpsc::Sender<ClientCall>,
    auth: Arc<Authenticator>,
    metrics: Option<Arc<Metrics>>,
    start_state: Option<SharedStartState>,
    watch: Option<Arc<WatchHub>>,
}

/// The node's answer to [`AdminRequest::StartState`], shared with the start code that updates
/// it (the service answers it without the event loop, which does not run yet during the check
/// of a new data dir).
pub type SharedStartState = Arc<std::sync::Mutex<StartState>>;

impl Service {
    /// A handler feeding `calls`, checking callers with `auth`.
    pub fn new(calls: mpsc::Sender<ClientCall>, auth: Arc<Authenticator>) -> Self {
        Self {
            calls,
            auth,
            metrics: None,
            start_state: None,
            watch: None,
        }
    }

    /// Serves watches from `hub` (else they are refused `Unavailable`).
    #[must_use]
    pub fn with_watch(mut self, hub: Arc<WatchHub>) -> Self {
        self.watch = Some(hub);
        self
    }

    /// Answers [`AdminRequest::StartState`] from `state` (else `Unavailable`).
    #[must_use]
    pub fn with_start_state(mut self, state: SharedStartState) -> Self {
        self.start_state = Some(state);
        self
    }

    /// Counts every answered request in `metrics` (`ringkv_requests_total{op, result}` and
    /// `ringkv_request_duration_seconds{op}`). Requests the transport gave up on (its timeout)
    /// are counted there, not here.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// [`Service::serve`], measured.
    fn serve_measured(
        &self,
        peer: PeerIdentity,
        remote: Option<std::net::IpAddr>,
        request: Request,
    ) -> ResponseFuture {
        let Some(metrics) = self.metrics.clone() else {
            return self.serve(peer, remote, request);
        };
        let op = op_label(&request);
        let started = std::time::Instant::now();
        let answer = self.serve(peer, remote, request);
        Box::pin(async move {
            let response = answer.await;
            metrics.request(op, result_label(&response), started.elapsed());
            response
        })
    }
}

/// An answer that needs no event loop.
fn answer_now(response: Response) -> ResponseFuture {
    Box::pin(std::future::ready(response))
}

impl ClientHandler for Service {
    fn handle(&self, peer: PeerIdentity, request: Request) -> ResponseFuture {
        self.serve_measured(peer, None, request)
    }

    fn handle_from(
        &self,
        peer: PeerIdentity,
        remote: std::net::SocketAddr,
        request: Request,
    ) -> ResponseFuture {
        self.serve_measured(peer, Some(remote.ip()), request)
    }

    fn watch(&self, peer: PeerIdentity, request: Request) -> WatchFuture {
        let answer = self.subscribe(&peer, request);
        Box::pin(std::future::ready(answer))
    }
}

impl Service {
    /// Authenticates and authorizes a watch, then registers it in the hub.
    fn subscribe(
        &self,
        peer: &PeerIdentity,
        request: Request,
    ) -> Result<Box<dyn ringkv_transport::WatchFeed>, WireError> {
        let Some(hub) = &self.watch else {
            return Err(WireError::Unavailable);
        };
        let (principal, request) = self.auth.resolve(peer, request).inspect_err(|error| {
            warn!(target: "audit", %peer, %error, "authentication failed");
        })?;
        if let Err(error) = authorize(&principal, &request) {
            warn!(target: "audit", %principal, %error, request = %describe(&request), "request refused");
            return Err(error);
        }
        let Request::Watch(watch) = request else {
            return Err(WireError::InvalidRequest {
                reason: "not a watch".into(),
            });
        };
        let feed = hub.subscribe(watch)?;
        if let Some(metrics) = &self.metrics {
            metrics.request("watch", "ok", std::time::Duration::ZERO);
        }
        Ok(Box::new(feed))
    }
}

impl Service {
    /// Authenticates, authorizes and enqueues one request; `remote` is the caller's address
    /// (failed logins are slowed per user and per address).
    fn serve(
        &self,
        peer: PeerIdentity,
        remote: Option<std::net::IpAddr>,
        request: Request,
    ) -> ResponseFuture {
        // A login needs no principal (a token around it is ignored).
        let request = match request {
            Request::WithToken { request, .. }
                if matches!(*request, Request::Admin(AdminRequest::Login { .. })) =>
            {
                *request
            }
            other => other,
        };
        if let Request::Admin(AdminRequest::Login { user, password }) = request {
            return Box::pin(self.auth.clone().login(peer, remote, user, password));
        }
        let (principal, request) = match self.auth.resolve(&peer, request) {
            Ok(resolved) => resolved,
            Err(error) => {
                warn!(target: "audit", %peer, %error, "authentication failed");
                return answer_now(Response::Error(error));
            }
        };
        if let Err(error) = authorize(&principal, &request) {
            warn!(target: "audit", %principal, %error, request = %describe(&request), "request refused");
            return answer_now(Response::Error(error));
        }
        if matches!(request, Request::Admin(AdminRequest::StartState)) {
            let answer = match &self.start_state {
                Some(state) => Response::Admin(AdminResult::StartState(
                    state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                )),
                None => Response::Error(WireError::Unavailable),
            };
            return answer_now(answer);
        }
        if is_audited(&request) {
            info!(target: "audit", %principal, request = %describe(&request), "admin request");
        }
        // Password hashes and private keys go to nodes only.
        let redact = matches!(request, Request::Admin(AdminRequest::PdState))
            && !matches!(principal, Principal::Node(_));
        let (reply, answer) = oneshot::channel();
        let queued = self.calls.try_send(ClientCall { request, reply });
        Box::pin(async move {
            let response = match queued {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Response::Error(WireError::Internal {
                        reason: "the node stopped before answering".into(),
                    })
                }),
                Err(mpsc::error::TrySendError::Full(_)) => Response::Error(WireError::Busy),
                Err(mpsc::error::TrySendError::Closed(_)) => Response::Error(WireError::Internal {
                    reason: "the node is shutting down".into(),
                }),
            };
            if redact {
                redact_pd_state(response)
            } else {
                response
            }
        })
    }
}

/// A `PdState` answer without password hashes and private keys.
fn redact_pd_state(response: Response) -> Response {
    let Response::Admin(AdminResult::Pd(bytes)) = &response else {
        return response;
    };
    match crate::pd_host::decode_state(bytes) {
        Ok(mut state) => {
            state.auth = state.auth.redacted();
            match crate::pd_host::encode_state(&state) {
                Ok(bytes) => Response::Admin(AdminResult::Pd(bytes.into())),
                Err(error) => Response::Error(WireError::Internal {
                    reason: error.to_string(),
                }),
            }
        }
        Err(error) => Response::Error(WireError::Internal {
            reason: error.to_string(),
        }),
    }
}
