//! The bounded `op` and `result` labels of native client requests
//! (`ringkv_requests_total{op, result}`): never a key or a user string.

use ringkv_types::{AdminRequest, KvOp, Request, Response, WireError};

/// The `op` label of a request (bounded: never a key or a user string).
pub(super) fn op_label(request: &Request) -> &'static str {
    match request {
        Request::WithToken { request, .. } => op_label(request),
        Request::Kv(kv) => match kv.op {
            KvOp::Get { .. } => "get",
            KvOp::Exists { .. } => "has",
            KvOp::Put { .. } => "put",
            KvOp::Delete { .. } => "delete",
            KvOp::CompareAndSwap { .. } => "cas",
            KvOp::Batch { .. } => "batch",
            KvOp::GetMany { .. } => "get_many",
            KvOp::CompareVersionAndSwap { .. } => "cas_version",
            KvOp::Scan { .. } => "scan",
            KvOp::PutWithTtl { .. } => "put_ttl",
            KvOp::Persist { .. } => "persist",
            KvOp::Ttl { .. } => "ttl",
        },
        Request::Admin(AdminRequest::Login { .. }) => "login",
        Request::Admin(AdminRequest::Pd { .. }) => "pd",
        Request::Admin(_) => "admin",
        Request::Watch(_) => "watch",
    }
}

/// The `result` label of an answer.
pub(super) fn result_label(response: &Response) -> &'static str {
    let Response::Error(error) = response else {
        return "ok";
    };
    match error {
        WireError::NotLeader { .. }
        | WireError::EpochMismatch { .. }
        | WireError::ShardNotFound { .. }
        | WireError::KeyNotInShard { .. } => "reroute",
        WireError::Busy => "busy",
        WireError::Timeout => "timeout",
        WireError::Unavailable => "unavailable",
        WireError::Unauthenticated { .. } => "unauthenticated",
        WireError::PermissionDenied { .. } => "permission_denied",
        WireError::KeyTooLarge { .. }
        | WireError::ValueTooLarge { .. }
        | WireError::BatchTooLarge { .. }
        | WireError::RequestTooLarge { .. } => "too_large",
        WireError::InvalidRequest { .. } => "invalid",
        WireError::Internal { .. } => "internal",
        WireError::NoSpace { .. } => "no_space",
        _ => "other",
    }
}
