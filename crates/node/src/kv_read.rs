//! Serving a read from a replica's applied state, once it is as fresh as the read asks:
//! `Get`, `Exists`, `GetMany` (values with versions), `Ttl` and one page of a `Scan`.
//!
//! Every read is at a log time, `now_ms`: the replica's clock, never below the largest stamp it
//! proposed or applied. A value whose TTL has run out by then is absent, although it stays in
//! the store until the shard's leader removes it through the log (`core/ttl_sweep.rs`).

use bytes::Bytes;
use ringkv_storage::{ScanRequest, StateStore, Versioned};
use ringkv_types::ring::{self, Arc};
use ringkv_types::{KvOp, KvResult, LogIndex, Response, ScanItem, VersionedValue, WireError};

/// Most keys one scan page returns, whatever the caller asks.
pub const SCAN_LIMIT_MAX: u32 = 1000;

/// Most keys one scan page examines (matching the prefix or not): bounds the time a page
/// holds the event loop when few keys match.
pub const SCAN_EXAMINE_MAX: usize = 10_000;

/// A scan page ends once its keys and values reach this many bytes (one value may pass it).
pub const SCAN_PAGE_BYTES_MAX: usize = 1 << 20;

/// Most bytes of values one `GetMany` answers: below the transport's 16 MiB frame.
pub const GET_MANY_BYTES_MAX: usize = 8 << 20;

/// Serves the read `op` (of a shard whose arc is `arc`) from the applied state `store` (the
/// fjall store in `ringkvd`, memory in the simulator) at `applied`, at log time `now_ms`. A
/// write op is answered `InvalidRequest`.
pub fn read_now<S: StateStore + ?Sized>(
    store: &S,
    op: &KvOp,
    applied: LogIndex,
    arc: Arc,
    now_ms: u64,
) -> Response {
    let result = match op {
        KvOp::Exists { key, .. } => get_live(store, key, now_ms).map(|found| KvResult::Exists {
            exists: found.is_some(),
            applied,
        }),
        KvOp::Get { key, .. } => get_live(store, key, now_ms).map(|found| KvResult::Value {
            value: found.map(|found| found.value),
            applied,
        }),
        KvOp::Ttl { key, .. } => get_live(store, key, now_ms).map(|found| KvResult::Ttl {
            exists: found.is_some(),
            remaining_ms: found.and_then(|found| found.remaining_ms(now_ms)),
            applied,
        }),
        KvOp::GetMany { keys, .. } => return get_many(store, keys, applied, now_ms),
        KvOp::Scan {
            start,
            prefix,
            limit,
            keys_only,
            ..
        } => store
            .scan_page(&ScanRequest {
                arc,
                start,
                prefix,
                limit: (*limit).clamp(1, SCAN_LIMIT_MAX) as usize,
                keys_only: *keys_only,
                examine_max: SCAN_EXAMINE_MAX,
                bytes_max: SCAN_PAGE_BYTES_MAX,
                now_ms,
            })
            .map(|page| KvResult::ScanPage {
                items: page
                    .items
                    .into_iter()
                    .map(|item| ScanItem {
                        key: item.key,
                        version: LogIndex(item.version),
                        value: item.value,
                    })
                    .collect(),
                next: page.next.map(Bytes::from),
                applied,
            }),
        _ => {
            return Response::Error(WireError::InvalidRequest {
                reason: "not a read".into(),
            });
        }
    };
    match result {
        Ok(result) => Response::Kv(result),
        Err(error) => internal(error),
    }
}

fn get_many<S: StateStore + ?Sized>(
    store: &S,
    keys: &[Bytes],
    applied: LogIndex,
    now_ms: u64,
) -> Response {
    let mut values = Vec::with_capacity(keys.len());
    let mut bytes = 0usize;
    for key in keys {
        let found = match get_live(store, key, now_ms) {
            Ok(found) => found,
            Err(error) => return internal(error),
        };
        bytes += found.as_ref().map_or(0, |found| found.value.len());
        if bytes > GET_MANY_BYTES_MAX {
            return Response::Error(WireError::InvalidRequest {
                reason: format!(
                    "the values exceed {GET_MANY_BYTES_MAX} bytes in one answer: ask for fewer keys"
                ),
            });
        }
        values.push(match found {
            Some(found) => VersionedValue {
                value: Some(found.value),
                version: LogIndex(found.version),
            },
            None => VersionedValue {
                value: None,
                version: LogIndex(0),
            },
        });
    }
    Response::Kv(KvResult::Values { values, applied })
}

/// The value of the user key `key` as a read at log time `now_ms` sees it: a value whose TTL
/// has run out is absent (see the module docs).
fn get_live<S: StateStore + ?Sized>(
    store: &S,
    key: &[u8],
    now_ms: u64,
) -> ringkv_storage::Result<Option<Versioned>> {
    Ok(store
        .value(&ring::storage_key(key))?
        .filter(|found| found.live_at(now_ms)))
}

fn internal(error: ringkv_storage::Error) -> Response {
    Response::Error(WireError::Internal {
        reason: error.to_string(),
    })
}
