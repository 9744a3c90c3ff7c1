//! OpenAI-shaped error answers (`{"error": {"message", "type", "param", "code"}}`), one HTTP
//! status per editor error, exhaustively (as `grpc.rs::to_status` is for gRPC).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::EditorError;

/// An error answer: status, OpenAI error type, the offending parameter, and Retry-After.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some(param.to_string()),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: message.to_string(),
            param: None,
            retry_after: None,
        }
    }

    /// The call ran past the server's request timeout.
    pub fn timed_out() -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "timeout",
            message: "the request ran past the server's request timeout (--request-timeout-secs)"
                .into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: message.into(),
            param: Some("model".into()),
            retry_after: None,
        }
    }

    /// The body, also sent as the `error` event of a stream that fails midway.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param,
                         "code": null}})
    }
}

impl From<EditorError> for ApiError {
    fn from(error: EditorError) -> Self {
        let message = error.to_string();
        let (status, kind, param, retry_after) = match &error {
            EditorError::InvalidField { field, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                // The gRPC field names carry a "params." prefix the HTTP body does not have.
                Some(field.trim_start_matches("params.").to_string()),
                None,
            ),
            EditorError::Overloaded { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some(*retry_after),
            ),
            EditorError::UpstreamBusy { retry_after, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                None,
                Some(*retry_after),
            ),
            EditorError::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                None,
                Some(Duration::from_secs(1)),
            ),
            EditorError::Unsupported(_) => {
                (StatusCode::NOT_IMPLEMENTED, "not_implemented", None, None)
            }
            EditorError::UpstreamUnreachable(_) | EditorError::UpstreamDenied(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_error", None, None)
            }
            EditorError::BadOutput(_) | EditorError::Engine(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
        };
        Self {
            status,
            kind,
            message,
            param,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: HTTP's Retry-After has no fractions.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
