//! The driver's side of quiescence: node-level heartbeats out, liveness reports in (see
//! `core/liveness.rs` for the rule, docs/node.md "Quiescence and node liveness").

use super::EventLoop;
use ringkv_types::raft::{Message, MessageBody};
use ringkv_types::{RaftBatch, ShardId, Term, member_id, member_node};
use tracing::{info, warn};

/// The watched peers are recomputed from the local descriptors every this many ticks (a
/// loop over every local group: not done every tick).
pub(super) const PEERS_REFRESH_TICKS: u64 = 10;

impl EventLoop {
    /// At a tick: refreshes the watched peers now and then, and queues one `NodeAlive` per
    /// watched peer (it rides in the turn's one batch to that peer). Does nothing with
    /// quiescence off.
    pub(super) fn liveness_tick(&mut self) {
        if !self.config.raft.quiesce {
            return;
        }
        if self.ticks_seen % PEERS_REFRESH_TICKS == 1 {
            let peers = self.core.peer_nodes();
            self.liveness.set_peers(peers, self.mono_now());
        }
        let me = member_id(self.config.node_id, 0);
        let peers: Vec<_> = self.liveness.peers().collect();
        for peer in peers {
            self.core.outbox.push(
                peer,
                Message {
                    group: ShardId::PD,
                    from: me,
                    to: member_id(peer, 0),
                    term: Term::ZERO,
                    body: MessageBody::NodeAlive,
                },
            );
        }
        self.liveness_check_due = true;
    }

    /// A batch from a peer arrived: that peer is alive.
    pub(super) fn liveness_heard(&mut self, batch: &RaftBatch) {
        let Some(first) = batch.messages.first() else {
            return;
        };
        // The transport checked that every message of a batch comes from one node.
        let node = member_node(first.from);
        if self.liveness.heard(node, self.mono_now()) {
            info!(%node, "peer node heard from again");
        }
    }

    /// After a tick's inputs are in (so that batches waiting in the queue after a stall of this
    /// loop count): reports the peers silent for an election timeout to the local groups.
    pub(super) fn check_liveness(&mut self) {
        if !std::mem::take(&mut self.liveness_check_due) {
            return;
        }
        for node in self.liveness.expire(self.mono_now()) {
            let told = self.core.report_node_down(node);
            self.metrics.peer_node_down_reports.inc();
            warn!(%node, shards = told, "peer node silent for an election timeout: reported down");
        }
    }
}
