//! `POST /v1/kv/{key}/cas`: compare-and-swap on the value or on the version.

use super::AppState;
use super::ConnectionInfo;
use super::body::{
    JSON_OVERHEAD_BYTES, before_body, json_body, present, read_body, text_or_b64, value_json,
};
use super::caller::Caller;
use super::error::ApiError;
use super::op::{Op, finish};
use super::params::{KvParams, key_of, params};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ringkv_types::KvOp;
use serde::Deserialize;
use serde_json::json;

/// The body of a compare-and-swap.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CasBody {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_fields_need_one_form_and_null_means_absent() {
        let body: CasBody = json_body(br#"{"expected": null, "new_b64": "AP8="}"#).unwrap();
        assert_eq!(
            text_or_b64("expected", body.expected, body.expected_b64).unwrap(),
            None
        );
        assert_eq!(
            text_or_b64("new", body.new, body.new_b64).unwrap(),
            Some(Bytes::from_static(b"\x00\xff"))
        );
        let missing: CasBody = json_body(br#"{"new": "x"}"#).unwrap();
        assert!(text_or_b64("expected", missing.expected, missing.expected_b64).is_err());
        assert!(json_body::<CasBody>(br#"{"expect": "x"}"#).is_err());
    }
}
