//! The one place every HTTP route passes before it executes: who is asking ([`Principal`]),
//! and may they do this ([`authorize`]).
//!
//! Today every caller is [`Principal::Anonymous`] or, with a client certificate of the
//! cluster CA, [`Principal::Certificate`], and everything is allowed: the cluster has no users
//! yet. When the identity work (`ringkv_node::auth`) lands, `resolve` reads
//! `Authorization: Bearer` (and the certificate), `authorize` calls its choke point, and the
//! namespace of `?namespace=` becomes part of the wire key. The embedded client forwards with
//! the node's certificate, so this check is the only one an HTTP request gets: it must stay in
//! front of every route.

use super::error::ApiError;
use axum::http::HeaderMap;

/// Who sent an HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
}

/// What a request wants to do, for [`authorize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read keys.
    Read,
    /// Write keys.
    Write,
    /// Read the cluster's status, shards and nodes.
    ClusterRead,
}

/// The principal of a request.
///
/// # Errors
/// 401 when credentials are present but invalid (once tokens exist).
pub fn resolve(headers: &HeaderMap) -> Result<Principal, ApiError> {
    // No tokens yet: a bearer token cannot be checked, so it must not be silently ignored.
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this cluster has no token authentication yet; send no Authorization header",
        ));
    }
    Ok(Principal::Anonymous)
}

/// Whether `principal` may do `action` (namespace `namespace`, when given).
///
/// # Errors
/// 403 when not granted.
pub fn authorize(
    principal: &Principal,
    action: Action,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let _ = (principal, action);
    match namespace {
        None => Ok(()),
        Some(name) => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "permission_denied",
            format!("namespace `{name}` is not granted (namespaces arrive with users and tokens)"),
        )),
    }
}
