//! API errors: one JSON shape, `{"error":{"code":"...","message":"..."}}`, and the mapping from
//! the smart client's errors to HTTP statuses. Bad input is always a 4xx, never a 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ringkv_types::WireError;
use serde_json::json;

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `too_large`, ...).
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: the key does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: a key, value, batch or body over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 503: the cluster cannot serve the request now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The label of the status class for metrics (`ok` is never an error).
    pub fn result_label(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<WireError> for ApiError {
    fn from(error: WireError) -> Self {
        let message = error.to_string();
        match error {
            WireError::KeyTooLarge { .. }
            | WireError::ValueTooLarge { .. }
            | WireError::BatchTooLarge { .. }
            | WireError::RequestTooLarge { .. } => Self::too_large(message),
            WireError::InvalidRequest { .. } => Self::bad_request(message),
            WireError::Unauthenticated { .. } => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            }
            WireError::PermissionDenied { .. } => {
                Self::new(StatusCode::FORBIDDEN, "permission_denied", message)
            }
            WireError::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message),
            // etcd answers its space alarm the same way: the server cannot store more.
            WireError::NoSpace { .. } => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "no_space", message)
            }
            WireError::Timeout => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
            // Routing answers, elections, a failing replica: the client retried until its
            // budget ran out; the cluster cannot serve this key right now.
            _ => Self::unavailable(message),
        }
    }
}

impl From<ringkv_client::Error> for ApiError {
    fn from(error: ringkv_client::Error) -> Self {
        use ringkv_client::Error as E;
        let message = error.to_string();
        match error {
            E::Server(wire) => wire.into(),
            E::Exhausted { last, .. } => {
                let mut mapped = ApiError::from(*last);
                // Keep the status and code of the last failure, with the whole story.
                mapped.message = message;
                if mapped.status == StatusCode::SERVICE_UNAVAILABLE && message_says_timeout(&mapped)
                {
                    mapped.status = StatusCode::GATEWAY_TIMEOUT;
                    mapped.code = "timeout";
                }
                mapped
            }
            E::CrossShardBatch { .. } | E::EmptyBatch => Self::bad_request(message),
            E::Transport { source, .. } if source.is_retryable() => Self::unavailable(message),
            E::NoShardMap { .. } | E::NoPdLeader { .. } | E::UnknownNode { .. } => {
                Self::unavailable(message)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

/// Whether a client's exhausted budget ended on a timed-out attempt.
fn message_says_timeout(error: &ApiError) -> bool {
    error.message.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_refusals_are_client_errors_and_overload_is_429() {
        let cases = [
            (WireError::KeyTooLarge { size: 9, max: 4 }, 413),
            (WireError::ValueTooLarge { size: 9, max: 4 }, 413),
            (WireError::BatchTooLarge { count: 9, max: 4 }, 413),
            (WireError::RequestTooLarge { size: 9, max: 4 }, 413),
            (WireError::InvalidRequest { reason: "x".into() }, 400),
            (WireError::Busy, 429),
            (WireError::Timeout, 504),
            (WireError::Unavailable, 503),
            (
                WireError::NoSpace {
                    node: ringkv_types::NodeId(1),
                    free_bytes: 1,
                    reserve_bytes: 2,
                },
                507,
            ),
        ];
        for (wire, status) in cases {
            let text = wire.to_string();
            assert_eq!(ApiError::from(wire).status.as_u16(), status, "{text}");
        }
        let exhausted = ringkv_client::Error::Exhausted {
            attempts: 3,
            elapsed_ms: 10,
            last: Box::new(ringkv_client::Error::Server(WireError::Busy)),
        };
        let mapped = ApiError::from(exhausted);
        assert_eq!(mapped.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(mapped.message.contains("3 attempts"), "{}", mapped.message);
        assert_eq!(
            ApiError::from(ringkv_client::Error::EmptyBatch).status,
            StatusCode::BAD_REQUEST
        );
    }
}
