//! The check a node with a new data dir makes before it runs any Raft group: it reports its
//! store incarnation to the placement driver (`Command::ReportStore`) and starts only once PD
//! accepted it, so a node that lost its data cannot rejoin its groups as its old members.
//!
//! When no PD leader answers:
//! - an initial node (one that hosts PD) asks its peers for their status; if none of them has
//!   applied anything beyond the bootstrap entries, the cluster is starting for the first time
//!   (PD cannot answer before a majority of initial nodes runs) and the node proceeds; its agent
//!   reports the incarnation as soon as PD has a leader. If a peer has run, the node waits:
//!   joining its groups with an empty dir could complete a quorum with forgotten votes;
//! - a joining node waits (it can do nothing without PD anyway).
//!
//! Waiting retries with a backoff and logs what it waits for; it ends when PD answers.

use crate::bootstrap::INITIAL_LOG_INDEX;
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
    /// PD refused it; the node must not start.
    Refused(Error),
    /// No PD answer; `ran` when a reachable peer has applied entries beyond the bootstrap.
    Unanswered { ran: bool },
}

/// Reports the new store's incarnation to PD before any group runs; see the module docs.
///
/// # Errors
/// [`Error::StoreMismatch`] when PD recorded another incarnation for this node,
/// [`Error::Fatal`] when PD removed the node.
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
    let mut backoff = Duration::from_millis(500);
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
            Round::Unanswered { ran: false } if config.hosts_pd() => {
                info!(
                    "new data dir and no placement driver yet, and no peer has run: the \
                     cluster's first start; the incarnation is reported once PD has a leader"
                );
                return Ok(());
            }
            Round::Unanswered { ran } => {
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
        return Round::Unanswered { ran: false };
    };
    let report = Request::Admin(AdminRequest::Pd {
        command: bytes.into(),
    });
    let mut queue: Vec<Peer> = peers.to_vec();
    let mut tried: Vec<Peer> = Vec::new();
    let mut ran = false;
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
            && status
                .replicas
                .iter()
                .any(|replica| replica.applied.get() > INITIAL_LOG_INDEX)
        {
            ran = true;
        }
    }
    Round::Unanswered { ran }
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
