//! The authorization choke point: [`authorize`] decides every native (and HTTP) request.

use super::principal::Principal;
use ringkv_pd::Command;
use ringkv_types::namespace;
use ringkv_types::{
    AdminRequest, BatchOp, KvOp, KvRequest, NodeId, Request, WatchTarget, WireError,
};

fn denied(missing: impl Into<String>) -> WireError {
    WireError::PermissionDenied {
        missing: missing.into(),
    }
}

fn need_admin(principal: &Principal) -> Result<(), WireError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(denied("admin"))
    }
}

/// Only the certificate of node `node` may speak for it.
fn need_node(principal: &Principal, node: NodeId) -> Result<(), WireError> {
    match principal {
        Principal::Node(id) if *id == node => Ok(()),
        _ => Err(denied(format!("the certificate of node {}", node.get()))),
    }
}

fn need_any_node(principal: &Principal) -> Result<(), WireError> {
    match principal {
        Principal::Node(_) => Ok(()),
        Principal::User { .. } => Err(denied("a node certificate")),
    }
}

/// Whether `principal` may send `request`. Pure and cheap (no allocation on the allowed path
/// of a key-value request); called for every request before it reaches the event loop.
///
/// `Request::WithToken` must be unwrapped (its token resolved to `principal`) before calling
/// this; a `WithToken` here (a nested one) is refused.
///
/// # Errors
/// `PermissionDenied` naming the missing grant; `InvalidRequest` for a key a user sent that is
/// not namespaced, an undecodable PD command, or a nested token.
pub fn authorize(principal: &Principal, request: &Request) -> Result<(), WireError> {
    match request {
        Request::Kv(kv) => authorize_kv(principal, kv),
        Request::Admin(admin) => authorize_admin(principal, admin),
        Request::Watch(watch) => authorize_watch(principal, &watch.target),
        Request::WithToken { .. } => Err(WireError::InvalidRequest {
            reason: "a token inside a token request".into(),
        }),
    }
}

fn authorize_kv(principal: &Principal, request: &KvRequest) -> Result<(), WireError> {
    // Nodes and admins may send any key bytes (namespaced or not).
    if principal.is_admin() {
        return Ok(());
    }
    let check = |key: &[u8], write: bool| -> Result<(), WireError> {
        let (ns, _) = namespace::split(key).map_err(|error| WireError::InvalidRequest {
            reason: error.to_string(),
        })?;
        let allowed = if write {
            principal.may_write(ns)
        } else {
            principal.may_read(ns)
        };
        if allowed {
            Ok(())
        } else {
            let ns = String::from_utf8_lossy(ns);
            Err(denied(if write {
                format!("readwrite:{ns}")
            } else {
                format!("read:{ns}")
            }))
        }
    };
    match &request.op {
        KvOp::Get { key, .. } | KvOp::Exists { key, .. } | KvOp::Ttl { key, .. } => {
            check(key, false)
        }
        KvOp::GetMany { keys, .. } => keys.iter().try_for_each(|key| check(key, false)),
        // A scan sees only keys starting with its prefix: the prefix must name a namespace the
        // principal may read (a full `len ‖ namespace`, so it cannot span namespaces).
        KvOp::Scan { prefix, .. } => check(prefix, false),
        KvOp::Put { key, .. }
        | KvOp::Delete { key }
        | KvOp::CompareAndSwap { key, .. }
        | KvOp::CompareVersionAndSwap { key, .. }
        | KvOp::PutWithTtl { key, .. }
        | KvOp::Persist { key } => check(key, true),
        KvOp::Batch { ops } => ops.iter().try_for_each(|op| match op {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => check(key, true),
        }),
    }
}

/// A watch reads: its key, or its prefix (which must name a whole namespace, as a scan's, so
/// it cannot span namespaces), must be in a namespace the principal may read.
fn authorize_watch(principal: &Principal, target: &WatchTarget) -> Result<(), WireError> {
    if principal.is_admin() {
        return Ok(());
    }
    let (ns, _) = namespace::split(target.bytes()).map_err(|error| WireError::InvalidRequest {
        reason: error.to_string(),
    })?;
    if principal.may_read(ns) {
        Ok(())
    } else {
        Err(denied(format!("read:{}", String::from_utf8_lossy(ns))))
    }
}

fn authorize_admin(principal: &Principal, request: &AdminRequest) -> Result<(), WireError> {
    match request {
        // What every client needs to route, and logging in.
        AdminRequest::GetShardMap
        | AdminRequest::GetShard { .. }
        | AdminRequest::NodeStatus
        | AdminRequest::GetNodes
        | AdminRequest::StartState
        | AdminRequest::Login { .. } => Ok(()),
        // The PD state holds the user table: administrators and nodes only. The plan shows
        // placement only, but it is an admin tool's view like the state.
        AdminRequest::PdState
        | AdminRequest::PdPlan { .. }
        | AdminRequest::ChangeReplica { .. }
        | AdminRequest::TransferLeader { .. }
        | AdminRequest::SplitShard { .. }
        | AdminRequest::SetFaults { .. }
        // The inspector shows every key and value on the node.
        | AdminRequest::Inspect(_) => need_admin(principal),
        AdminRequest::Pd { command } => {
            let command: Command =
                postcard::from_bytes(command).map_err(|error| WireError::InvalidRequest {
                    reason: format!("undecodable PD command: {error}"),
                })?;
            authorize_pd(principal, &command)
        }
    }
}

/// Node-agent commands need the named node's certificate; the rest need `admin`.
fn authorize_pd(principal: &Principal, command: &Command) -> Result<(), WireError> {
    match command {
        Command::RegisterNodeAs { id, .. } => need_node(principal, *id),
        Command::NodeHeartbeat { node, .. }
        | Command::ReportStore { node, .. }
        | Command::SpaceAlarm { node, .. } => need_node(principal, *node),
        Command::ShardReport(report) => need_node(principal, report.leader),
        Command::StoreHeartbeat(heartbeat) => need_node(principal, heartbeat.node),
        Command::Bootstrap { .. } | Command::Tick { .. } => need_any_node(principal),
        _ => need_admin(principal),
    }
}

/// Whether `request` changes the cluster (placement, schedulers, nodes, users, keys, faults)
/// and so is written to the audit log with its principal. Node-agent traffic is not.
pub fn is_audited(request: &Request) -> bool {
    match request {
        Request::Kv(_) | Request::Watch(_) => false,
        Request::WithToken { request, .. } => is_audited(request),
        Request::Admin(admin) => match admin {
            AdminRequest::GetShardMap
            | AdminRequest::GetShard { .. }
            | AdminRequest::NodeStatus
            | AdminRequest::GetNodes
            | AdminRequest::PdState
            | AdminRequest::PdPlan { .. }
            | AdminRequest::StartState
            | AdminRequest::Login { .. } => false,
            AdminRequest::ChangeReplica { .. }
            | AdminRequest::TransferLeader { .. }
            | AdminRequest::SplitShard { .. }
            | AdminRequest::SetFaults { .. }
            | AdminRequest::Inspect(_) => true,
            AdminRequest::Pd { command } => !matches!(
                postcard::from_bytes::<Command>(command),
                Ok(Command::RegisterNodeAs { .. }
                    | Command::NodeHeartbeat { .. }
                    | Command::ReportStore { .. }
                    | Command::SpaceAlarm { .. }
                    | Command::ShardReport(_)
                    | Command::StoreHeartbeat(_)
                    | Command::Tick { .. })
            ),
        },
    }
}

/// A short description of `request` for logs: the operation and, for PD commands, the command's
/// name. Never keys, values, passwords, hashes or tokens.
pub fn describe(request: &Request) -> String {
    match request {
        Request::Kv(kv) => match &kv.op {
            KvOp::Get { .. } => format!("get on shard {}", kv.shard),
            KvOp::Exists { .. } => format!("exists on shard {}", kv.shard),
            KvOp::Put { .. } => format!("put on shard {}", kv.shard),
            KvOp::Delete { .. } => format!("delete on shard {}", kv.shard),
            KvOp::CompareAndSwap { .. } => format!("cas on shard {}", kv.shard),
            KvOp::Batch { ops } => format!("batch of {} on shard {}", ops.len(), kv.shard),
            KvOp::GetMany { keys, .. } => format!("get of {} on shard {}", keys.len(), kv.shard),
            KvOp::CompareVersionAndSwap { .. } => format!("cas-version on shard {}", kv.shard),
            KvOp::Scan { .. } => format!("scan on shard {}", kv.shard),
            KvOp::PutWithTtl { .. } => format!("put with ttl on shard {}", kv.shard),
            KvOp::Persist { .. } => format!("persist on shard {}", kv.shard),
            KvOp::Ttl { .. } => format!("ttl on shard {}", kv.shard),
        },
        Request::WithToken { request, .. } => describe(request),
        Request::Watch(watch) => format!("watch on shard {}", watch.shard),
        Request::Admin(AdminRequest::Pd { command }) => {
            match postcard::from_bytes::<Command>(command) {
                Ok(command) => {
                    let text = format!("{command:?}");
                    let name: String = text
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    format!("pd {name}")
                }
                Err(_) => "pd (undecodable)".into(),
            }
        }
        Request::Admin(admin) => {
            let text = format!("{admin:?}");
            let name: String = text
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            format!("admin {name}")
        }
    }
}
