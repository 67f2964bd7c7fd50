//! The multi-key read routes: `POST /v1/kv:batchGet` (many keys, any shards) and
//! `GET /v1/kv?prefix=P&cursor=C&limit=N` (a scan page).
//!
//! Both run through the embedded client like the other key routes, after the same
//! authorization: a batch get checks every key, a scan checks its (namespaced) prefix.

use super::AppState;
use super::ConnectionInfo;
use super::body::{JSON_OVERHEAD_BYTES, before_body, json_body, read_body, value_json};
use super::caller::Caller;
use super::error::ApiError;
use super::op::{Op, finish};
use super::params::parse_consistency;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ringkv_client::ScanOptions;
use ringkv_types::KvOp;
use serde::Deserialize;
use serde_json::json;

/// Most keys of one `POST /v1/kv:batchGet`.
const BATCH_GET_KEYS_MAX: usize = 1000;

/// The body of `POST /v1/kv:batchGet`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchGetBody {
    /// Keys as UTF-8 text.
    #[serde(default)]
    keys: Vec<String>,
    /// Keys as base64 (for binary keys); answered after the text keys.
    #[serde(default)]
    keys_b64: Vec<String>,
}

/// Query parameters of `POST /v1/kv:batchGet`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchGetParams {
    consistency: Option<String>,
    namespace: Option<String>,
}

/// `POST /v1/kv:batchGet` with `{"keys": [...]}` (and/or `"keys_b64"`): 200
/// `{"values": [{"key", "key_b64", "value", "value_b64", "version", "found"}]}` in the order
/// asked. Keys may be on any shards; one request per shard, in parallel.
pub(super) async fn batch_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<BatchGetParams>, QueryRejection>,
    body: Body,
) -> Response {
    finish(&state, Op::BatchGet, async {
        let checked = (|| {
            let Query(params) = query.map_err(|rejection| {
                ApiError::bad_request(format!("query: {}", rejection.body_text()))
            })?;
            let consistency = parse_consistency(params.consistency.as_deref())?;
            let caller = Caller::resolve_in(
                &state,
                &headers,
                connection.as_ref(),
                params.namespace.as_deref(),
            )?;
            Ok((consistency, caller))
        })();
        let ((consistency, caller), body) = before_body(checked, body).await?;
        let limit = state.inner.max_request_bytes * 2 + JSON_OVERHEAD_BYTES;
        let body: BatchGetBody = json_body(&read_body(&headers, body, limit).await?)?;
        let mut keys: Vec<Bytes> = body.keys.into_iter().map(Bytes::from).collect();
        for (index, b64) in body.keys_b64.iter().enumerate() {
            let key = BASE64
                .decode(b64.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("keys_b64[{index}]: {e}")))?;
            keys.push(Bytes::from(key));
        }
        if keys.is_empty() || keys.len() > BATCH_GET_KEYS_MAX {
            return Err(ApiError::bad_request(format!(
                "give 1 to {BATCH_GET_KEYS_MAX} keys (got {})",
                keys.len()
            )));
        }
        let wire = keys
            .iter()
            .map(|key| caller.key(key.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        caller.authorize(KvOp::GetMany {
            keys: wire.clone(),
            consistency,
        })?;
        let client = state.inner.forwarder.client().await?;
        let found = client.get_many(wire, consistency).await?;
        let values: Vec<serde_json::Value> = keys
            .iter()
            .zip(found)
            .map(|(key, found)| {
                let (key_text, key_b64) = value_json(Some(key));
                let (value, value_b64) = value_json(found.as_ref().map(|found| &found.value));
                json!({
                    "key": key_text,
                    "key_b64": key_b64,
                    "found": found.is_some(),
                    "value": value,
                    "value_b64": value_b64,
                    "version": found.as_ref().map_or(0, |found| found.version),
                })
            })
            .collect();
        Ok(Json(json!({ "values": values })).into_response())
    })
    .await
}

/// Query parameters of `GET /v1/kv` (a scan page).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScanParams {
    /// Only keys starting with this text.
    prefix: Option<String>,
    /// Only keys starting with these bytes (base64); excludes `prefix`.
    prefix_b64: Option<String>,
    /// Where to resume (the previous page's `cursor`); absent = the start.
    cursor: Option<String>,
    /// Keys per page (1 to 1000, default 100).
    limit: Option<u32>,
    /// `true`: no values.
    keys_only: Option<bool>,
    consistency: Option<String>,
    namespace: Option<String>,
}

/// `GET /v1/kv?prefix=P&cursor=C&limit=N&keys_only=true`: 200 `{"items": [...], "cursor":
/// C | null}`. Keys come in ring order (hashed), not key order; `cursor` is null once the
/// whole ring was read. A key present for the whole scan is returned exactly once.
pub(super) async fn scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<ScanParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Scan, async {
        let Query(params) = query.map_err(|rejection| {
            ApiError::bad_request(format!("query: {}", rejection.body_text()))
        })?;
        let consistency = parse_consistency(params.consistency.as_deref())?;
        let caller = Caller::resolve_in(
            &state,
            &headers,
            connection.as_ref(),
            params.namespace.as_deref(),
        )?;
        let prefix = match (params.prefix, params.prefix_b64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give `prefix` or `prefix_b64`, not both",
                ));
            }
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(
                BASE64
                    .decode(b64.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("prefix_b64: {e}")))?,
            ),
            (None, None) => Bytes::new(),
        };
        let cursor = params
            .cursor
            .map(|cursor| decode_cursor(&cursor))
            .transpose()?;
        let limit = params.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::bad_request("limit must be 1 to 1000"));
        }
        let keys_only = params.keys_only.unwrap_or(false);
        caller.authorize(KvOp::Scan {
            start: Bytes::new(),
            prefix: caller.key(prefix.clone())?,
            limit,
            keys_only,
            consistency,
        })?;
        let client = state.inner.forwarder.client().await?;
        // The embedded client has no namespace: the caller's is put into the prefix here.
        let mut scan = client.scan(
            caller.key(prefix)?,
            ScanOptions {
                page_size: limit,
                keys_only,
                consistency,
                cursor,
            },
        )?;
        let page = scan.next_page().await?.unwrap_or_default();
        let items: Vec<serde_json::Value> = page
            .into_iter()
            .map(|entry| {
                let (key, key_b64) = value_json(Some(&caller.user_key(entry.key)));
                let mut item = json!({ "key": key, "key_b64": key_b64, "version": entry.version });
                if !keys_only {
                    let (value, value_b64) = value_json(entry.value.as_ref());
                    item["value"] = value;
                    item["value_b64"] = value_b64;
                }
                item
            })
            .collect();
        let cursor = scan.cursor().map(|cursor| encode_cursor(&cursor));
        Ok(Json(json!({ "items": items, "cursor": cursor })).into_response())
    })
    .await
}

/// A cursor as text: URL-safe base64 of the storage key (opaque to callers).
pub(super) fn encode_cursor(cursor: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cursor)
}

fn decode_cursor(text: &str) -> Result<Bytes, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map(Bytes::from)
        .map_err(|e| ApiError::bad_request(format!("cursor: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = [0u8, 1, 2, 255, 254, b'k'];
        assert_eq!(
            decode_cursor(&encode_cursor(&cursor)).unwrap(),
            Bytes::copy_from_slice(&cursor)
        );
        assert!(decode_cursor("not base64!").is_err());
        assert!(json_body::<BatchGetBody>(br#"{"keys": ["a"], "key": "b"}"#).is_err());
    }
}
