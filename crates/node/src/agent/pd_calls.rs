//! Calls to the PD leader: found by asking (the cached leader, this node if it hosts PD, the
//! initial nodes, the nodes PD listed, the `join` addresses), following `NotLeader` hints, at
//! most [`ATTEMPTS_MAX`] calls per command; connections kept per address.

use super::*;
use ringkv_types::pd::LeaderSearch;

impl Running {
    /// Sends a PD command to the PD leader; `None` when no PD answered.
    pub(super) async fn call_pd(
        &mut self,
        command: &Command,
    ) -> Option<std::result::Result<PdResponse, ringkv_pd::Error>> {
        let bytes = postcard::to_stdvec(command).ok()?;
        let request = Request::Admin(AdminRequest::Pd {
            command: bytes.into(),
        });
        match self.call_leader(&request).await? {
            (Response::Admin(AdminResult::Pd(bytes)), _) => postcard::from_bytes(&bytes).ok(),
            (other, _) => {
                debug!(?other, "unexpected answer to a PD command");
                None
            }
        }
    }

    /// Sends `request` to the PD leader, looking for it; returns the answer and who gave it.
    pub(super) async fn call_leader(
        &mut self,
        request: &Request,
    ) -> Option<(Response, Option<NodeId>)> {
        let mut search =
            LeaderSearch::new(self.pd_leader.and_then(|leader| self.target_of(leader)));
        for _ in 0..ATTEMPTS_MAX {
            let target = search.next_target(self.candidates())?;
            let Some(response) = self.send(target.clone(), request).await else {
                if self.pd_leader.is_some() && self.pd_leader == self.node_of(target.clone()) {
                    self.pd_leader = None;
                }
                continue;
            };
            match response {
                Response::Error(WireError::NotLeader { leader_hint, .. }) => {
                    if let Some(target) = leader_hint.and_then(|hint| self.target_of(hint)) {
                        search.follow_hint(target);
                    }
                }
                Response::Error(WireError::Busy | WireError::Unavailable | WireError::Timeout) => {}
                response => {
                    let leader = self.node_of(target);
                    if leader.is_some() {
                        self.pd_leader = leader;
                    }
                    return Some((response, leader));
                }
            }
        }
        None
    }

    fn node_of(&self, target: Target) -> Option<NodeId> {
        match target {
            Target::Local => Some(self.config.node_id),
            Target::Node(node, _) => Some(node),
            Target::Addr(addr) => self
                .addrs
                .iter()
                .find(|(_, known)| **known == addr)
                .map(|(node, _)| *node),
        }
    }

    fn target_of(&self, node: NodeId) -> Option<Target> {
        if node == self.config.node_id {
            return Some(Target::Local);
        }
        self.addrs
            .get(&node)
            .map(|addr| Target::Node(node, addr.clone()))
    }

    /// Where to look for the PD leader, in order: this node if it hosts PD, the initial nodes,
    /// every node PD listed, the `join` addresses.
    fn candidates(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if self.config.hosts_pd() {
            targets.push(Target::Local);
        }
        for endpoint in &self.config.initial_cluster {
            if endpoint.node != self.config.node_id {
                targets.push(Target::Node(endpoint.node, endpoint.addr.clone()));
            }
        }
        for (node, addr) in &self.addrs {
            let target = Target::Node(*node, addr.clone());
            if *node != self.config.node_id && !targets.contains(&target) {
                targets.push(target);
            }
        }
        for addr in &self.config.join {
            if !self.addrs.values().any(|known| known == addr) {
                targets.push(Target::Addr(addr.clone()));
            }
        }
        targets
    }

    async fn send(&mut self, target: Target, request: &Request) -> Option<Response> {
        let timeout = self.timeout();
        let addr = match target {
            Target::Local => {
                let (slot, answer) = oneshot::channel();
                let call = ClientCall {
                    request: request.clone(),
                    reply: slot,
                };
                self.calls.try_send(call).ok()?;
                return tokio::time::timeout(timeout, answer).await.ok()?.ok();
            }
            Target::Node(_, ref addr) | Target::Addr(ref addr) => addr.clone(),
        };
        let connection = match self.connections.get(&addr) {
            Some(connection) => connection.clone(),
            None => {
                let connecting = async {
                    match &target {
                        Target::Node(node, addr) => {
                            self.transport.connect_client(*node, addr).await
                        }
                        _ => self.transport.connect_client_addr(&addr).await,
                    }
                };
                let connection = match tokio::time::timeout(timeout, connecting).await {
                    Ok(Ok(connection)) => connection,
                    Ok(Err(error)) => {
                        debug!(%addr, %error, "cannot reach a node");
                        return None;
                    }
                    Err(_) => return None,
                };
                self.connections.insert(addr.clone(), connection.clone());
                connection
            }
        };
        match connection.call(request, timeout).await {
            Ok(response) => Some(response),
            Err(error) => {
                debug!(%addr, %error, "call failed");
                self.connections.remove(&addr);
                None
            }
        }
    }
}

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// This node's own loop.
    Local,
    /// A node whose id and address are known.
    Node(NodeId, String),
    /// A `join` address (id unknown: dialled by its host name or IP).
    Addr(String),
}
