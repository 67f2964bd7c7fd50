//! The check a node with a new data dir makes before it runs any Raft group: it reports its
//! store incarnation to the placement driver (`Command::ReportStore`) and starts only once PD
//! accepted it, so a node that lost its data cannot rejoin its groups as its old members.
//!
//! When no PD leader answers:
//! - an initial node (one that hosts PD) asks the other initial nodes where they are
//!   (`AdminRequest::StartState`, answered even while they run this same check) and, from those
//!   that created their groups, whether they applied anything beyond the bootstrap entries. It
//!   creates the cluster only when a quorum of the initial nodes, itself included, is reachable
//!   and new (still checking, or created but never ran) and none has run. An empty data dir
//!   alone never proves a first start: a PD host whose dir was wiped while its peers are down
//!   must not create a second cluster, so it waits, saying why; once its peers are back, PD
//!   refuses its new incarnation (a lost store) and the operator replaces the node;
//! - every initial node also compares its bootstrap settings (`bootstrap::bootstrap_fields`:
//!   `initial_cluster`, `initial_shards`, `replication_factor`, `[pd]` settings) with each
//!   initial peer's. A difference with a peer that already created its groups, or differences
//!   that leave this node without a quorum of agreeing initial nodes, stop it with
//!   [`Error::BootstrapMismatch`] naming each field and both values; a node that agrees with a
//!   quorum proceeds and logs the odd peer;
//! - a joining node waits (it can do nothing without PD anyway).
//!
//! Waiting retries with a backoff and logs what it waits for; it ends when PD answers.

use crate::bootstrap::{self, INITIAL_LOG_INDEX};
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::store_identity::StoreIdentity;
use ringkv_pd::{Command, Response as PdResponse};
use ringkv_transport::Transport;
use ringkv_types::{AdminRequest, AdminResult, NodeId, Request, Response, WireError};
use std::time::Duration;
use tracing::{info, warn};

/// Longest wait for one peer's connection or answer during the check.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a peer's liveness probe (a live endpoint answers within a round trip).
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Longest pause between two rounds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A peer to ask: a node id and address, or a `join` address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Peer {
    Node(NodeId, String),
    Addr(String),
}

/// What one round learned.
enum Round {
    /// PD accepted the incarnation.
    Accepted,
    /// PD refused it, or the bootstrap settings differ; the node must not start.
    Refused(Error),
    /// No PD answer; `ran` when a reachable peer has applied entries beyond the bootstrap,
    /// `new_peers` the initial peers that are new (checking, or created but never ran) with
    /// the same bootstrap settings.
    Unanswered { ran: bool, new_peers: usize },
}

/// Initial nodes, this one included, and how many of them make a quorum.
fn initial_quorum(config: &NodeConfig) -> (usize, usize) {
    let mut ids: Vec<NodeId> = config.initial_cluster.iter().map(|e| e.node).collect();
    ids.sort_unstable();
    ids.dedup();
    (ids.len(), ids.len() / 2 + 1)
}

/// Reports the new store's incarnation to PD before any group runs; see the module docs.
///
/// # Errors
/// [`Error::StoreMismatch`] when PD recorded another incarnation for this node,
/// [`Error::Fatal`] when PD removed the node, [`Error::BootstrapMismatch`] when this initial
/// node's bootstrap settings differ from the cluster's.
pub async fn check_new_store(
    config: &NodeConfig,
    transport: &Transport,
    identity: &StoreIdentity,
) -> Result<()> {
    let peers = peers(config);
    if peers.is_empty() {
        info!("new data dir on a single-node cluster: nothing to check");
        return Ok(());
    }
    let (initial, quorum) = initial_quorum(config);
    // Short at first: on a first start the initial nodes come up within moments of each other,
    // and a node that checked too early should join before its peers' brand-new groups stop
    // deferring their elections to it (`node/open.rs`).
    let mut backoff = Duration::from_millis(100);
    let mut round = 0u64;
    loop {
        round += 1;
        match one_round(config, transport, identity, &peers).await {
            Round::Accepted => {
                info!(
                    incarnation = format!("{:016x}", identity.incarnation),
                    "the placement driver accepted this new data dir"
                );
                return Ok(());
            }
            Round::Refused(error) => return Err(error),
            Round::Unanswered {
                ran: false,
                new_peers,
            } if config.hosts_pd() && new_peers + 1 >= quorum => {
                info!(
                    new_nodes = new_peers + 1,
                    initial,
                    "new data dir, no placement driver yet, and a quorum of the initial nodes \
                     is new with the same bootstrap settings: the cluster's first start; the \
                     incarnation is reported once PD has a leader"
                );
                return Ok(());
            }
            Round::Unanswered {
                ran: false,
                new_peers,
            } if config.hosts_pd() => {
                warn!(
                    round,
                    new_nodes = new_peers + 1,
                    initial,
                    quorum,
                    "this initial node's data dir is empty, but fewer than a quorum of the \
                     initial nodes are reachable and new, so it does not create the cluster \
                     (an empty data dir does not prove a first start: it may have been wiped); \
                     waiting. On a first start, start the other initial nodes. If the cluster \
                     exists and this node lost its data dir, start the other nodes: PD will \
                     refuse this node as a lost store; then replace it (docs/deploy.md, \
                     Replacing a node)"
                );
            }
            Round::Unanswered { ran, .. } => {
                warn!(
                    round,
                    peers_have_run = ran,
                    "this node's data dir is new and no placement driver leader answered; \
                     waiting for it before joining any Raft group (a node that lost its data \
                     must not rejoin as itself)"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Initial nodes other than this one, then the `join` addresses not among them.
fn peers(config: &NodeConfig) -> Vec<Peer> {
    let mut peers: Vec<Peer> = config
        .initial_cluster
        .iter()
        .filter(|e| e.node != config.node_id)
        .map(|e| Peer::Node(e.node, e.addr.clone()))
        .collect();
    for addr in &config.join {
        if !config.initial_cluster.iter().any(|e| &e.addr == addr) {
            peers.push(Peer::Addr(addr.clone()));
        }
    }
    peers
}

async fn one_round(
    config: &NodeConfig,
    transport: &Transport,
    identity: &StoreIdentity,
    peers: &[Peer],
) -> Round {
    let command = Command::ReportStore {
        node: config.node_id,
        incarnation: identity.incarnation,
    };
    let Ok(bytes) = postcard::to_stdvec(&command) else {
        return Round::Unanswered {
            ran: false,
            new_peers: 0,
        };
    };
    let report = Request::Admin(AdminRequest::Pd {
        command: bytes.into(),
    });
    let ours = bootstrap::bootstrap_fields(config);
    let (initial, quorum) = initial_quorum(config);
    let mut queue: Vec<Peer> = peers.to_vec();
    let mut tried: Vec<Peer> = Vec::new();
    let mut ran = false;
    let mut new_peers = 0usize;
    // Initial peers that answered `StartState`, and the new ones among them that disagree.
    let mut answered = 0usize;
    let mut odd: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(peer) = queue.first().cloned() {
        queue.remove(0);
        if tried.contains(&peer) {
            continue;
        }
        tried.push(peer.clone());
        // A peer that is not listening yet (nodes of a new cluster start one by one) answers
        // the probe at once with a refusal; without it each would cost a connect timeout.
        let addr = match &peer {
            Peer::Node(_, addr) | Peer::Addr(addr) => addr.as_str(),
        };
        if !ringkv_transport::probe(addr, PROBE_TIMEOUT)
            .await
            .is_ok_and(ringkv_transport::Probe::is_alive)
        {
            continue;
        }
        let connecting = async {
            match &peer {
                Peer::Node(node, addr) => transport.connect_client(*node, addr).await,
                Peer::Addr(addr) => transport.connect_client_addr(addr).await,
            }
        };
        let Ok(Ok(connection)) = tokio::time::timeout(CALL_TIMEOUT, connecting).await else {
            continue;
        };
        // An initial peer: where is it, and does it create the cluster as we would?
        let mut created = false;
        if config.hosts_pd()
            && let Peer::Node(node, addr) = &peer
            && let Ok(Response::Admin(AdminResult::StartState(state))) = connection
                .call(&Request::Admin(AdminRequest::StartState), CALL_TIMEOUT)
                .await
        {
            answered += 1;
            let differences = bootstrap::differences(&ours, &state.bootstrap);
            let who = format!("node {} ({addr})", node.get());
            if !differences.is_empty() {
                if !state.checking {
                    // It created its groups with other settings: the cluster exists (or is
                    // being created) with another map.
                    return Round::Refused(Error::BootstrapMismatch {
                        peer: who,
                        differences: differences.join("; "),
                    });
                }
                warn!(peer = %who, differences = %differences.join("; "),
                    "an initial peer has other bootstrap settings");
                odd.push((who, differences));
                continue;
            }
            if state.checking {
                // New like us and agreeing; it cannot answer for PD before it runs.
                new_peers += 1;
                continue;
            }
            created = true;
        }
        // A peer that is itself checking a new data dir does not answer (its loop has not
        // started): the call times out.
        match connection.call(&report, CALL_TIMEOUT).await {
            Ok(Response::Admin(AdminResult::Pd(bytes))) => {
                match postcard::from_bytes::<std::result::Result<PdResponse, ringkv_pd::Error>>(
                    &bytes,
                ) {
                    Ok(Ok(_)) => return Round::Accepted,
                    Ok(Err(error)) => {
                        if let Some(refusal) = refusal(config, error) {
                            return Round::Refused(refusal);
                        }
                    }
                    Err(error) => warn!(%error, "undecodable answer to ReportStore"),
                }
            }
            Ok(Response::Error(WireError::NotLeader { leader_hint, .. })) => {
                if let Some(hint) = leader_hint
                    && let Some(entry) = config.initial_cluster.iter().find(|e| e.node == hint)
                    && hint != config.node_id
                {
                    queue.insert(0, Peer::Node(hint, entry.addr.clone()));
                }
            }
            Ok(other) => warn!(?other, "unexpected answer to ReportStore"),
            Err(_) => continue,
        }
        // The peer's loop runs: has it applied anything beyond the bootstrap entries?
        if let Ok(Response::Admin(AdminResult::NodeStatus(status))) = connection
            .call(&Request::Admin(AdminRequest::NodeStatus), CALL_TIMEOUT)
            .await
        {
            if status
                .replicas
                .iter()
                .any(|replica| replica.applied.get() > INITIAL_LOG_INDEX)
            {
                ran = true;
            } else if created {
                // Created its groups with our settings, never ran: a first start under way.
                new_peers += 1;
            }
        }
    }
    // Peers that disagree leave too few agreeing initial nodes (new ones, and ones that did
    // not answer and might yet agree) for a quorum: this node is the odd one.
    let unreached = initial.saturating_sub(1 + answered);
    if let Some((who, differences)) = odd.first()
        && 1 + new_peers + unreached < quorum
    {
        return Round::Refused(Error::BootstrapMismatch {
            peer: if odd.len() > 1 {
                format!("{who} and {} other initial node(s)", odd.len() - 1)
            } else {
                who.clone()
            },
            differences: differences.join("; "),
        });
    }
    Round::Unanswered { ran, new_peers }
}

/// The start error for a PD refusal, `None` for refusals worth retrying.
fn refusal(config: &NodeConfig, error: ringkv_pd::Error) -> Option<Error> {
    match error {
        ringkv_pd::Error::StoreMismatch { .. } => Some(Error::StoreMismatch {
            node: config.node_id.get(),
            path: config.data_dir.clone(),
            reason: error.to_string(),
        }),
        ringkv_pd::Error::NodeRemoved { .. } => Some(Error::Fatal {
            reason: format!(
                "refusing to start: {error}; its id is never reused. Start the new node with a \
                 new node_id, `join` and an empty data dir (docs/deploy.md)"
            ),
        }),
        error => {
            warn!(%error, "the placement driver refused ReportStore; retrying");
            None
        }
    }
}
