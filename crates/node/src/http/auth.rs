//! The one place every HTTP key and cluster route passes before it executes: who is asking
//! (the same [`Authenticator`] as the native service: a client certificate presented to the
//! HTTPS port, or `Authorization: Bearer <token>`), and may they do this (the same
//! [`crate::auth::authorize`] choke point, on the very request the route will execute).
//!
//! The embedded client forwards with the node's certificate (a node may do everything), so this
//! check is the only one an HTTP request gets: every key and cluster route calls [`admit`]
//! before it executes. `/livez`, `/readyz`, `/metrics` and `/v1/openapi.yaml` need no
//! credentials (probes and scrapers; they carry no keys, values or user names).
//!
//! Keys live in namespaces: `?namespace=NS` when given, else the user's own namespace (its
//! name); administrators and nodes without `?namespace=` address raw keys, as the native client
//! does for `root`.

use super::error::ApiError;
use super::{AppState, ConnectionInfo};
use crate::auth::{Authenticator, Principal};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ringkv_types::{
    AdminRequest, AdminResult, KvOp, KvRequest, PeerIdentity, Request, Secret, ShardId, WireError,
    namespace,
};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The connection's identity (anonymous when unknown, e.g. plain HTTP).
pub(super) fn peer(connection: Option<&Extension<ConnectionInfo>>) -> PeerIdentity {
    connection.map_or(PeerIdentity::Anonymous, |c| c.identity.clone())
}

/// The bearer token of `Authorization`, if any.
fn bearer(headers: &HeaderMap) -> Result<Option<Secret>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("Authorization is not ASCII"))?;
    match text.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(Secret::new(token.trim())))
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authorization must be `Bearer <token>` (POST /v1/auth/token)",
        )),
    }
}

/// Who sent the request: the connection's certificate, or the bearer token.
///
/// # Errors
/// 401 as the native service answers it (no credentials, a bad or expired token, a token on a
/// connection with a certificate, a certificate of an unknown user).
pub(super) fn principal(
    authenticator: &Authenticator,
    headers: &HeaderMap,
    peer: &PeerIdentity,
) -> Result<Principal, ApiError> {
    // Any request does: resolve only unwraps a token around it.
    let probe = Request::Admin(AdminRequest::NodeStatus);
    let request = match bearer(headers)? {
        Some(token) => Request::WithToken {
            token,
            request: Box::new(probe),
        },
        None => probe,
    };
    let (principal, _) = authenticator.resolve(peer, request)?;
    Ok(principal)
}

/// The namespace keys of this request live in: `?namespace=`, else the user's own.
///
/// # Errors
/// 400 for an invalid namespace name.
pub(super) fn namespace_of(
    principal: &Principal,
    requested: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if let Some(name) = requested {
        namespace::validate_name(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        return Ok(Some(name.to_string()));
    }
    Ok(match principal {
        Principal::User {
            name, admin: false, ..
        } => Some(name.clone()),
        _ => None,
    })
}

/// The wire key of `key` in `namespace` (raw without one).
///
/// # Errors
/// 400 when the key cannot be encoded.
pub(super) fn wire_key(namespace: Option<&str>, key: Bytes) -> Result<Bytes, ApiError> {
    match namespace {
        None => Ok(key),
        Some(ns) => namespace::encode(ns, &key).map_err(|e| ApiError::bad_request(e.to_string())),
    }
}

/// Checks `principal` against the native choke point for the key operation `op`.
///
/// # Errors
/// 403 (or 400 for a key a user sent outside any namespace).
pub(super) fn authorize_kv(principal: &Principal, op: KvOp) -> Result<(), ApiError> {
    // Only the operation matters to authorization; routing fields are the client's business.
    let request = Request::Kv(KvRequest {
        shard: ShardId(0),
        epoch: Default::default(),
        session: None,
        timeout_ms: 0,
        op,
    });
    crate::auth::authorize(principal, &request).map_err(ApiError::from)
}

/// Resolves the principal and checks it against the native choke point for `request`.
///
/// # Errors
/// 401 or 403.
pub(super) fn admit(
    state: &AppState,
    headers: &HeaderMap,
    peer: &PeerIdentity,
    request: &Request,
) -> Result<Principal, ApiError> {
    let principal = principal(&state.inner.authenticator, headers, peer)?;
    crate::auth::authorize(&principal, request)?;
    Ok(principal)
}

/// The body of `POST /v1/auth/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    user: String,
    password: String,
}

/// `POST /v1/auth/token` with `{"user", "password"}`: 200 `{"token", "expires_at"}` (seconds
/// since the Unix epoch), 401 for a wrong user or password.
pub(super) async fn login(
    State(state): State<AppState>,
    connection: Option<Extension<ConnectionInfo>>,
    body: axum::body::Bytes,
) -> Response {
    let body: LoginBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => return ApiError::bad_request(format!("JSON body: {error}")).into_response(),
    };
    let remote = connection.as_ref().map(|c| c.peer.ip());
    let peer = peer(connection.as_ref());
    let authenticator: Arc<Authenticator> = state.inner.authenticator.clone();
    let answer = authenticator
        .login(peer, remote, body.user, Secret::new(body.password))
        .await;
    match answer {
        ringkv_types::Response::Admin(AdminResult::Token {
            token,
            expires_at_ms,
        }) => Json(json!({
            "token": token.expose(),
            "expires_at": expires_at_ms / 1000,
        }))
        .into_response(),
        ringkv_types::Response::Error(error) => ApiError::from(error).into_response(),
        _ => ApiError::from(WireError::Internal {
            reason: "unexpected login answer".into(),
        })
        .into_response(),
    }
}
