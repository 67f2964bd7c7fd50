//! Who asks, in which namespace: the principal and namespace every key route resolves before
//! it executes, and the one authorization check in front of it.

use super::AppState;
use super::ConnectionInfo;
use super::auth;
use super::error::ApiError;
use super::params::KvParams;
use axum::extract::Extension;
use axum::http::HeaderMap;
use bytes::Bytes;
use ringkv_types::KvOp;

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
