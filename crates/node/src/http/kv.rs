//! The single-key routes: `/v1/kv/{key}` (GET, HEAD, PUT with an optional `?ttl=SECONDS`,
//! DELETE). The other key routes have their own files: `kv_cas.rs` (`/v1/kv/{key}/cas`),
//! `kv_batch.rs` (`/v1/batch`), `kv_read.rs` (batch get, scan), `kv_ttl.rs` (TTL); what they
//! share is in `params.rs` (key and query), `caller.rs` (principal, namespace, authorization),
//! `body.rs` (bodies within limits) and `op.rs` (labels, metrics).
//!
//! Keys are one path segment, percent-decoded to bytes (`a%2Fb` is the key `a/b`, `%FF` a
//! byte); values are the raw request and response bodies. Every request resolves a principal
//! and passes [`super::auth::authorize`] before it executes through the embedded client.

use super::AppState;
use super::ConnectionInfo;
use super::body::{before_body, read_body};
use super::caller::{Caller, KeyRoute};
use super::error::ApiError;
use super::op::{Op, finish};
use super::params::{KvParams, key_of, put_params, writes_only};
use axum::body::Body;
use axum::extract::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ringkv_types::KvOp;

/// The response header carrying a key's version (the log index of its last write).
pub(super) const VERSION_HEADER: &str = "ringkv-version";

/// The `ringkv-version` header of `version`.
fn version_header(version: u64) -> (header::HeaderName, HeaderValue) {
    (
        header::HeaderName::from_static(VERSION_HEADER),
        HeaderValue::from(version),
    )
}

/// `GET /v1/kv/{key}`: 200 with the value (its version in `ringkv-version`), 404 when absent.
pub(super) async fn get(State(state): State<AppState>, route: KeyRoute) -> Response {
    finish(&state, Op::Get, async {
        let (consistency, caller, key) = route.read(&state, "")?;
        caller.authorize(KvOp::Get {
            key: key.clone(),
            consistency,
        })?;
        let client = state.inner.forwarder.client().await?;
        match client.get_versioned(key, consistency).await? {
            Some(found) => Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    ),
                    version_header(found.version),
                ],
                found.value,
            )
                .into_response()),
            None => Err(ApiError::not_found("no such key")),
        }
    })
    .await
}

/// `HEAD /v1/kv/{key}`: 200 when the key exists, 404 otherwise, no body.
pub(super) async fn head(State(state): State<AppState>, route: KeyRoute) -> Response {
    finish(&state, Op::Head, async {
        let (consistency, caller, key) = route.read(&state, "")?;
        caller.authorize(KvOp::Exists {
            key: key.clone(),
            consistency,
        })?;
        let client = state.inner.forwarder.client().await?;
        // HAS: the node answers whether the key exists without sending the value.
        match client.exists_with(key, consistency).await? {
            true => Ok(StatusCode::OK.into_response()),
            false => Ok(StatusCode::NOT_FOUND.into_response()),
        }
    })
    .await
}

/// `PUT /v1/kv/{key}` with the raw value as body: 204, the new version in `ringkv-version`.
/// `?ttl=SECONDS` makes the key expire that long after the shard's leader applies the put.
pub(super) async fn put(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
    body: Body,
) -> Response {
    finish(&state, Op::Put, async {
        let checked = (|| {
            let params = put_params(query)?;
            writes_only(&params)?;
            let key = key_of(&uri, "")?;
            let caller = Caller::resolve(&state, &headers, connection.as_ref(), &params)?;
            let key = caller.key(key)?;
            Ok((params, caller, key))
        })();
        let ((params, caller, key), body) = before_body(checked, body).await?;
        let value = read_body(&headers, body, state.inner.max_value_bytes).await?;
        let ttl_ms = params
            .ttl
            .map(|seconds| match seconds.checked_mul(1000) {
                Some(ms) if (1..=ringkv_types::TTL_MS_MAX).contains(&ms) => Ok(ms),
                _ => Err(ApiError::bad_request(format!(
                    "ttl={seconds}: a TTL is 1 second to ten years"
                ))),
            })
            .transpose()?;
        caller.authorize(match ttl_ms {
            Some(ttl_ms) => KvOp::PutWithTtl {
                key: key.clone(),
                value: value.clone(),
                ttl_ms,
            },
            None => KvOp::Put {
                key: key.clone(),
                value: value.clone(),
            },
        })?;
        let client = state.inner.forwarder.client().await?;
        let version = match ttl_ms {
            Some(ttl_ms) => {
                let ttl = std::time::Duration::from_millis(ttl_ms);
                client.put_with_ttl(key, value, ttl).await?
            }
            None => client.put_versioned(key, value).await?,
        };
        Ok((StatusCode::NO_CONTENT, [version_header(version)]).into_response())
    })
    .await
}

/// `DELETE /v1/kv/{key}`: 204 whether or not the key existed.
pub(super) async fn delete(State(state): State<AppState>, route: KeyRoute) -> Response {
    finish(&state, Op::Delete, async {
        let (caller, key) = route.write(&state, "")?;
        caller.authorize(KvOp::Delete { key: key.clone() })?;
        let client = state.inner.forwarder.client().await?;
        client.delete(key).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
