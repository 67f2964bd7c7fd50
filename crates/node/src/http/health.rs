//! `GET /livez` and `GET /readyz`.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
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

/// The Prometheus text exposition of the node's metrics.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // Collectors read /proc and walk the data dir: off the async workers.
    let metrics = state.inner.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode the metrics",
        )
        .into_response(),
    }
}
