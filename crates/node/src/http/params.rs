//! What a key route reads from its URI: the key (one percent-decoded path segment) and the
//! query parameters (`consistency`, `namespace`, and `ttl` on a put), unknown ones refused.

use super::error::ApiError;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::Uri;
use bytes::Bytes;
use ringkv_types::ReadConsistency;
use serde::Deserialize;

/// The path prefix of a key.
const KV_PREFIX: &str = "/v1/kv/";

/// Query parameters of the key routes (unknown ones are a 400, so a typo is never ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KvParams {
    pub(super) consistency: Option<String>,
    pub(super) namespace: Option<String>,
    /// `PUT` only: time to live in seconds.
    pub(super) ttl: Option<u64>,
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

/// The query parameters of `PUT /v1/kv/{key}` (`ttl` allowed).
pub(super) fn put_params(
    query: Result<Query<KvParams>, QueryRejection>,
) -> Result<KvParams, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| ApiError::bad_request(format!("query: {}", rejection.body_text())))
}

/// The `consistency` parameter of a read (`linearizable` when absent).
pub(super) fn consistency(params: &KvParams) -> Result<ReadConsistency, ApiError> {
    parse_consistency(params.consistency.as_deref())
}

/// Refuses `consistency` on a write route (it applies to reads only).
pub(super) fn writes_only(params: &KvParams) -> Result<(), ApiError> {
    match params.consistency {
        Some(_) => Err(ApiError::bad_request("consistency applies to reads only")),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded_bytes() {
        let cases: [(&str, &str, Option<&[u8]>); 5] = [
            ("/v1/kv/hello", "", Some(b"hello")),
            ("/v1/kv/a%2Fb", "", Some(b"a/b")),
            ("/v1/kv/%FF%00x", "", Some(b"\xff\x00x")),
            ("/v1/kv/k%20v/cas", "/cas", Some(b"k v")),
            ("/v1/kv/", "", None),
        ];
        for (path, suffix, expected) in cases {
            let uri: Uri = path.parse().unwrap();
            let got = key_of(&uri, suffix).ok();
            assert_eq!(got.as_deref(), expected, "{path}");
        }
    }

    #[test]
    fn consistency_names_are_checked() {
        for (name, expected) in [
            (None, Some(ReadConsistency::Linearizable)),
            (Some("stale"), Some(ReadConsistency::Stale)),
            (Some("lease"), Some(ReadConsistency::Lease)),
            (Some("strong"), None),
        ] {
            let params = KvParams {
                consistency: name.map(str::to_string),
                namespace: None,
                ttl: None,
            };
            assert_eq!(consistency(&params).ok(), expected, "{name:?}");
        }
    }
}
