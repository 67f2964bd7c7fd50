//! Key-value calls and the retry loop they share: each call borrows a session (writes),
//! routes to the shard's believed leader and follows the answers (`NotLeader`,
//! `EpochMismatch`, unreachable nodes) within the call's time budget.

use super::*;
use ringkv_types::ring;

impl Client {
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
        match self.execute(ring::position(&key), op, None).await? {
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
        match self.execute(ring::position(&key), op, None).await? {
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

    pub(super) async fn write(
        &self,
        key: &[u8],
        op: KvOp,
        request: &'static str,
    ) -> Result<KvResult> {
        // The lease is held until the call ends, retries included: one write per session.
        let mut lease = self.inner.sessions.lease();
        let session = lease.next_write();
        match self.execute(ring::position(key), op, session).await? {
            KvResult::Value { .. }
            | KvResult::Exists { .. }
            | KvResult::Values { .. }
            | KvResult::ScanPage { .. } => Err(Error::UnexpectedResponse { request }),
            result => Ok(result),
        }
    }

    /// Runs one key-value operation through the retry loop, routed to the shard owning ring
    /// `position` (a key's, or a scan cursor's). The same `session` (and so the same sequence
    /// number) is sent on every attempt.
    pub(super) async fn execute(
        &self,
        position: u64,
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
                .attempt(position, &op, session, deadline, &mut failed_nodes)
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

    pub(super) async fn attempt(
        &self,
        position: u64,
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
            } | KvOp::GetMany {
                consistency: ReadConsistency::Stale,
                ..
            } | KvOp::Scan {
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
            self.read_routing()
                .route_any_replica_position(position, choice, &avoid)
        } else {
            self.read_routing().route_position(position, &avoid)
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
        if let KvOp::GetMany { keys, .. } = op {
            // Every key must be in the routed shard: after a split the caller regroups.
            let routing = self.read_routing();
            if let Some(other) = keys
                .iter()
                .filter_map(|key| routing.descriptor_for_key(key))
                .find(|descriptor| descriptor.id != route.shard)
            {
                return Err(Failure::Fatal(Error::CrossShardBatch {
                    first: route.shard,
                    other: other.id,
                }));
            }
        }
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
}
