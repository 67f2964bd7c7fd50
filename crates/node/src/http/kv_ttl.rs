//! The TTL routes: `GET /v1/kv/{key}/ttl` (what is left of a key's time to live) and
//! `POST /v1/kv/{key}/persist` (clear it). A put with a TTL is `PUT /v1/kv/{key}?ttl=SECONDS`
//! (`kv.rs`).

use super::AppState;
use super::caller::KeyRoute;
use super::error::ApiError;
use super::op::{Op, finish};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ringkv_client::KeyTtl;
use ringkv_types::KvOp;
use serde_json::json;

/// `GET /v1/kv/{key}/ttl`: 200 `{"ttl_ms": N}` (`null` for a key without a TTL), 404 when the
/// key is absent or has expired.
pub(super) async fn ttl(State(state): State<AppState>, route: KeyRoute) -> Response {
    finish(&state, Op::Ttl, async {
        let (consistency, caller, key) = route.read(&state, "/ttl")?;
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
pub(super) async fn persist(State(state): State<AppState>, route: KeyRoute) -> Response {
    finish(&state, Op::Persist, async {
        let (caller, key) = route.write(&state, "/persist")?;
        caller.authorize(KvOp::Persist { key: key.clone() })?;
        let client = state.inner.forwarder.client().await?;
        let had_ttl = client.persist(key).await?;
        Ok(Json(json!({ "had_ttl": had_ttl })).into_response())
    })
    .await
}
