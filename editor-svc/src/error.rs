//! The editor's errors. `grpc.rs` maps each variant to a `tonic::Status`, exhaustively.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    /// Bad input, naming the offending request field (`conversation.turns`, `params.max_tokens`).
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// More generations in flight than configured: the client should retry later (or elsewhere).
    #[error("the editor is at its limit of {limit} generations in flight")]
    Overloaded { limit: usize, retry_after: Duration },
    /// The model is still loading (health says NOT_SERVING meanwhile).
    #[error("the model is not loaded yet")]
    NotReady,
    /// The model answered, but not with what the request needs (e.g. revision JSON that does not
    /// parse). Reported, never passed on as if it were a result.
    #[error("unusable model output: {0}")]
    BadOutput(String),
    /// The engine failed.
    #[error("generation failed: {0}")]
    Engine(String),
    /// The backend cannot do this at all (Score over an upstream that shows no prompt logprobs).
    #[error("{0}")]
    Unsupported(String),
    /// The upstream server is busy or briefly down (HTTP 429, 503): retry after the delay it
    /// asked for, here or on another replica.
    #[error("the upstream model server is busy: {message}")]
    UpstreamBusy {
        message: String,
        retry_after: Duration,
    },
    /// The upstream server cannot be reached (connection refused, DNS, TLS handshake).
    #[error("the upstream model server cannot be reached: {0}")]
    UpstreamUnreachable(String),
    /// The upstream refused our credentials (HTTP 401, 403): an operator has to act.
    #[error("the upstream model server refused the editor's credentials: {0}")]
    UpstreamDenied(String),
}

impl EditorError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }
}
