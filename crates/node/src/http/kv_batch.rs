//! `POST /v1/batch`: puts and deletes applied atomically (every key in one shard).

use super::AppState;
use super::ConnectionInfo;
use super::body::{JSON_OVERHEAD_BYTES, before_body, json_body, present, read_body, text_or_b64};
use super::caller::Caller;
use super::error::ApiError;
use super::op::{Op, finish};
use super::params::{KvParams, params, writes_only};
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ringkv_types::{BatchOp, KvOp};
use serde::Deserialize;

/// One operation of `POST /v1/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchOpBody {
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
/// The body of `POST /v1/batch`.
pub(super) struct BatchBody {
    ops: Vec<BatchOpBody>,
}

/// Operation `index` of a batch body, checked (`ops[index]: ...` on a refusal).
pub(super) fn batch_op(index: usize, body: BatchOpBody) -> Result<BatchOp, ApiError> {
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
            writes_only(&params)?;
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
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn batch_ops_need_a_key_and_puts_a_value() {
        let ops: BatchBody = json_body(
            br#"{"ops": [{"op": "put", "key": "a", "value": "1"}, {"op": "delete", "key_b64": "Yg=="}]}"#,
        )
        .unwrap();
        let ops: Vec<BatchOp> = ops
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| batch_op(i, op).unwrap())
            .collect();
        assert_eq!(
            ops[1],
            BatchOp::Delete {
                key: Bytes::from_static(b"b")
            }
        );
        let bad: BatchBody = json_body(br#"{"ops": [{"op": "put", "key": "a"}]}"#).unwrap();
        let error = batch_op(0, bad.ops.into_iter().next().unwrap()).unwrap_err();
        assert!(error.message.starts_with("ops[0]"), "{}", error.message);
    }
}
