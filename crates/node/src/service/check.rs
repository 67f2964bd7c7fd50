//! The checks of a data request that need no Raft state: epoch and shard arc first (a client
//! wants to hear it must reroute), then the size limits. Pure, so they are unit-tested.

use crate::config::LimitsConfig;
use ringkv_types::{BatchOp, KvOp, KvRequest, ShardDescriptor, WireError};

/// Every key an operation touches.
fn keys(op: &KvOp) -> Vec<&[u8]> {
    match op {
        KvOp::Get { key, .. }
        | KvOp::Exists { key, .. }
        | KvOp::Put { key, .. }
        | KvOp::Delete { key }
        | KvOp::CompareAndSwap { key, .. }
        | KvOp::CompareVersionAndSwap { key, .. }
        | KvOp::PutWithTtl { key, .. }
        | KvOp::Persist { key }
        | KvOp::Ttl { key, .. } => vec![key.as_ref()],
        KvOp::GetMany { keys, .. } => keys.iter().map(|key| key.as_ref()).collect(),
        // A scan names no key; its start is checked against the arc in `check_request`.
        KvOp::Scan { .. } => Vec::new(),
        KvOp::Batch { ops } => ops
            .iter()
            .map(|op| match op {
                BatchOp::Put { key, .. } | BatchOp::Delete { key } => key.as_ref(),
            })
            .collect(),
    }
}

/// Every value an operation carries (CAS: expected and new).
fn values(op: &KvOp) -> Vec<&[u8]> {
    match op {
        KvOp::Get { .. }
        | KvOp::Exists { .. }
        | KvOp::Delete { .. }
        | KvOp::GetMany { .. }
        | KvOp::Scan { .. }
        | KvOp::Persist { .. }
        | KvOp::Ttl { .. } => Vec::new(),
        KvOp::CompareVersionAndSwap { new, .. } => new.iter().map(|value| value.as_ref()).collect(),
        KvOp::Put { value, .. } | KvOp::PutWithTtl { value, .. } => vec![value.as_ref()],
        KvOp::CompareAndSwap { expected, new, .. } => expected
            .iter()
            .chain(new.iter())
            .map(|value| value.as_ref())
            .collect(),
        KvOp::Batch { ops } => ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { value, .. } => Some(value.as_ref()),
                BatchOp::Delete { .. } => None,
            })
            .collect(),
    }
}

/// Checks a request against this replica's descriptor and the limits, in the order a client
/// wants to hear about problems: routing first (epoch, arc), then sizes.
///
/// # Errors
/// `EpochMismatch`, `KeyNotInShard`, `BatchTooLarge`, `KeyTooLarge`, `ValueTooLarge`,
/// `RequestTooLarge`, or `InvalidRequest` for an empty batch.
pub fn check_request(
    request: &KvRequest,
    descriptor: &ShardDescriptor,
    limits: &LimitsConfig,
) -> Result<(), WireError> {
    if request.epoch != descriptor.epoch {
        return Err(WireError::EpochMismatch {
            descriptor: descriptor.clone(),
        });
    }
    let keys = keys(&request.op);
    if keys.iter().any(|key| !descriptor.contains_key(key)) {
        return Err(WireError::KeyNotInShard {
            shard: descriptor.id,
        });
    }
    if let KvOp::Scan { start, .. } = &request.op {
        // The start is a storage key: its first 8 bytes are a ring position of this arc.
        let position = match start.len() {
            0 => None,
            1..8 => {
                return Err(WireError::InvalidRequest {
                    reason: format!("scan start of {} bytes (a storage key)", start.len()),
                });
            }
            _ => start
                .first_chunk::<8>()
                .map(|bytes| u64::from_be_bytes(*bytes)),
        };
        if position.is_some_and(|position| !descriptor.arc.contains(position)) {
            return Err(WireError::KeyNotInShard {
                shard: descriptor.id,
            });
        }
    }
    if let KvOp::PutWithTtl { ttl_ms, .. } = &request.op
        && !(1..=ringkv_types::TTL_MS_MAX).contains(ttl_ms)
    {
        return Err(WireError::InvalidRequest {
            reason: format!(
                "ttl of {ttl_ms} ms: a TTL is 1 ms to {} ms (ten years)",
                ringkv_types::TTL_MS_MAX
            ),
        });
    }
    let count = match &request.op {
        KvOp::Batch { ops } => Some(ops.len()),
        KvOp::GetMany { keys, .. } => Some(keys.len()),
        _ => None,
    };
    if let Some(count) = count {
        if count == 0 {
            return Err(WireError::InvalidRequest {
                reason: "empty batch".into(),
            });
        }
        if count as u64 > limits.max_batch_ops {
            return Err(WireError::BatchTooLarge {
                count: count as u64,
                max: limits.max_batch_ops,
            });
        }
    }
    let mut total = 0u64;
    for key in &keys {
        let size = key.len() as u64;
        if size > limits.max_key_bytes {
            return Err(WireError::KeyTooLarge {
                size,
                max: limits.max_key_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    for value in values(&request.op) {
        let size = value.len() as u64;
        if size > limits.max_value_bytes {
            return Err(WireError::ValueTooLarge {
                size,
                max: limits.max_value_bytes,
            });
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_request_bytes {
        return Err(WireError::RequestTooLarge {
            size: total,
            max: limits.max_request_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::initial_shard_map;
    use bytes::Bytes;
    use ringkv_types::{Epoch, NodeId, ReadConsistency};

    fn request(descriptor: &ShardDescriptor, op: KvOp) -> KvRequest {
        KvRequest {
            shard: descriptor.id,
            epoch: descriptor.epoch,
            session: None,
            timeout_ms: 0,
            op,
        }
    }

    /// A key the descriptor owns (searching small integers).
    fn key_in(descriptor: &ShardDescriptor, other: bool) -> Bytes {
        (0u32..)
            .map(|i| Bytes::from(format!("key-{i}")))
            .find(|key| descriptor.contains_key(key) != other)
            .unwrap()
    }

    #[test]
    fn requests_are_checked_for_routing_then_limits() {
        let map = initial_shard_map(&[NodeId(1), NodeId(2), NodeId(3)], 4, 3);
        let shard = &map.shards[1];
        let limits = LimitsConfig {
            max_key_bytes: 16,
            max_value_bytes: 8,
            max_request_bytes: 20,
            max_batch_ops: 2,
            ..LimitsConfig::default()
        };
        let mine = key_in(shard, false);
        let foreign = key_in(shard, true);
        let put = |key: &Bytes, size: usize| KvOp::Put {
            key: key.clone(),
            value: Bytes::from(vec![b'v'; size]),
        };
        let ok = request(shard, put(&mine, 8));
        assert_eq!(check_request(&ok, shard, &limits), Ok(()));

        let mut stale = ok.clone();
        stale.epoch = Epoch::default();
        assert!(matches!(
            check_request(&stale, shard, &limits),
            Err(WireError::EpochMismatch { .. })
        ));
        let cases: Vec<(&str, KvOp, WireError)> = vec![
            (
                "foreign key",
                KvOp::Get {
                    key: foreign.clone(),
                    consistency: ReadConsistency::Stale,
                },
                WireError::KeyNotInShard { shard: shard.id },
            ),
            (
                "big value",
                put(&mine, 9),
                WireError::ValueTooLarge { size: 9, max: 8 },
            ),
            (
                "big key",
                KvOp::Delete {
                    key: Bytes::from(vec![b'k'; 17]),
                },
                // A 17-byte key is checked for its shard first.
                if shard.contains_key(&[b'k'; 17]) {
                    WireError::KeyTooLarge { size: 17, max: 16 }
                } else {
                    WireError::KeyNotInShard { shard: shard.id }
                },
            ),
            (
                "many ops",
                KvOp::Batch {
                    ops: vec![BatchOp::Delete { key: mine.clone() }; 3],
                },
                WireError::BatchTooLarge { count: 3, max: 2 },
            ),
            (
                "big request",
                KvOp::Batch {
                    ops: vec![
                        BatchOp::Put {
                            key: mine.clone(),
                            value: Bytes::from_static(b"12345678"),
                        };
                        2
                    ],
                },
                WireError::RequestTooLarge {
                    size: 2 * (mine.len() as u64 + 8),
                    max: 20,
                },
            ),
        ];
        for (name, op, expected) in cases {
            assert_eq!(
                check_request(&request(shard, op), shard, &limits),
                Err(expected),
                "{name}"
            );
        }
    }
}
