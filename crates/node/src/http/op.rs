//! The operation label of an API request and the one place a request ends: its answer is
//! built and it is counted (`ringkv_http_requests_total{op, result}` and its latency).

use super::AppState;
use super::error::ApiError;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// The operation label of a request (metrics, logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Get,
    Head,
    Put,
    Delete,
    Cas,
    Batch,
    BatchGet,
    Scan,
    Ttl,
    Persist,
    Watch,
}

impl Op {
    pub(super) fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Head => "head",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Cas => "cas",
            Op::Batch => "batch",
            Op::BatchGet => "batch_get",
            Op::Scan => "scan",
            Op::Ttl => "ttl",
            Op::Persist => "persist",
            Op::Watch => "watch",
        }
    }
}

/// Runs one request and records it (metrics, result label).
pub(super) async fn finish(
    state: &AppState,
    op: Op,
    work: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    let started = Instant::now();
    let result = work.await;
    let (response, result_label) = match result {
        Ok(response) => (response, "ok"),
        Err(error) => {
            let label = error.result_label();
            (error.into_response(), label)
        }
    };
    state.record(op, result_label, started.elapsed());
    response
}
