//! The state-machine command a write request becomes (the storage [`Operation`]s of its
//! [`KvOp`], with its session for exactly-once).

use ringkv_storage::{Command, Operation, SessionRequest};
use ringkv_types::{BatchOp, KvOp, KvRequest};

/// The state-machine command of a write request (`None` for a read).
pub fn command_of(request: &KvRequest) -> Option<Command> {
    let operations = match &request.op {
        KvOp::Get { .. }
        | KvOp::Exists { .. }
        | KvOp::GetMany { .. }
        | KvOp::Scan { .. }
        | KvOp::Ttl { .. } => {
            return None;
        }
        KvOp::PutWithTtl { key, value, ttl_ms } => vec![Operation::PutWithTtl {
            key: key.clone(),
            value: value.clone(),
            ttl_ms: *ttl_ms,
        }],
        KvOp::Persist { key } => vec![Operation::Persist { key: key.clone() }],
        KvOp::CompareVersionAndSwap {
            key,
            expected_version,
            new,
        } => vec![Operation::CompareVersionAndSwap {
            key: key.clone(),
            expected_version: *expected_version,
            new: new.clone(),
        }],
        KvOp::Put { key, value } => vec![Operation::Put {
            key: key.clone(),
            value: value.clone(),
        }],
        KvOp::Delete { key } => vec![Operation::Delete { key: key.clone() }],
        KvOp::CompareAndSwap { key, expected, new } => vec![Operation::CompareAndSwap {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        }],
        KvOp::Batch { ops } => ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => Operation::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                BatchOp::Delete { key } => Operation::Delete { key: key.clone() },
            })
            .collect(),
    };
    Some(Command {
        session: request.session.map(|session| SessionRequest {
            session: session.session_id,
            sequence: session.sequence,
        }),
        operations,
    })
}
