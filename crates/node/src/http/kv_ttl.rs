//! The TTL routes: `GET /v1/kv/{key}/ttl` (what is left of a key's time to live) and
//! `POST /v1/kv/{key}/persist` (clear it). A put with a TTL is `PUT /v1/kv/{key}?ttl=SECONDS`
//! (`kv.rs`).

use super::AppState;
use super::ConnectionInfo;
use super::caller::KeyCall;
use super::error::ApiError;
use super::op::{Op, finish};
use super::params::KvParams;
use axum::Json;
use axum::extract::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use ringkv_client::KeyTtl;
use ringkv_types::KvOp;
use serde_json::json;

/// `GET /v1/kv/{key}/ttl`: 200 `{"ttl_ms": N}` (`null` for a key without a TTL), 404 when the
/// key is absent or has expired.
pub(super) async fn ttl(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Ttl, async {
        let (consistency, caller, key) = KeyCall {
            state: &state,
            uri: &uri,
            suffix: "/ttl",
            headers: &headers,
            connection: connection.as_ref(),
        }
        .read(query)?;
        caller.authorize(KvOp::Ttl {
            key: key.clone(),
            consistency,
        })?;
        let client = state.inner.forwarder.client().await?;
        match client.ttl_with(key, consistency).await? {
            KeyTtl::Absent => Err(ApiError::not_found("no such key")),
            KeyTtl::Persistent => Ok(Json(json!({ "ttl_ms": null })).into_response()),
            KeyTtl::Expires(left) => {
                let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
                Ok(Json(json!({ "ttl_ms": ms })).into_response())
            }
        }
    })
    .await
}

/// `POST /v1/kv/{key}/persist`: 200 `{"had_ttl": true}` when the key had a TTL (now
/// cleared), `{"had_ttl": false}` when it is absent or had none (nothing changed).
pub(super) async fn persist(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Persist, async {
        let (caller, key) = KeyCall {
            state: &state,
            uri: &uri,
            suffix: "/persist",
            headers: &headers,
            connection: connection.as_ref(),
        }
        .write(query)?;
        caller.authorize(KvOp::Persist { key: key.clone() })?;
        let client = state.inner.forwarder.client().await?;
        let had_ttl = client.persist(key).await?;
        Ok(Json(json!({ "had_ttl": had_ttl })).into_response())
    })
    .await
}
