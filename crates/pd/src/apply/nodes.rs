//! Bootstrap, node registration, heartbeats, node states, id allocation.

use super::*;

impl Machine<'_> {
    pub(super) fn bootstrap(
        &mut self,
        cluster_id: u64,
        cluster_name: &str,
        nodes: &[(NodeId, NodeRegistration)],
        shard_map: &ShardMap,
        settings: &Settings,
        now_ms: u64,
    ) -> Result<Response> {
        if self.0.cluster.is_some() {
            return Err(Error::AlreadyBootstrapped);
        }
        check_len("cluster name", cluster_name.len(), MAX_CLUSTER_NAME_BYTES)?;
        check_len("bootstrap nodes", nodes.len(), MAX_BOOTSTRAP_NODES)?;
        check_len(
            "bootstrap shards",
            shard_map.shards.len(),
            MAX_BOOTSTRAP_SHARDS,
        )?;
        settings.validate()?;
        let mut node_ids = BTreeSet::new();
        for (id, registration) in nodes {
            validate_registration(registration)?;
            if !id.is_some() || !node_ids.insert(*id) || id.get() >= u64::from(u32::MAX) {
                return Err(Error::UnknownNode { node: *id });
            }
        }
        if !shard_map.covers_ring() {
            return Err(invalid(InvalidReason::DoesNotCoverRing));
        }
        let mut shard_ids = BTreeSet::new();
        for descriptor in &shard_map.shards {
            if descriptor.id == ShardId::PD || !shard_ids.insert(descriptor.id) {
                return Err(invalid(InvalidReason::DuplicateOrReservedShardId));
            }
            validate_replicas(descriptor, |node| node_ids.contains(&node))?;
        }
        let now_ms = self.0.now_ms.max(now_ms);
        self.0.now_ms = now_ms;
        self.0.cluster = Some(ClusterInfo {
            id: cluster_id,
            name: cluster_name.to_string(),
        });
        for (id, registration) in nodes {
            self.0
                .nodes
                .insert(*id, new_node(*id, registration, now_ms));
        }
        let max_node = self.0.nodes.keys().next_back().map_or(0, |n| n.get());
        self.0.ids.next_node = self.0.ids.next_node.max(max_node + 1);
        let max_shard = shard_ids.iter().next_back().map_or(0, |s| s.get());
        self.0.ids.next_shard = self.0.ids.next_shard.max(max_shard + 1);
        self.0.shard_map = ShardMap {
            version: shard_map.version.max(1),
            shards: shard_map.shards.clone(),
        };
        self.0.settings = settings.clone();
        Ok(Response::Done)
    }

    pub(super) fn register_node(
        &mut self,
        registration: &NodeRegistration,
        now_ms: u64,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        validate_registration(registration)?;
        // Ids stay below 2^32 so that `(node << 32) | incarnation` is a valid Raft member id.
        if self.0.ids.next_node >= u64::from(u32::MAX) {
            return Err(Error::IdsExhausted { count: 1 });
        }
        self.advance_time(now_ms);
        let existing = self
            .0
            .nodes
            .values()
            .find(|n| n.addr == registration.addr && n.state != NodeState::Removed)
            .map(|n| n.id);
        if let Some(id) = existing {
            if let Some(node) = self.0.nodes.get_mut(&id) {
                node.labels = registration.labels.clone();
                node.capacity_bytes = registration.capacity_bytes;
            }
            return Ok(Response::NodeId(id));
        }
        let id = NodeId(self.0.ids.next_node);
        self.0.ids.next_node += 1;
        self.0
            .nodes
            .insert(id, new_node(id, registration, self.0.now_ms));
        Ok(Response::NodeId(id))
    }

    pub(super) fn register_node_as(
        &mut self,
        id: NodeId,
        registration: &NodeRegistration,
        now_ms: u64,
    ) -> Result<Response> {
        self.require_bootstrapped()?;
        validate_registration(registration)?;
        let conflict = |reason: &'static str| Error::RegistrationConflict {
            id,
            addr: registration.addr.clone(),
            reason: reason.into(),
        };
        // Ids stay below 2^32 so that `(node << 32) | incarnation` is a valid Raft member id.
        if id.get() == 0 || id.get() >= u64::from(u32::MAX) {
            return Err(conflict("node ids are 1 to 2^32 - 2"));
        }
        if let Some(node) = self.0.nodes.get(&id) {
            if node.state == NodeState::Removed {
                return Err(Error::NodeRemoved { node: id });
            }
            if node.addr != registration.addr {
                return Err(conflict("the id is registered at another address"));
            }
        } else if self
            .0
            .nodes
            .values()
            .any(|n| n.addr == registration.addr && n.state != NodeState::Removed)
        {
            return Err(conflict("the address belongs to another live node"));
        }
        self.advance_time(now_ms);
        match self.0.nodes.get_mut(&id) {
            Some(node) => {
                node.labels = registration.labels.clone();
                node.capacity_bytes = registration.capacity_bytes;
            }
            None => {
                self.0
                    .nodes
                    .insert(id, new_node(id, registration, self.0.now_ms));
                self.0.ids.next_node = self.0.ids.next_node.max(id.get() + 1);
            }
        }
        Ok(Response::NodeId(id))
    }

    pub(super) fn heartbeat(
        &mut self,
        id: NodeId,
        stats: &NodeStats,
        now_ms: u64,
    ) -> Result<Response> {
        let (state, max_snapshot_bytes_per_sec) = self.beat(id, stats, now_ms)?;
        Ok(Response::Heartbeat {
            state,
            max_snapshot_bytes_per_sec,
        })
    }

    /// Records a heartbeat; returns the node's state and its snapshot bandwidth limit.
    fn beat(&mut self, id: NodeId, stats: &NodeStats, now_ms: u64) -> Result<(NodeState, u64)> {
        let node = self
            .0
            .nodes
            .get(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        if node.state == NodeState::Removed {
            return Err(Error::NodeRemoved { node: id });
        }
        self.advance_time(now_ms);
        let now_ms = self.0.now_ms;
        let limit = self.0.settings.max_snapshot_bytes_per_sec;
        let node = self
            .0
            .nodes
            .get_mut(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        node.last_heartbeat_ms = now_ms;
        node.down_since_ms = None;
        node.stats = *stats;
        if stats.capacity_bytes > 0 {
            node.capacity_bytes = stats.capacity_bytes;
        }
        if node.state == NodeState::Down {
            node.state = NodeState::Up;
        }
        Ok((node.state, limit))
    }

    /// A [`StoreHeartbeat`] that reached the log (the PD leader answers them from memory, see
    /// `crate::leader_stats`): the node's heartbeat, and every listed shard's report asked for
    /// through the log.
    pub(super) fn store_heartbeat(&mut self, heartbeat: &StoreHeartbeat) -> Result<Response> {
        self.require_bootstrapped()?;
        check_len(
            "heartbeat shard reports",
            heartbeat.shards.len(),
            MAX_HEARTBEAT_SHARDS,
        )?;
        let (state, max_snapshot_bytes_per_sec) =
            self.beat(heartbeat.node, &heartbeat.stats, heartbeat.now_ms)?;
        let report_through_log = heartbeat
            .shards
            .iter()
            .filter(|report| report.leader == heartbeat.node)
            .map(|report| report.descriptor.id)
            .collect();
        Ok(Response::StoreHeartbeat {
            state,
            max_snapshot_bytes_per_sec,
            report_through_log,
        })
    }

    pub(super) fn set_node_state(
        &mut self,
        id: NodeId,
        to: NodeState,
        now_ms: u64,
    ) -> Result<Response> {
        let node = self
            .0
            .nodes
            .get(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        let from = node.state;
        let allowed = match (from, to) {
            (NodeState::Removed, _) | (_, NodeState::Down) => false,
            (_, NodeState::Removed | NodeState::Draining) => true,
            (_, NodeState::Up) => true,
        };
        if !allowed {
            return Err(Error::InvalidNodeTransition { node: id, from, to });
        }
        if to == NodeState::Removed {
            // A removed node never serves again: only an empty node may go, whatever its
            // state (an `Up` node that holds nothing is as safe to remove as a drained one).
            let replicas = self.0.replica_counts().get(&id).copied().unwrap_or(0);
            let operators =
                self.0
                    .operators
                    .values()
                    .filter(|operator| {
                        operator.remaining().iter().any(
                            |step| matches!(step, Step::AddLearner { node, .. } if *node == id),
                        )
                    })
                    .count() as u64;
            if replicas > 0 || operators > 0 {
                return Err(Error::NodeHoldsReplicas {
                    node: id,
                    replicas,
                    operators,
                });
            }
        }
        self.advance_time(now_ms);
        let node = self
            .0
            .nodes
            .get_mut(&id)
            .ok_or(Error::UnknownNode { node: id })?;
        node.state = match to {
            // Cancelling a drain on a silent node leaves it Down.
            NodeState::Up if node.down_since_ms.is_some() => NodeState::Down,
            other => other,
        };
        Ok(Response::Done)
    }

    pub(super) fn alloc_ids(&mut self, kind: IdKind, count: u64) -> Result<Response> {
        if count == 0 || count > MAX_IDS_PER_ALLOC {
            return Err(Error::IdsExhausted { count });
        }
        let first = match kind {
            IdKind::Node => {
                let first = self.0.ids.next_node;
                let next = first
                    .checked_add(count)
                    .filter(|&n| n <= u64::from(u32::MAX))
                    .ok_or(Error::IdsExhausted { count })?;
                self.0.ids.next_node = next;
                first
            }
            IdKind::Shard => {
                let first = self.0.ids.next_shard;
                self.0.ids.next_shard = first
                    .checked_add(count)
                    .ok_or(Error::IdsExhausted { count })?;
                first
            }
            IdKind::Incarnation => {
                let first = self.0.ids.next_incarnation;
                let count32 = u32::try_from(count).map_err(|_| Error::IdsExhausted { count })?;
                self.0.ids.next_incarnation = first
                    .checked_add(count32)
                    .ok_or(Error::IdsExhausted { count })?;
                u64::from(first)
            }
        };
        Ok(Response::Ids { first, count })
    }
}
