//! The key-value routes: `/v1/kv/{key}` (GET, HEAD, PUT with an optional `?ttl=SECONDS`,
//! DELETE), `/v1/kv/{key}/cas` (POST) and `/v1/batch` (POST); `kv_ttl.rs` has the TTL routes.
//!
//! Keys are one path segment, percent-decoded to bytes (`a%2Fb` is the key `a/b`, `%FF` a
//! byte); values are the raw request and response bodies. Every request resolves a principal
//! and passes [`super::auth::authorize`] before it executes through the embedded client.

use super::AppState;
use super::ConnectionInfo;
use super::auth;
use super::error::ApiError;
use axum::Json;
use axum::body::Body;
use axum::extract::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use ringkv_types::KvOp;
use ringkv_types::{BatchOp, ReadConsistency};
use serde::Deserialize;
use serde_json::json;
use std::time::Instant;

/// The path prefix of a key.
const KV_PREFIX: &str = "/v1/kv/";
/// JSON bodies may carry base64 and escapes: allow this much overhead over the request limit.
const JSON_OVERHEAD_BYTES: usize = 64 << 10;

/// Query parameters of the key routes (unknown ones are a 400, so a typo is never ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvParams {
    pub(super) consistency: Option<String>,
    pub(super) namespace: Option<String>,
    /// `PUT` only: time to live in seconds.
    pub(super) ttl: Option<u64>,
}

/// The operation label of a request (metrics, logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Get,
    Head,
    Put,
    Delete,
    Cas,
    Batch,
    BatchGet,
    Scan,
    Ttl,
    Persist,
    Watch,
}

impl Op {
    pub(super) fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Head => "head",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Cas => "cas",
            Op::Batch => "batch",
            Op::BatchGet => "batch_get",
            Op::Scan => "scan",
            Op::Ttl => "ttl",
            Op::Persist => "persist",
            Op::Watch => "watch",
        }
    }
}

/// The query parameters of a route other than `PUT /v1/kv/{key}` (which alone takes `ttl`).
pub(super) fn params(query: Result<Query<KvParams>, QueryRejection>) -> Result<KvParams, ApiError> {
    let params = put_params(query)?;
    if params.ttl.is_some() {
        return Err(ApiError::bad_request(
            "ttl applies to PUT /v1/kv/{key} only",
        ));
    }
    Ok(params)
}

fn put_params(query: Result<Query<KvParams>, QueryRejection>) -> Result<KvParams, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::bad_request(format!("query: {}", rejection.body_text())))
}

pub(super) fn consistency(params: &KvParams) -> Result<ReadConsistency, ApiError> {
    parse_consistency(params.consistency.as_deref())
}

/// A `consistency` parameter (`linearizable` when absent).
pub(super) fn parse_consistency(name: Option<&str>) -> Result<ReadConsistency, ApiError> {
    match name {
        None | Some("linearizable") => Ok(ReadConsistency::Linearizable),
        Some("lease") => Ok(ReadConsistency::Lease),
        Some("stale") => Ok(ReadConsistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency `{other}` is not one of linearizable, lease, stale"
        ))),
    }
}

/// The key of `/v1/kv/{key}` or `/v1/kv/{key}/cas`, percent-decoded.
pub(super) fn key_of(uri: &Uri, suffix: &str) -> Result<Bytes, ApiError> {
    let segment = uri
        .path()
        .strip_prefix(KV_PREFIX)
        .and_then(|rest| rest.strip_suffix(suffix))
        .ok_or_else(|| ApiError::bad_request("no key in the path"))?;
    let key: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    Ok(Bytes::from(key))
}

/// Who asks, in which namespace: resolved before any key route executes.
pub(super) struct Caller {
    principal: crate::auth::Principal,
    /// The namespace the request's keys live in (`None`: raw keys, admins only).
    pub(super) namespace: Option<String>,
}

impl Caller {
    pub(super) fn resolve(
        state: &AppState,
        headers: &HeaderMap,
        connection: Option<&Extension<ConnectionInfo>>,
        params: &KvParams,
    ) -> Result<Self, ApiError> {
        Self::resolve_in(state, headers, connection, params.namespace.as_deref())
    }

    /// Resolves the principal and the namespace (`requested`, else the user's own).
    pub(super) fn resolve_in(
        state: &AppState,
        headers: &HeaderMap,
        connection: Option<&Extension<ConnectionInfo>>,
        requested: Option<&str>,
    ) -> Result<Self, ApiError> {
        let principal =
            auth::principal(&state.inner.authenticator, headers, &auth::peer(connection))?;
        let namespace = auth::namespace_of(&principal, requested)?;
        Ok(Self {
            principal,
            namespace,
        })
    }

    /// The wire key of a key of the request.
    pub(super) fn key(&self, key: Bytes) -> Result<Bytes, ApiError> {
        auth::wire_key(self.namespace.as_deref(), key)
    }

    /// A wire key of the answer as the caller knows it: without the namespace.
    pub(super) fn user_key(&self, wire: Bytes) -> Bytes {
        let strip = self.namespace.as_ref().map_or(0, |ns| 1 + ns.len());
        wire.slice(strip.min(wire.len())..)
    }

    /// The one check in front of every key route: may the caller do `op`?
    pub(super) fn authorize(&self, op: KvOp) -> Result<(), ApiError> {
        auth::authorize_kv(&self.principal, op)
    }
}

/// A body over its limit is read and dropped up to this many bytes before the 413 answer, so
/// the client sees the answer instead of a reset connection; beyond it the connection closes.
const DRAIN_BYTES_MAX: u64 = 16 << 20;

/// Reads and drops what is left of `body`, at most [`DRAIN_BYTES_MAX`] bytes.
async fn drain(body: Body) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    let mut drained = 0u64;
    while drained <= DRAIN_BYTES_MAX {
        match body.frame().await {
            Some(Ok(frame)) => {
                drained += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            _ => return,
        }
    }
}

/// `checked` (what a route with a body decides before reading it: query, key, caller) with the
/// body to read next; on a refusal the body is read and dropped first (at most
/// [`DRAIN_BYTES_MAX`] bytes). Answering an HTTP/2 request before its body arrived ends the
/// stream with a reset, and curl then reports "Stream error in the HTTP/2 framing layer" instead
/// of the answer (seen with a bad `?ttl=`).
pub(super) async fn before_body<T>(
    checked: Result<T, ApiError>,
    body: Body,
) -> Result<(T, Body), ApiError> {
    match checked {
        Ok(value) => Ok((value, body)),
        Err(error) => {
            drain(body).await;
            Err(error)
        }
    }
}

/// Reads a body of at most `limit` bytes (413 beyond, checked against `Content-Length` first).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit as u64) {
        if length <= DRAIN_BYTES_MAX {
            drain(body).await;
        }
        return Err(ApiError::too_large(format!(
            "body of {length} bytes exceeds the limit of {limit}"
        )));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(
            format!("body exceeds the limit of {limit} bytes"),
        )),
        Err(error) => Err(ApiError::bad_request(format!(
            "cannot read the body: {error}"
        ))),
    }
}

/// Runs one request and records it (metrics, result label).
pub(super) async fn finish(
    state: &AppState,
    op: Op,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    let started = Instant::now();
    let result = work.await;
    let (response, result_label) = match result {
        Ok(response) => (response, "ok"),
        Err(error) => {
            let label = error.result_label();
            (error.into_response(), label)
        }
    };
    state.record(op, result_label, started.elapsed());
    response
}

/// The response header carrying a key's version (the log index of its last write).
pub(super) const VERSION_HEADER: &str = "ringkv-version";

fn version_header(version: u64) -> (header::HeaderName, HeaderValue) {
    (
        header::HeaderName::from_static(VERSION_HEADER),
        HeaderValue::from(version),
    )
}

/// `GET /v1/kv/{key}`: 200 with the value (its version in `ringkv-version`), 404 when absent.
pub(super) async fn get(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Get, async {
        let params = params(query)?;
        let key = key_of(&uri, "")?;
        let consistency = consistency(&params)?;
        let caller = Caller::resolve(&state, &headers, connection.as_ref(), &params)?;
        let key = caller.key(key)?;
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
pub(super) async fn head(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Head, async {
        let params = params(query)?;
        let key = key_of(&uri, "")?;
        let consistency = consistency(&params)?;
        let caller = Caller::resolve(&state, &headers, connection.as_ref(), &params)?;
        let key = caller.key(key)?;
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
            if params.consistency.is_some() {
                return Err(ApiError::bad_request("consistency applies to reads only"));
            }
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
pub(super) async fn delete(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
) -> Response {
    finish(&state, Op::Delete, async {
        let params = params(query)?;
        if params.consistency.is_some() {
            return Err(ApiError::bad_request("consistency applies to reads only"));
        }
        let key = key_of(&uri, "")?;
        let caller = Caller::resolve(&state, &headers, connection.as_ref(), &params)?;
        let key = caller.key(key)?;
        caller.authorize(KvOp::Delete { key: key.clone() })?;
        let client = state.inner.forwarder.client().await?;
        client.delete(key).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `Some(x)` for a present field (`x` is `None` for JSON `null`), `None` for a missing one.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The body of a compare-and-swap.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    expected_b64: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    new: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    new_b64: Option<Option<String>>,
    /// Compare on the version instead of the value (0 = absent).
    #[serde(default)]
    expected_version: Option<u64>,
}

/// One of `name` (text) or `name_b64` (base64) must be present; `null` means absent.
fn text_or_b64(
    name: &str,
    text: Option<Option<String>>,
    b64: Option<Option<String>>,
) -> Result<Option<Bytes>, ApiError> {
    match (text, b64) {
        (Some(text), None) => Ok(text.map(Bytes::from)),
        (None, Some(b64)) => b64
            .map(|b64| {
                BASE64
                    .decode(b64.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| ApiError::bad_request(format!("{name}_b64 is not base64: {e}")))
            })
            .transpose(),
        (None, None) => Err(ApiError::bad_request(format!(
            "`{name}` (or `{name}_b64`) is required; null means the key is absent"
        ))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "give `{name}` or `{name}_b64`, not both"
        ))),
    }
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))
}

/// A value as JSON: `"text"` when it is UTF-8 (and always `_b64`), `null` when absent.
pub(super) fn value_json(value: Option<&Bytes>) -> (serde_json::Value, serde_json::Value) {
    match value {
        None => (serde_json::Value::Null, serde_json::Value::Null),
        Some(bytes) => (
            std::str::from_utf8(bytes).map_or(serde_json::Value::Null, |text| json!(text)),
            json!(BASE64.encode(bytes)),
        ),
    }
}

/// `POST /v1/kv/{key}/cas` with `{"expected": ..., "new": ...}`: 200 `{"swapped": true}`, or
/// 409 with the current value.
pub(super) async fn cas(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
    body: Body,
) -> Response {
    finish(&state, Op::Cas, async {
        let checked = (|| {
            let params = params(query)?;
            let key = key_of(&uri, "/cas")?;
            let caller = Caller::resolve(&state, &headers, connection.as_ref(), &params)?;
            let key = caller.key(key)?;
            Ok((caller, key))
        })();
        let ((caller, key), body) = before_body(checked, body).await?;
        let limit = state.inner.max_request_bytes * 2 + JSON_OVERHEAD_BYTES;
        let body: CasBody = json_body(&read_body(&headers, body, limit).await?)?;
        let new = text_or_b64("new", body.new, body.new_b64)?;
        if let Some(expected_version) = body.expected_version {
            if body.expected.is_some() || body.expected_b64.is_some() {
                return Err(ApiError::bad_request(
                    "give `expected` (a value) or `expected_version`, not both",
                ));
            }
            return cas_version(&state, &caller, key, expected_version, new).await;
        }
        let expected = text_or_b64("expected", body.expected, body.expected_b64)?;
        caller.authorize(KvOp::CompareAndSwap {
            key: key.clone(),
            expected: expected.clone(),
            new: new.clone(),
        })?;
        let client = state.inner.forwarder.client().await?;
        let outcome = client.compare_and_swap(key, expected, new).await?;
        if outcome.succeeded {
            return Ok(Json(json!({ "swapped": true })).into_response());
        }
        let (current, current_b64) = value_json(outcome.previous.as_ref());
        let body = json!({
            "swapped": false,
            "current": current,
            "current_b64": current_b64,
            "error": {
                "code": "cas_failed",
                "message": "the current value is not the expected one",
            },
        });
        Ok((StatusCode::CONFLICT, Json(body)).into_response())
    })
    .await
}

/// A compare-and-swap on the version: 200 `{"swapped": true, "version": N}`, or 409 with the
/// current value and version.
async fn cas_version(
    state: &AppState,
    caller: &Caller,
    key: Bytes,
    expected_version: u64,
    new: Option<Bytes>,
) -> Result<Response, ApiError> {
    caller.authorize(KvOp::CompareVersionAndSwap {
        key: key.clone(),
        expected_version,
        new: new.clone(),
    })?;
    let client = state.inner.forwarder.client().await?;
    let outcome = client
        .compare_version_and_swap(key, expected_version, new)
        .await?;
    if outcome.succeeded {
        return Ok(Json(json!({ "swapped": true, "version": outcome.index })).into_response());
    }
    let (current, current_b64) = value_json(outcome.previous.as_ref());
    let body = json!({
        "swapped": false,
        "current": current,
        "current_b64": current_b64,
        "current_version": outcome.previous_version,
        "error": {
            "code": "cas_failed",
            "message": "the current version is not the expected one",
        },
    });
    Ok((StatusCode::CONFLICT, Json(body)).into_response())
}

/// One operation of `POST /v1/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOpBody {
    op: String,
    #[serde(default, deserialize_with = "present")]
    key: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    key_b64: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    value_b64: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<BatchOpBody>,
}

fn batch_op(index: usize, body: BatchOpBody) -> Result<BatchOp, ApiError> {
    let at = |e: ApiError| ApiError::bad_request(format!("ops[{index}]: {}", e.message));
    let key = text_or_b64("key", body.key, body.key_b64)
        .map_err(at)?
        .ok_or_else(|| at(ApiError::bad_request("the key must not be null")))?;
    match body.op.as_str() {
        "put" => {
            let value = text_or_b64("value", body.value, body.value_b64)
                .map_err(at)?
                .ok_or_else(|| at(ApiError::bad_request("a put needs a value, not null")))?;
            Ok(BatchOp::Put { key, value })
        }
        "delete" => match (body.value, body.value_b64) {
            (None, None) => Ok(BatchOp::Delete { key }),
            _ => Err(at(ApiError::bad_request("a delete takes no value"))),
        },
        other => Err(at(ApiError::bad_request(format!(
            "op `{other}` is not put or delete"
        )))),
    }
}

/// `POST /v1/batch` with `{"ops": [{"op": "put", "key": ..., "value": ...}, {"op": "delete",
/// "key": ...}]}`: applied atomically (every key in one shard), 204.
pub(super) async fn batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
    body: Body,
) -> Response {
    finish(&state, Op::Batch, async {
        let checked = (|| {
            let params = params(query)?;
            if params.consistency.is_some() {
                return Err(ApiError::bad_request("consistency applies to reads only"));
            }
            Caller::resolve(&state, &headers, connection.as_ref(), &params)
        })();
        let (caller, body) = before_body(checked, body).await?;
        let limit = state.inner.max_request_bytes * 2 + JSON_OVERHEAD_BYTES;
        let body: BatchBody = json_body(&read_body(&headers, body, limit).await?)?;
        let ops = body
            .ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| {
                Ok(match batch_op(index, op)? {
                    BatchOp::Put { key, value } => BatchOp::Put {
                        key: caller.key(key)?,
                        value,
                    },
                    BatchOp::Delete { key } => BatchOp::Delete {
                        key: caller.key(key)?,
                    },
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        caller.authorize(KvOp::Batch { ops: ops.clone() })?;
        let client = state.inner.forwarder.client().await?;
        client.batch(ops).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[cfg(test)]
#[path = "kv_test.rs"]
mod tests;
