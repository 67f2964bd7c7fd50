//! Connections: one per node, dialled on demand with a liveness probe raced against the
//! handshake; calls with the client's token; seeds given as `host:port`; background re-probes
//! of nodes marked down.

use super::*;

impl Client {
    /// Sends one request to `node` and waits for the answer until `deadline`.
    pub(super) async fn call(
        &self,
        node: NodeId,
        request: &Request,
        deadline: Instant,
    ) -> Result<Response> {
        let wrapped;
        let request = match self.token(deadline).await? {
            Some(token) => {
                wrapped = Request::WithToken {
                    token,
                    request: Box::new(request.clone()),
                };
                &wrapped
            }
            None => request,
        };
        self.call_plain(node, request, deadline).await
    }

    /// [`Client::call`] without adding the client's token.
    pub(super) async fn call_plain(
        &self,
        node: NodeId,
        request: &Request,
        deadline: Instant,
    ) -> Result<Response> {
        let connection = self.connection(node, deadline).await?;
        let timeout = deadline.saturating_duration_since(Instant::now());
        let addr = self.address_of(node);
        // While the call waits, the node is probed: a node that died or froze fails the call
        // after about `suspect_after + probe_timeout`, not after the whole attempt timeout.
        let outcome = tokio::select! {
            biased;
            outcome = connection.call(request, timeout) => Ok(outcome),
            evidence = self.watch_node(addr) => Err(evidence),
        };
        let forget = |client: &Self| {
            client
                .inner
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&node);
        };
        match outcome {
            Ok(Ok(response)) => {
                self.inner.health.mark_up(node);
                Ok(response)
            }
            Ok(Err(source)) => {
                // A lost connection is redialed next time. A lost connection or a failed
                // stream is evidence against the node (the re-probe clears it at once if the
                // node answers, e.g. after a restart); a timeout is not, as the probes during
                // the call found the node alive.
                forget(self);
                if !matches!(source, ringkv_transport::Error::Timeout { .. }) {
                    self.mark_down(node);
                }
                Err(Error::Transport { node, source })
            }
            Err(evidence) => {
                forget(self);
                connection.close();
                self.mark_down(node);
                Err(Error::NodeDown {
                    node,
                    evidence: probe_evidence(evidence),
                })
            }
        }
    }

    /// Probes `addr` after `suspect_after` and then every `suspect_after`; resolves only with
    /// the first probe that finds the node refused or silent. Never resolves without an
    /// address, or while the probes cannot run (a name that does not resolve is no evidence).
    pub(super) async fn watch_node(&self, addr: Option<String>) -> Probe {
        let Some(addr) = addr else {
            return std::future::pending().await;
        };
        let policy = self.inner.config.failover;
        loop {
            tokio::time::sleep(policy.suspect_after).await;
            match ringkv_transport::probe(&addr, policy.probe_timeout).await {
                Ok(outcome) if !outcome.is_alive() => return outcome,
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// The pooled connection to `node`, dialing it if needed (one dial per node at a time).
    pub(super) async fn connection(
        &self,
        node: NodeId,
        deadline: Instant,
    ) -> Result<ClientConnection> {
        // A connection the node closed (idle clients are closed after
        // `limits.client_idle_timeout_ms`) is dropped and redialed, not used and failed.
        let cached = |inner: &Inner| {
            let mut connections = inner
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match connections.get(&node) {
                Some(connection) if connection.is_closed() => {
                    connections.remove(&node);
                    None
                }
                other => other.cloned(),
            }
        };
        if let Some(connection) = cached(&self.inner) {
            return Ok(connection);
        }
        let addr = self
            .inner
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned();
        let Some(addr) = addr else {
            return Err(Error::UnknownNode { node });
        };
        let dialing = self
            .inner
            .dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(node)
            .or_default()
            .clone();
        let timeout_error = |after: Duration| Error::Transport {
            node,
            source: ringkv_transport::Error::Timeout {
                after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            },
        };
        let dial_deadline = deadline.min(Instant::now() + self.inner.config.connect_timeout);
        let _guard = tokio::time::timeout_at(dial_deadline, dialing.lock())
            .await
            .map_err(|_| timeout_error(self.inner.config.connect_timeout))?;
        if let Some(connection) = cached(&self.inner) {
            return Ok(connection);
        }
        // The dial races a probe: quinn ignores ICMP, so a dial to a dead node would wait for
        // the whole connect timeout, while the probe is refused or unanswered much sooner.
        let dial = tokio::time::timeout_at(dial_deadline, self.inner.endpoint.connect(node, &addr));
        let probe_timeout = self.inner.config.failover.probe_timeout;
        let check = unless_alive(ringkv_transport::probe(&addr, probe_timeout));
        let dialed = tokio::select! {
            biased;
            dialed = dial => dialed,
            evidence = check => {
                self.mark_down(node);
                return Err(Error::NodeDown { node, evidence: probe_evidence(evidence) });
            }
        };
        let connection = match dialed {
            Ok(Ok(connection)) => connection,
            Ok(Err(source)) => {
                self.mark_down(node);
                return Err(Error::Transport { node, source });
            }
            Err(_) => {
                self.mark_down(node);
                return Err(timeout_error(self.inner.config.connect_timeout));
            }
        };
        self.inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, connection.clone());
        Ok(connection)
    }
}

/// Resolves a `host:port` seed and connects to the first of its addresses that answers as a
/// node of the cluster; returns the node (id from its certificate, the address as written) and the
/// connection. Bounded by `timeout` per address and for the lookup.
pub(super) async fn dial_seed_address(
    endpoint: &ClientEndpoint,
    address: &str,
    timeout: Duration,
    probe_timeout: Duration,
) -> std::result::Result<(Endpoint, ClientConnection), String> {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| format!("name lookup timed out after {timeout:?}"))?
        .map_err(|error| format!("cannot resolve: {error}"))?;
    let mut last = String::from("the name resolves to no address");
    for addr in resolved.take(8) {
        // Raced with a probe, like every dial: a dead seed costs one probe, not `timeout`.
        let dial = tokio::time::timeout(timeout, endpoint.connect_any_node(addr));
        let check = unless_alive(ringkv_transport::probe::probe_addr(
            addr,
            Instant::now() + probe_timeout,
        ));
        let dialed = tokio::select! {
            biased;
            dialed = dial => dialed,
            evidence = check => {
                last = format!("{addr}: {}", probe_evidence(evidence));
                continue;
            }
        };
        match dialed {
            // Keep the address as written (a name is resolved again at every redial).
            Ok(Ok((node, connection))) => {
                let addr = address.trim().to_string();
                return Ok((Endpoint { node, addr }, connection));
            }
            Ok(Err(error)) => last = error.to_string(),
            Err(_) => last = format!("{addr}: no answer within {timeout:?}"),
        }
    }
    Err(last)
}

/// What a failed probe found, in words for errors.
/// The probe's evidence when it finds the node refused or silent; never resolves when the node
/// answers (or the probe cannot run), so it only wins a race against a dial on evidence.
pub(super) async fn unless_alive(
    probe: impl std::future::Future<Output = ringkv_transport::Result<Probe>>,
) -> Probe {
    match probe.await {
        Ok(outcome) if !outcome.is_alive() => outcome,
        Ok(_) | Err(_) => std::future::pending().await,
    }
}

pub(super) fn probe_evidence(probe: Probe) -> &'static str {
    match probe {
        Probe::Alive { .. } => "answered",
        Probe::Refused => "refused (nothing listens on its port)",
        Probe::Silent => "silent (no answer to a liveness probe)",
    }
}

/// Re-probes `node` every `reprobe_interval` while it is marked down: an answer clears the
/// mark (routing uses the node again), silence or a refusal renews it. Ends when the mark is
/// gone (cleared by a successful call, or expired) or the client was dropped.
pub(super) async fn reprobe(inner: Weak<Inner>, node: NodeId) {
    let mut first = true;
    loop {
        let (policy, addr) = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let policy = inner.config.failover;
            let addr = inner
                .addresses
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&node)
                .cloned();
            if !inner.health.keep_reprobing(node, Instant::now()) || addr.is_none() {
                inner.health.reprobe_ended(node, Instant::now());
                return;
            }
            (policy, addr.unwrap_or_default())
        };
        // The first probe goes at once: the mark may come from a lost connection to a node
        // that merely restarted, which should not be avoided for long.
        if !first {
            tokio::time::sleep(policy.reprobe_interval).await;
        }
        first = false;
        let outcome = ringkv_transport::probe(&addr, policy.probe_timeout).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match outcome {
            Ok(outcome) if outcome.is_alive() => {
                debug!(%node, "node answers again");
                inner.health.mark_up(node);
            }
            Ok(_) => {
                inner.health.mark_down(node, Instant::now());
            }
            // No evidence either way (a name that does not resolve now): keep the mark as is.
            Err(_) => {}
        }
    }
}
