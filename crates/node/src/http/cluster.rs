//! `GET /v1/cluster/status`, `/v1/cluster/shards`, `/v1/cluster/nodes`: the documents of
//! `ringctl status --json`, `ringctl shards --json` and `ringctl nodes --json`, gathered through
//! the embedded client (any node answers for the whole cluster).

use super::auth;
use super::error::ApiError;
use super::{AppState, ConnectionInfo};
use axum::Json;
use axum::extract::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ringkv_client::views::{self, ClusterStatus};
use ringkv_pd::PdState;
use ringkv_types::{AdminRequest, NodeId, Request};
use serde_json::Value;

/// Checks the caller as the native service would for `request` (what the route reads).
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    connection: Option<&Extension<ConnectionInfo>>,
    request: AdminRequest,
) -> Result<(), ApiError> {
    auth::admit(
        state,
        headers,
        &auth::peer(connection),
        &Request::Admin(request),
    )
    .map(|_| ())
}

/// Every node's status and every shard's leader, term, commit and applied indexes.
pub(super) async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result: Result<Value, ApiError> = async {
        // The routing information every client may read.
        admit(
            &state,
            &headers,
            connection.as_ref(),
            AdminRequest::GetShardMap,
        )?;
        admit(
            &state,
            &headers,
            connection.as_ref(),
            AdminRequest::NodeStatus,
        )?;
        let client = state.inner.forwarder.client().await?.clone();
        Ok(ClusterStatus::collect(&client).await.json())
    }
    .await;
    respond(result)
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(document) => Json(document).into_response(),
        Err(error) => error.into_response(),
    }
}

/// PD's state, which holds the user table: administrators only, as natively; and PD's leader
/// as the embedded client knows it.
async fn pd_state(
    state: &AppState,
    headers: &HeaderMap,
    connection: Option<&Extension<ConnectionInfo>>,
) -> Result<(PdState, Option<NodeId>), ApiError> {
    admit(state, headers, connection, AdminRequest::PdState)?;
    let client = state.inner.forwarder.client().await?;
    let pd = client.pd_state().await?;
    Ok((pd, client.cached_pd_leader()))
}

/// The shard map as PD's leader holds it: arcs, epochs, replicas, leaders, sizes, operators.
pub(super) async fn shards(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result = pd_state(&state, &headers, connection.as_ref())
        .await
        .map(|(pd, _)| views::shards_json(&pd));
    respond(result)
}

/// The nodes PD knows: address, state, replica and leader counts, capacity, last heartbeat.
pub(super) async fn nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionInfo>>,
) -> Response {
    let result = pd_state(&state, &headers, connection.as_ref())
        .await
        .map(|(pd, leader)| views::nodes_json(&pd, leader));
    respond(result)
}
