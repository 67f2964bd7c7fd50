//! Request and response bodies: reading a body within its limit (413 beyond, what is left of it
//! drained first), JSON bodies, and the text-or-base64 fields of keys and values.

use super::error::ApiError;
use axum::body::Body;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

/// JSON bodies may carry base64 and escapes: allow this much overhead over the request limit.
pub(super) const JSON_OVERHEAD_BYTES: usize = 64 << 10;

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

/// `Some(x)` for a present field (`x` is `None` for JSON `null`), `None` for a missing one.
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One of `name` (text) or `name_b64` (base64) must be present; `null` means absent.
pub(super) fn text_or_b64(
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

/// A JSON body as `T` (400 with serde's reason otherwise).
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
