//! Client requests: checks, proposals, ReadIndex batches, answers, admin calls.

use super::EventLoop;
use crate::core::replies::RequestId;
use crate::core::requests::KvRouted;
use crate::error::Result;
use crate::service::ClientCall;
use ringkv_storage::Store;
use ringkv_transport::Fault;
use ringkv_types::{
    AdminRequest, AdminResult, KvOp, NodeId, NodeStatus, ReplicaRole, ReplicaStatus, Request,
    Response, ShardId, SpaceAlarm, WireError,
};
use tracing::warn;

impl EventLoop {
    /// A client call from the service: an `Inspect` runs here, off the loop; every other
    /// request enters the core under a new id, and its caller waits in `callers`.
    pub(super) fn handle_call(&mut self, call: ClientCall) -> Result<()> {
        // Reads are judged against the lease: catch the Raft clock up with real time first.
        self.advance_clock()?;
        let ClientCall { request, reply } = call;
        if let Request::Admin(AdminRequest::Inspect(inspect)) = request {
            // Reads up to a bounded number of records from a consistent view of the store:
            // off the loop, like the other scans.
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                let response = match crate::inspect::inspect(&store, &inspect) {
                    Ok(result) => Response::Admin(AdminResult::Inspect(result)),
                    Err(error) => Response::Error(WireError::InvalidRequest {
                        reason: error.to_string(),
                    }),
                };
                let _ = reply.send(response);
            });
            return Ok(());
        }
        let id = self.callers.register(reply);
        self.handle_request(request, id)
    }

    /// A client request in the core: answered now, or once its entry applies or its read is
    /// confirmed (see [`crate::core::replies`]).
    pub(super) fn handle_request(&mut self, request: Request, slot: RequestId) -> Result<()> {
        let request = match request {
            Request::Admin(AdminRequest::ChangeReplica {
                shard,
                epoch,
                change,
            }) => {
                self.change_replica(shard, epoch, change, slot);
                return Ok(());
            }
            Request::Admin(AdminRequest::TransferLeader { shard, to }) => {
                self.transfer_leader(shard, to, slot);
                return Ok(());
            }
            Request::Admin(AdminRequest::SplitShard {
                shard,
                epoch,
                new_shard,
                at,
            }) => {
                self.split_shard(shard, epoch, new_shard, at, slot)?;
                return Ok(());
            }
            Request::Admin(AdminRequest::Pd { command }) => {
                self.pd_call(&command, slot)?;
                return Ok(());
            }
            Request::Admin(admin) => {
                let response = self.admin(admin);
                self.core.replies.send(slot, response);
                return Ok(());
            }
            Request::Kv(request) => request,
            Request::Watch(_) => {
                // Watches are streams: the client service registers them in the watch hub.
                self.core.replies.send(
                    slot,
                    Response::Error(WireError::InvalidRequest {
                        reason: "a watch is a stream, served by the client service".into(),
                    }),
                );
                return Ok(());
            }
            Request::WithToken { .. } => {
                // The client service unwraps tokens before a request gets here.
                self.core.replies.send(
                    slot,
                    Response::Error(WireError::InvalidRequest {
                        reason: "token requests are resolved by the client service".into(),
                    }),
                );
                return Ok(());
            }
        };
        let shard = request.shard;
        // The alarm of this node, else of any node holding a replica of the shard (as PD
        // recorded it): a follower whose disk is low must not be fed more data.
        let alarm = if adds_data(&request.op) {
            self.write_alarm(shard)
        } else {
            None
        };
        let now_ms = crate::pd_host::wall_clock_ms();
        match self
            .core
            .kv_request(request, slot, now_ms, &self.config.limits, alarm)?
        {
            KvRouted::Done => {}
            KvRouted::Proposed => {
                self.metrics.raft_proposals.inc();
            }
            KvRouted::StaleRead {
                op,
                applied,
                arc,
                now_ms,
            } => {
                let response = read_now(&self.store, &op, applied, arc, now_ms);
                self.core.replies.send(slot, response);
            }
        }
        Ok(())
    }

    /// The low-space alarm refusing a write to `shard`: this node's, else that of a node
    /// holding a replica of it, as PD recorded it.
    fn write_alarm(&self, shard: ShardId) -> Option<(NodeId, SpaceAlarm)> {
        space_alarm(&self.store)
            .map(|alarm| (self.config.node_id, alarm))
            .or_else(|| {
                let descriptor = &self.core.groups.get(&shard)?.descriptor;
                self.pd_view()?.space_alarm_of(descriptor)
            })
    }

    pub(super) fn admin(&self, request: AdminRequest) -> Response {
        let result = match request {
            AdminRequest::SetFaults { cut } => return self.set_faults(cut),
            AdminRequest::GetShardMap => {
                if self.map.shards.is_empty() {
                    // A joined node before its first contact with PD.
                    return Response::Error(WireError::Unavailable);
                }
                AdminResult::ShardMap(self.map.clone())
            }
            AdminRequest::GetShard { shard } => AdminResult::Shard(
                self.core
                    .groups
                    .get(&shard)
                    .filter(|group| group.initialized)
                    .map(|group| group.descriptor.clone())
                    .or_else(|| self.map.shards.iter().find(|d| d.id == shard).cloned()),
            ),
            AdminRequest::NodeStatus => AdminResult::NodeStatus(self.status()),
            AdminRequest::GetNodes => AdminResult::Nodes(self.known_nodes()),
            AdminRequest::ChangeReplica { shard, .. }
            | AdminRequest::TransferLeader { shard, .. }
            | AdminRequest::SplitShard { shard, .. } => {
                // Handled in `handle_call` (they wait for the log); unreachable here.
                return Response::Error(WireError::ShardNotFound { shard });
            }
            AdminRequest::PdState => return self.pd_state_call(),
            AdminRequest::PdPlan { balancing } => return self.pd_plan_call(balancing),
            AdminRequest::Inspect(_) => {
                // Handled in `handle_call` (it reads the store off the loop); unreachable here.
                return Response::Error(WireError::Unavailable);
            }
            AdminRequest::Pd { .. } => {
                // Handled in `handle_call` (it waits for the log); unreachable here.
                return Response::Error(WireError::Unavailable);
            }
            AdminRequest::StartState => {
                // The client service answers it; it never reaches the loop.
                return Response::Error(WireError::Unavailable);
            }
            AdminRequest::Login { .. } => {
                // The client service answers logins; they never reach the loop.
                return Response::Error(WireError::InvalidRequest {
                    reason: "logins are answered by the client service".into(),
                });
            }
        };
        Response::Admin(result)
    }

    /// Replaces the transport's fault table with cuts from this node to `cut` (tests only).
    fn set_faults(&self, mut cut: Vec<NodeId>) -> Response {
        if !self.config.debug.fault_injection {
            return Response::Error(WireError::InvalidRequest {
                reason: "fault injection is disabled on this node ([debug] fault_injection)".into(),
            });
        }
        cut.sort_unstable();
        cut.dedup();
        let me = self.config.node_id;
        let faults = self.transport.faults();
        faults.heal_all();
        for &peer in &cut {
            faults.set(me, peer, Fault::Cut);
        }
        warn!(?cut, "fault injection: Raft traffic to these peers is cut");
        Response::Admin(AdminResult::Faults { cut })
    }

    pub(super) fn status(&self) -> NodeStatus {
        let me = self.config.node_id;
        let replicas = self
            .core
            .groups
            .values()
            .filter(|group| group.initialized)
            .map(|group| {
                let status = group.raw.status();
                ReplicaStatus {
                    shard: group.shard,
                    role: group
                        .descriptor
                        .replica_of_member(group.member)
                        .map_or(ReplicaRole::Voter, |replica| replica.role),
                    is_leader: group.raw.is_leader(),
                    leader: status
                        .leader
                        .is_some()
                        .then_some(ringkv_types::member_node(status.leader)),
                    term: status.term,
                    commit: status.committed,
                    applied: group.applied,
                }
            })
            .collect();
        NodeStatus {
            node: me,
            cluster: self.config.cluster.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            replicas,
            space_alarm: space_alarm(&self.store),
        }
    }
}

pub(super) use crate::kv_read::read_now;

/// The low-space alarm, when it is up (the store measures at most every 100 ms). A failed
/// measurement counts as no alarm: the write then fails, if it must, in the store.
pub(super) fn space_alarm(store: &Store) -> Option<SpaceAlarm> {
    match store.space(false) {
        Ok(space) if space.alarm => Some(SpaceAlarm {
            free_bytes: space.free_bytes,
            reserve_bytes: space.reserve_bytes,
        }),
        Ok(_) => None,
        Err(error) => {
            warn!(%error, "cannot measure the data dir's free space");
            None
        }
    }
}

/// Whether a write adds data (refused under the low-space alarm). Deletes, and a
/// compare-and-swap that deletes, free space and go through.
pub(super) fn adds_data(op: &KvOp) -> bool {
    match op {
        KvOp::Put { .. } | KvOp::PutWithTtl { .. } => true,
        KvOp::CompareAndSwap { new, .. } | KvOp::CompareVersionAndSwap { new, .. } => new.is_some(),
        KvOp::Batch { ops } => ops
            .iter()
            .any(|op| matches!(op, ringkv_types::BatchOp::Put { .. })),
        _ => false,
    }
}

pub(super) use crate::core::answers::not_leader;
