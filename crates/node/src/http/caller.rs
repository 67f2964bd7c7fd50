//! Who asks, in which namespace: the principal and namespace every key route resolves before
//! it executes, and the one authorization check in front of it.

use super::AppState;
use super::ConnectionInfo;
use super::auth;
use super::error::ApiError;
use super::params::{KvParams, consistency, key_of, params, writes_only};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use bytes::Bytes;
use ringkv_types::{KvOp, ReadConsistency};

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

/// What a single-key route without a body starts from, extracted in one piece: the URI (the
/// key is its path segment), the headers (credentials), the TLS connection (client
/// certificate) and the query. [`KeyRoute::read`] and [`KeyRoute::write`] check them in one
/// order for every route.
pub(super) struct KeyRoute {
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
    query: Result<Query<KvParams>, QueryRejection>,
}

impl FromRequestParts<AppState> for KeyRoute {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query = Query::<KvParams>::from_request_parts(parts, state).await;
        Ok(Self {
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            connection: parts
                .extensions
                .get::<ConnectionInfo>()
                .cloned()
                .map(Extension),
            query,
        })
    }
}

impl KeyRoute {
    /// A read of `/v1/kv/{key}{suffix}`: the query, the key, the consistency, then the caller,
    /// in this order (the first failure is the answer).
    pub(super) fn read(
        self,
        state: &AppState,
        suffix: &str,
    ) -> Result<(ReadConsistency, Caller, Bytes), ApiError> {
        let params = params(self.query)?;
        let key = key_of(&self.uri, suffix)?;
        let consistency = consistency(&params)?;
        let caller = Caller::resolve(state, &self.headers, self.connection.as_ref(), &params)?;
        let key = caller.key(key)?;
        Ok((consistency, caller, key))
    }

    /// A write of `/v1/kv/{key}{suffix}` without a body: the query (without `consistency`), the
    /// key, then the caller.
    pub(super) fn write(self, state: &AppState, suffix: &str) -> Result<(Caller, Bytes), ApiError> {
        let params = params(self.query)?;
        writes_only(&params)?;
        let key = key_of(&self.uri, suffix)?;
        let caller = Caller::resolve(state, &self.headers, self.connection.as_ref(), &params)?;
        let key = caller.key(key)?;
        Ok((caller, key))
    }
}
