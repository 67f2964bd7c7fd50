//! `GET /livez` and `GET /readyz`.

use super::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

/// 200 while the process serves HTTP at all.
pub(super) async fn livez() -> impl IntoResponse {
    Json(json!({ "live": true }))
}

/// 200 when the node is joined, its shard map is fresh and every local group knows a leader;
/// 503 with the reasons otherwise.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.inner.health.latest();
    let reasons = snapshot.not_ready_reasons();
    let status = match reasons.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "health": snapshot,
    });
    (status, Json(body))
}
