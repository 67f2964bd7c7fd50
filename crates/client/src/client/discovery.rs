//! What the client learns from the cluster: node addresses (`GetNodes`) and the shard map.

use super::*;

impl Client {
    /// The known address of `node`.
    pub(super) fn address_of(&self, node: NodeId) -> Option<String> {
        self.inner
            .addresses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    /// Every node to ask for cluster-wide information: the seed endpoints first (in the
    /// configured order, starting at a rotating offset), then the nodes learned later.
    pub(super) fn nodes_to_ask(&self) -> Vec<NodeId> {
        let seeds = &self.inner.seeds;
        let start = self.inner.next_seed.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<NodeId> = (0..seeds.len())
            .filter_map(|offset| seeds.get((start + offset) % seeds.len()))
            .map(|endpoint| endpoint.node)
            .collect();
        for endpoint in self.nodes() {
            if !order.contains(&endpoint.node) {
                order.push(endpoint.node);
            }
        }
        // Nodes believed down are asked last (stable: the order is kept otherwise).
        let now = Instant::now();
        order.sort_by_key(|node| self.inner.health.is_down(*node, now));
        order
    }

    /// Learns the node list from the first node that answers `GetNodes` before `deadline`
    /// (best effort).
    pub(super) async fn refresh_nodes(&self, deadline: Instant) {
        for node in self.nodes_to_ask() {
            if Instant::now() >= deadline || self.learn_nodes(node, deadline).await {
                return;
            }
        }
    }

    /// Asks `node` for every node's address and adds the ones not known yet (best effort: a
    /// failure leaves routing to the known nodes). Returns whether `node` answered.
    pub(super) async fn learn_nodes(&self, node: NodeId, deadline: Instant) -> bool {
        let deadline = deadline.min(Instant::now() + self.inner.config.attempt_timeout);
        let request = Request::Admin(AdminRequest::GetNodes);
        match self.call(node, &request, deadline).await {
            Ok(Response::Admin(AdminResult::Nodes(nodes))) => {
                let mut addresses = self
                    .inner
                    .addresses
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Bounded by what one answer carries; configured endpoints are kept as given.
                for NodeAddress { node, addr } in nodes.into_iter().take(NODES_LEARNED_MAX) {
                    if node.is_some() {
                        addresses.entry(node).or_insert(addr);
                    }
                }
                true
            }
            Ok(other) => {
                debug!(?other, "GetNodes not answered");
                false
            }
            Err(error) => {
                debug!(%error, "GetNodes failed");
                false
            }
        }
    }

    /// Loads the shard map from the known nodes (seed endpoints first), one after the other,
    /// unless another call reloaded it since `seen_generation`. When the new map names nodes
    /// the client has no address for (nodes that joined), the node list is learned too. With a
    /// `deadline`, no node is asked after it (a call's reload stays within the call's budget).
    pub(super) async fn reload_map(
        &self,
        seen_generation: u64,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let _guard = self.inner.reload.lock().await;
        if self.inner.map_generation.load(Ordering::Acquire) != seen_generation {
            return Ok(());
        }
        let mut last = String::from("no endpoint tried");
        for node in self.nodes_to_ask() {
            let attempt_deadline = Instant::now() + self.inner.config.attempt_timeout;
            let deadline = match deadline {
                Some(overall) if Instant::now() >= overall => break,
                Some(overall) => overall.min(attempt_deadline),
                None => attempt_deadline,
            };
            let request = Request::Admin(AdminRequest::GetShardMap);
            match self.call(node, &request, deadline).await {
                Ok(Response::Admin(AdminResult::ShardMap(map))) if map.covers_ring() => {
                    let version = map.version;
                    let unknown = {
                        let addresses = self
                            .inner
                            .addresses
                            .read()
                            .unwrap_or_else(PoisonError::into_inner);
                        map.shards
                            .iter()
                            .flat_map(|d| d.replicas.iter())
                            .any(|r| !addresses.contains_key(&r.node))
                    };
                    if unknown {
                        self.learn_nodes(node, deadline).await;
                    }
                    if self.write_routing().replace_map(map) {
                        self.inner.map_generation.fetch_add(1, Ordering::AcqRel);
                        debug!(version, node = %node, "shard map loaded");
                        return Ok(());
                    }
                    last = format!("{} sent an older map (version {version})", node);
                }
                Ok(Response::Admin(AdminResult::ShardMap(_))) => {
                    last = format!("{} sent a map that does not cover the ring", node);
                }
                Ok(Response::Error(
                    wire @ (WireError::Unauthenticated { .. } | WireError::PermissionDenied { .. }),
                )) => return Err(Error::from_wire(wire)),
                Ok(Response::Error(wire)) => last = format!("{}: {wire}", node),
                Ok(_) => last = format!("{}: unexpected response", node),
                Err(error) => last = error.to_string(),
            }
        }
        if self.read_routing().map().covers_ring() {
            // Keep routing with the cached map; nobody had a newer one.
            return Ok(());
        }
        Err(Error::NoShardMap { reason: last })
    }
}
