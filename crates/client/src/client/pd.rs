//! Placement-driver calls: find the leader of group 0, send it a [`ringkv_types::pd::Command`] or read
//! its [`ringkv_types::pd::PdState`].
//!
//! Any node answers a PD call that it cannot serve with `NotLeader { leader_hint }`. The client
//! caches the node that last served one, follows hints, and otherwise walks every node it
//! knows (seed endpoints, then learned ones); after a full round without a leader it relearns
//! the node list and backs off. The order of asking is [`LeaderSearch`], shared with the node
//! agent. The call's time budget and attempt count are the client's
//! usual [`RetryPolicy`](crate::RetryPolicy) and `request_timeout`.
//!
//! A PD command that timed out may still have been applied: retrying it is safe for the
//! idempotent ones (`RegisterNode`, `SetScheduler`, `SetSettings`, `SetNodeState`), while a
//! retried `AddOperator` may be refused with `ShardBusy` by its own first copy.

use super::Client;
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use bytes::Bytes;
use ringkv_types::pd::LeaderSearch;
use ringkv_types::{AdminRequest, AdminResult, NodeId, Request, Response, WireError};
use std::sync::PoisonError;
use tokio::time::Instant;
use tracing::debug;

/// What one PD attempt asks of the retry loop.
enum Next {
    /// The leader answered with these bytes.
    Done(Bytes),
    /// Give up with this error.
    Fatal(Error),
    /// Retry: at `node` if given (else the next untried node), after a backoff if `pause`.
    Retry {
        error: Error,
        node: Option<NodeId>,
        pause: bool,
    },
}

impl Client {
    /// Sends `command` to the placement driver's leader and returns its answer once the
    /// command is applied. The leader stamps `now_ms` fields with its own clock, so callers
    /// leave them 0.
    ///
    /// # Errors
    /// [`Error::Pd`] when PD refused the command (nothing changed); [`Error::Exhausted`] when
    /// no PD leader answered within the budget; [`Error::Codec`] on a version mismatch.
    pub async fn pd_call(
        &self,
        command: ringkv_types::pd::Command,
    ) -> Result<ringkv_types::pd::Response> {
        let encoded = postcard::to_stdvec(&command).map_err(|e| Error::Codec {
            action: "encode",
            what: "PD command",
            reason: e.to_string(),
        })?;
        let request = AdminRequest::Pd {
            command: Bytes::from(encoded),
        };
        let answer = self.pd_request(request).await?;
        let result: std::result::Result<ringkv_types::pd::Response, ringkv_types::pd::Error> =
            postcard::from_bytes(&answer).map_err(|e| Error::Codec {
                action: "decode",
                what: "PD answer",
                reason: e.to_string(),
            })?;
        result.map_err(Error::Pd)
    }

    /// The placement driver's state as applied on its leader: nodes with their state and
    /// load, the shard map, leaders and sizes, operators in flight, scheduler settings.
    ///
    /// # Errors
    /// [`Error::Exhausted`] when no PD leader answered within the budget; [`Error::Codec`] on a
    /// version mismatch.
    pub async fn pd_state(&self) -> Result<ringkv_types::pd::PdState> {
        let answer = self.pd_request(AdminRequest::PdState).await?;
        postcard::from_bytes(&answer).map_err(|e| Error::Codec {
            action: "decode",
            what: "PD state",
            reason: e.to_string(),
        })
    }

    /// The operators the placement driver's schedulers would start now, in the order they would
    /// start them (what `ringctl rebalance --dry-run` prints), computed by the PD leader from
    /// its applied state. `balancing`: as if both balance schedulers were on, whatever the
    /// settings say.
    ///
    /// # Errors
    /// [`Error::Exhausted`] when no PD leader answered within the budget; [`Error::Codec`] on a
    /// version mismatch (a node too old to know the request answers `InvalidRequest`).
    pub async fn pd_plan(&self, balancing: bool) -> Result<Vec<ringkv_types::pd::Operator>> {
        let answer = self.pd_request(AdminRequest::PdPlan { balancing }).await?;
        postcard::from_bytes(&answer).map_err(|e| Error::Codec {
            action: "decode",
            what: "PD plan",
            reason: e.to_string(),
        })
    }

    /// The node believed to lead the placement driver.
    pub fn cached_pd_leader(&self) -> Option<NodeId> {
        *self
            .inner
            .pd_leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_pd_leader(&self, leader: Option<NodeId>) {
        *self
            .inner
            .pd_leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = leader;
    }

    /// Sends `request` to the PD leader, finding it first; returns the `AdminResult::Pd` bytes.
    async fn pd_request(&self, request: AdminRequest) -> Result<Bytes> {
        let config = &self.inner.config;
        let started = Instant::now();
        let deadline = started + config.request_timeout;
        let mut backoff = Backoff::new(config.retry.backoff_min, config.retry.backoff_max);
        let request = Request::Admin(request);
        let mut search =
            LeaderSearch::new(self.cached_pd_leader().filter(|node| !self.is_down(*node)));
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let outcome = match search.next_target(self.nodes_to_ask()) {
                Some(node) => self.pd_attempt(node, &request, deadline, &search).await,
                None => {
                    // A full round without a leader: PD may be electing, or the leader is a
                    // node this client does not know yet.
                    search.new_round();
                    self.refresh_nodes(deadline).await;
                    Next::Retry {
                        error: Error::NoPdLeader {
                            reason: "every known node answered NotLeader or failed".into(),
                        },
                        node: None,
                        pause: true,
                    }
                }
            };
            let (error, node, pause) = match outcome {
                Next::Done(answer) => return Ok(answer),
                Next::Fatal(error) => return Err(error),
                Next::Retry { error, node, pause } => (error, node, pause),
            };
            debug!(attempts, %error, ?node, pause, "retrying PD call");
            let exhausted = |last| Error::Exhausted {
                attempts,
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                last: Box::new(last),
            };
            if attempts >= config.retry.attempts_max || Instant::now() >= deadline {
                return Err(exhausted(error));
            }
            if let Some(node) = node {
                search.ask_next(node);
            }
            if pause {
                let delay = backoff.next_delay(&self.inner.jitter);
                tokio::time::sleep_until((Instant::now() + delay).min(deadline)).await;
                if Instant::now() >= deadline {
                    return Err(exhausted(error));
                }
            }
        }
    }

    /// One PD attempt at `node`.
    async fn pd_attempt(
        &self,
        node: NodeId,
        request: &Request,
        deadline: Instant,
        search: &LeaderSearch<NodeId>,
    ) -> Next {
        let attempt_deadline = deadline.min(Instant::now() + self.inner.config.attempt_timeout);
        let forget = |client: &Self| {
            if client.cached_pd_leader() == Some(node) {
                client.set_pd_leader(None);
            }
        };
        let wire = match self.call(node, request, attempt_deadline).await {
            Ok(Response::Admin(AdminResult::Pd(answer))) => {
                self.set_pd_leader(Some(node));
                return Next::Done(answer);
            }
            Ok(Response::Error(wire)) => wire,
            Ok(_) => {
                return Next::Fatal(Error::UnexpectedResponse {
                    request: "placement-driver call",
                });
            }
            Err(Error::UnknownNode { node }) => {
                // A hint named a node that joined after the client learned the cluster.
                self.refresh_nodes(deadline).await;
                return Next::Retry {
                    error: Error::UnknownNode { node },
                    node: self.address_of(node).map(|_| node),
                    pause: false,
                };
            }
            Err(error) if error.is_retryable() => {
                // Unreachable or failing: try the next node at once.
                forget(self);
                return Next::Retry {
                    error,
                    node: None,
                    pause: false,
                };
            }
            Err(error) => return Next::Fatal(error),
        };
        match wire {
            WireError::NotLeader { leader_hint, .. } => {
                forget(self);
                let hint = leader_hint.filter(|h| h.is_some() && *h != node);
                // A hint to a node known down (a leader that died, which the others still
                // name until they elect a new one) is not followed: wait, then ask around.
                let hinted_down = hint.is_some_and(|h| self.is_down(h));
                let hint = hint.filter(|_| !hinted_down);
                if let Some(hint) = hint
                    && self.address_of(hint).is_none()
                {
                    self.refresh_nodes(deadline).await;
                }
                // A hint to a node already tried this round may be a stale belief (an
                // election in progress): follow it, but after a pause.
                let pause = hinted_down || hint.is_some_and(|h| search.was_asked(&h));
                Next::Retry {
                    error: Error::Server(WireError::NotLeader {
                        leader_hint,
                        descriptor: None,
                    }),
                    node: hint,
                    pause,
                }
            }
            wire if wire.is_retryable() => {
                // Busy, Unavailable, Timeout: the leader is there but cannot answer yet.
                Next::Retry {
                    error: Error::Server(wire),
                    node: Some(node),
                    pause: true,
                }
            }
            wire => Next::Fatal(Error::from_wire(wire)),
        }
    }
}
