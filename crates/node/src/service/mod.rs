//! The client service: the transport's [`ClientHandler`] resolves the caller's principal,
//! authorizes the request ([`crate::auth::authorize`]), then hands it to the event loop through
//! a bounded queue and awaits the answer. Also the request checks that need no Raft state
//! (shard arc, epoch, limits), kept pure so they are unit-tested.

use crate::auth::{Authenticator, Principal, authorize, describe, is_audited};
use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::watch::WatchHub;
use ringkv_storage::{Command, Operation, SessionRequest};
use ringkv_transport::{ClientHandler, ResponseFuture, WatchFuture};
use ringkv_types::{
    AdminRequest, AdminResult, BatchOp, KvOp, KvRequest, PeerIdentity, Request, Response,
    ShardDescriptor, StartState, WireError,
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

/// The `op` label of a request (bounded: never a key or a user string).
fn op_label(request: &Request) -> &'static str {
    match request {
        Request::WithToken { request, .. } => op_label(request),
        Request::Kv(kv) => match kv.op {
            KvOp::Get { .. } => "get",
            KvOp::Exists { .. } => "has",
            KvOp::Put { .. } => "put",
            KvOp::Delete { .. } => "delete",
            KvOp::CompareAndSwap { .. } => "cas",
            KvOp::Batch { .. } => "batch",
            KvOp::GetMany { .. } => "get_many",
            KvOp::CompareVersionAndSwap { .. } => "cas_version",
            KvOp::Scan { .. } => "scan",
            KvOp::PutWithTtl { .. } => "put_ttl",
            KvOp::Persist { .. } => "persist",
            KvOp::Ttl { .. } => "ttl",
        },
        Request::Admin(AdminRequest::Login { .. }) => "login",
        Request::Admin(AdminRequest::Pd { .. }) => "pd",
        Request::Admin(_) => "admin",
        Request::Watch(_) => "watch",
    }
}

/// The `result` label of an answer.
fn result_label(response: &Response) -> &'static str {
    let Response::Error(error) = response else {
        return "ok";
    };
    match error {
        WireError::NotLeader { .. }
        | WireError::EpochMismatch { .. }
        | WireError::ShardNotFound { .. }
        | WireError::KeyNotInShard { .. } => "reroute",
        WireError::Busy => "busy",
        WireError::Timeout => "timeout",
        WireError::Unavailable => "unavailable",
        WireError::Unauthenticated { .. } => "unauthenticated",
        WireError::PermissionDenied { .. } => "permission_denied",
        WireError::KeyTooLarge { .. }
        | WireError::ValueTooLarge { .. }
        | WireError::BatchTooLarge { .. }
        | WireError::RequestTooLarge { .. } => "too_large",
        WireError::InvalidRequest { .. } => "invalid",
        WireError::Internal { .. } => "internal",
        WireError::NoSpace { .. } => "no_space",
        _ => "other",
    }
}

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

/// Every key an operation touches.
fn keys(op: &KvOp) -> Vec<&[u8]> {
    match op {
        KvOp::Get { key, .. }
        | KvOp::Exists { key, .. }
        | KvOp::Put { key, .. }
        | KvOp::Delete { key }
        | KvOp::CompareAndSwap { key, .. }
        | KvOp::CompareVersionAndSwap { key, .. }
        | KvOp::PutWithTtl { key, .. }
        | KvOp::Persist { key }
        | KvOp::Ttl { key, .. } => vec![key.as_ref()],
        KvOp::GetMany { keys, .. } => keys.iter().map(|key| key.as_ref()).collect(),
        // A scan names no key; its start is checked against the arc in `check_request`.
        KvOp::Scan { .. } => Vec::new(),
        KvOp::Batch { ops } => ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, .. } | BatchOp::Delete { key } => key.as_ref(),
            })
            .collect(),
    }
}

/// Every value an operation carries (CAS: expected and new).
fn values(op: &KvOp) -> Vec<&[u8]> {
    match op {
        KvOp::Get { .. }
        | KvOp::Exists { .. }
        | KvOp::Delete { .. }
        | KvOp::GetMany { .. }
        | KvOp::Scan { .. }
        | KvOp::Persist { .. }
        | KvOp::Ttl { .. } => Vec::new(),
        KvOp::CompareVersionAndSwap { new, .. } => new.iter().map(|value| value.as_ref()).collect(),
        KvOp::Put { value, .. } | KvOp::PutWithTtl { value, .. } => vec![value.as_ref()],
        KvOp::CompareAndSwap { expected, new, .. } => expected
            .iter()
            .chain(new.iter())
            .map(|value| value.as_ref())
            .collect(),
        KvOp::Batch { ops } => ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { value, .. } => Some(value.as_ref()),
                BatchOp::Delete { .. } => None,
            })
            .collect(),
    }
}

/// Checks a request against this replica's descriptor and the limits, in the order a client
/// wants to hear about problems: routing first (epoch, arc), then sizes.
///
/// # Errors
/// `EpochMismatch`, `KeyNotInShard`, `BatchTooLarge`, `KeyTooLarge`, `ValueTooLarge`,
/// `RequestTooLarge`, or `InvalidRequest` for an empty batch.
pub fn check_request(
    request: &KvRequest,
    descriptor: &ShardDescriptor,
    limits: &LimitsConfig,
) -> Result<(), WireError> {
    if request.epoch != descriptor.epoch {
        return Err(WireError::EpochMismatch {
            descriptor: descriptor.clone(),
        });
    }
    let keys = keys(&request.op);
    if keys.iter().any(|key| !descriptor.contains_key(key)) {
        return Err(WireError::KeyNotInShard {
            shard: descriptor.id,
        });
    }
    if let KvOp::Scan { start, .. } = &request.op {
        // The start is a storage key: its first 8 bytes are a ring position of this arc.
        let position = match start.len() {
            0 => None,
            1..8 => {
                return Err(WireError::InvalidRequest {
                    reason: format!("scan start of {} bytes (a storage key)", start.len()),
                });
            }
            _ => start
                .first_chunk::<8>()
                .map(|bytes| u64::from_be_bytes(*bytes)),
        };
        if position.is_some_and(|position| !descriptor.arc.contains(position)) {
            return Err(WireError::KeyNotInShard {
                shard: descriptor.id,
            });
        }
    }
    if let KvOp::PutWithTtl { ttl_ms, .. } = &request.op
        && !(1..=ringkv_types::TTL_MS_MAX).contains(ttl_ms)
    {
        return Err(WireError::InvalidRequest {
            reason: format!(
                "ttl of {ttl_ms} ms: a TTL is 1 ms to {} ms (ten years)",
                ringkv_types::TTL_MS_MAX
            ),
        });
    }
    let count = match &request.op {
        KvOp::Batch { ops } => Some(ops.len()),
        KvOp::GetMany { keys, .. } => Some(keys.len()),
        _ => None,
    };
    if let Some(count) = count {
        if count == 0 {
            return Err(WireError::InvalidRequest {
                reason: "empty batch".into(),
            });
        }
        if count as u64 > limits.max_batch_ops {
            return Err(WireError::BatchTooLarge {
                count: count as u64,
                max: limits.max_batch_ops,
            });
        }
    }
    let mut total = 0u64;
    for key in &keys {
        let size = key.len() as u64;
        if size > limits.max_key_bytes {
            return Err(WireError::KeyTooLarge {
                size,
                max: limits.max_key_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    for value in values(&request.op) {
        let size = value.len() as u64;
        if size > limits.max_value_bytes {
            return Err(WireError::ValueTooLarge {
                size,
                max: limits.max_value_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_request_bytes {
        return Err(WireError::RequestTooLarge {
            size: total,
            max: limits.max_request_bytes,
        });
    }
    Ok(())
}

/// The state-machine command of a write request (`None` for a read).
pub fn command_of(request: &KvRequest) -> Option<Command> {
    let operations = match &request.op {
        KvOp::Get { .. }
        | KvOp::Exists { .. }
        | KvOp::GetMany { .. }
        | KvOp::Scan { .. }
        | KvOp::Ttl { .. } => {
            return None;
        }
        KvOp::PutWithTtl { key, value, ttl_ms } => vec![Operation::PutWithTtl {
            key: key.clone(),
            value: value.clone(),
            ttl_ms: *ttl_ms,
        }],
        KvOp::Persist { key } => vec![Operation::Persist { key: key.clone() }],
        KvOp::CompareVersionAndSwap {
            key,
            expected_version,
            new,
        } => vec![Operation::CompareVersionAndSwap {
            key: key.clone(),
            expected_version: *expected_version,
            new: new.clone(),
        }],
        KvOp::Put { key, value } => vec![Operation::Put {
            key: key.clone(),
            value: value.clone(),
        }],
        KvOp::Delete { key } => vec![Operation::Delete { key: key.clone() }],
        KvOp::CompareAndSwap { key, expected, new } => vec![Operation::CompareAndSwap {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        }],
        KvOp::Batch { ops } => ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => Operation::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                BatchOp::Delete { key } => Operation::Delete { key: key.clone() },
            })
            .collect(),
    };
    Some(Command {
        session: request.session.map(|session| SessionRequest {
            session: session.session_id,
            sequence: session.sequence,
        }),
        operations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::initial_shard_map;
    use bytes::Bytes;
    use ringkv_types::{Epoch, NodeId, ReadConsistency};

    fn request(descriptor: &ShardDescriptor, op: KvOp) -> KvRequest {
        KvRequest {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            session: None,
            timeout_ms: 0,
            op,
        }
    }

    /// A key the descriptor owns (searching small integers).
    fn key_in(descriptor: &ShardDescriptor, other: bool) -> Bytes {
        (0u32..)
            .map(|i| Bytes::from(format!("key-{i}")))
            .find(|key| descriptor.contains_key(key) != other)
            .unwrap()
    }

    #[test]
    fn requests_are_checked_for_routing_then_limits() {
        let map = initial_shard_map(&[NodeId(1), NodeId(2), NodeId(3)], 4, 3);
        let shard = &map.shards[1];
        let limits = LimitsConfig {
            max_key_bytes: 16,
            max_value_bytes: 8,
            max_request_bytes: 20,
            max_batch_ops: 2,
            ..LimitsConfig::default()
        };
        let mine = key_in(shard, false);
        let foreign = key_in(shard, true);
        let put = |key: &Bytes, size: usize| KvOp::Put {
            key: key.clone(),
            value: Bytes::from(vec![b'v'; size]),
        };
        let ok = request(shard, put(&mine, 8));
        assert_eq!(check_request(&ok, shard, &limits), Ok(()));

        let mut stale = ok.clone();
        stale.epoch = Epoch::default();
        assert!(matches!(
            check_request(&stale, shard, &limits),
            Err(WireError::EpochMismatch { .. })
        ));
        let cases: Vec<(&str, KvOp, WireError)> = vec![
            (
                "foreign key",
                KvOp::Get {
                    key: foreign.clone(),
                    consistency: ReadConsistency::Stale,
                },
                WireError::KeyNotInShard { shard: shard.id },
            ),
            (
                "big value",
                put(&mine, 9),
                WireError::ValueTooLarge { size: 9, max: 8 },
            ),
            (
                "big key",
                KvOp::Delete {
                    key: Bytes::from(vec![b'k'; 17]),
                },
                // A 17-byte key is checked for its shard first.
                if shard.contains_key(&[b'k'; 17]) {
                    WireError::KeyTooLarge { size: 17, max: 16 }
                } else {
                    WireError::KeyNotInShard { shard: shard.id }
                },
            ),
            (
                "many ops",
                KvOp::Batch {
                    ops: vec![BatchOp::Delete { key: mine.clone() }; 3],
                },
                WireError::BatchTooLarge { count: 3, max: 2 },
            ),
            (
                "big request",
                KvOp::Batch {
                    ops: vec![
                        BatchOp::Put {
                            key: mine.clone(),
                            value: Bytes::from_static(b"12345678"),
                        };
                        2
                    ],
                },
                WireError::RequestTooLarge {
                    size: 2 * (mine.len() as u64 + 8),
                    max: 20,
                },
            ),
        ];
        for (name, op, expected) in cases {
            assert_eq!(
                check_request(&request(shard, op), shard, &limits),
                Err(expected),
                "{name}"
            );
        }
    }
}
