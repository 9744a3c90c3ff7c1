//! What an upstream's HTTP answer means for the editor's callers, decided once: the gateway's
//! fault policy then reads the gRPC status the editor maps it to (`grpc.rs::to_status`).
//!
//! | upstream | editor error | gRPC | gateway |
//! | --- | --- | --- | --- |
//! | 429, 503 | `UpstreamBusy` (Retry-After kept) | RESOURCE_EXHAUSTED + RetryInfo | waits, retries |
//! | 401, 403 | `UpstreamDenied` | PERMISSION_DENIED | fails the run, saying why |
//! | 400, 413, 422 | `InvalidField` | INVALID_ARGUMENT | fails the item |
//! | 404 | `Unsupported` (no such model or path) | UNIMPLEMENTED | fails the run |
//! | other 5xx | `Engine` | INTERNAL | fails the item; five in a row fail the run |
//! | connection refused, DNS, TLS | `UpstreamUnreachable` | UNAVAILABLE | waits, retries |

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::EditorError;

/// How long a 429 or 503 without Retry-After is waited out.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A Retry-After longer than this is capped: the gateway keeps its own backoff beyond it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// At most this much of an upstream's error message is passed on.
const MAX_MESSAGE_CHARS: usize = 500;

/// The error an HTTP failure status stands for; `body` is the upstream's answer.
pub fn from_status(status: StatusCode, headers: &HeaderMap, body: &str) -> EditorError {
    let message = format!("HTTP {}: {}", status.as_u16(), message_of(body));
    match status.as_u16() {
        429 | 503 => EditorError::UpstreamBusy {
            message,
            retry_after: retry_after(headers),
        },
        401 | 403 => EditorError::UpstreamDenied(message),
        400 | 413 | 422 => EditorError::invalid(
            "messages",
            format!("the upstream refused the request: {message}"),
        ),
        404 => EditorError::Unsupported(format!(
            "the upstream has no such model or path (check --upstream and --upstream-model): {message}"
        )),
        _ => EditorError::Engine(format!("the upstream failed: {message}")),
    }
}

/// The error a failed request stands for (no HTTP status came back).
pub fn from_transport(error: &reqwest::Error) -> EditorError {
    // The URL is part of reqwest's message; it holds no credentials (the key travels in a header).
    let mut message = error_chain(error);
    if message.contains("certificate") {
        message.push_str(" (an upstream signed by a private CA: --upstream-ca-file CA.pem)");
    }
    if error.is_connect() || error.is_builder() {
        EditorError::UpstreamUnreachable(message)
    } else if error.is_timeout() {
        EditorError::UpstreamBusy {
            message: format!("timed out: {message}"),
            retry_after: DEFAULT_RETRY_AFTER,
        }
    } else {
        EditorError::Engine(format!("the upstream connection failed: {message}"))
    }
}

/// An OpenAI-shaped error body's `error.message` (or the body itself, shortened).
pub fn message_of(body: &str) -> String {
    let parsed: Option<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str().map(str::to_string))
        });
    let text = parsed.unwrap_or_else(|| body.trim().to_string());
    let mut short: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    if short.is_empty() {
        "(no message)".into()
    } else {
        short
    }
}

/// Retry-After in seconds (the form servers send with 429 and 503), capped.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(DEFAULT_RETRY_AFTER, |s| {
            Duration::from_secs_f64(s).min(MAX_RETRY_AFTER)
        })
}

/// The error and its causes in one line ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(retry: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(r) = retry {
            h.insert(RETRY_AFTER, HeaderValue::from_str(r).unwrap());
        }
        h
    }

    #[test]
    fn each_status_means_what_the_fault_policy_expects() {
        let body = r#"{"error": {"message": "slow down", "type": "rate_limit"}}"#;
        match from_status(StatusCode::TOO_MANY_REQUESTS, &headers(Some("7")), body) {
            EditorError::UpstreamBusy {
                message,
                retry_after,
            } => {
                assert_eq!(retry_after, Duration::from_secs(7));
                assert!(message.contains("slow down"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_status(StatusCode::SERVICE_UNAVAILABLE, &headers(None), ""),
            EditorError::UpstreamBusy { retry_after, .. } if retry_after == DEFAULT_RETRY_AFTER
        ));
        assert!(matches!(
            from_status(StatusCode::UNAUTHORIZED, &headers(None), "{}"),
            EditorError::UpstreamDenied(_)
        ));
        assert!(matches!(
            from_status(StatusCode::FORBIDDEN, &headers(None), "{}"),
            EditorError::UpstreamDenied(_)
        ));
        assert!(matches!(
            from_status(StatusCode::BAD_REQUEST, &headers(None), "too long"),
            EditorError::InvalidField { .. }
        ));
        assert!(matches!(
            from_status(StatusCode::NOT_FOUND, &headers(None), ""),
            EditorError::Unsupported(_)
        ));
        assert!(matches!(
            from_status(StatusCode::BAD_GATEWAY, &headers(None), ""),
            EditorError::Engine(_)
        ));
        // A huge Retry-After is capped; a malformed one falls back.
        assert!(matches!(
            from_status(StatusCode::TOO_MANY_REQUESTS, &headers(Some("86400")), ""),
            EditorError::UpstreamBusy { retry_after, .. } if retry_after == MAX_RETRY_AFTER
        ));
        assert!(matches!(
            from_status(StatusCode::TOO_MANY_REQUESTS, &headers(Some("soon")), ""),
            EditorError::UpstreamBusy { retry_after, .. } if retry_after == DEFAULT_RETRY_AFTER
        ));
    }

    #[test]
    fn error_messages_are_read_from_openai_bodies_and_shortened() {
        assert_eq!(
            message_of(r#"{"error": {"message": "bad key"}}"#),
            "bad key"
        );
        assert_eq!(message_of(r#"{"error": "plain"}"#), "plain");
        assert_eq!(message_of("  not json "), "not json");
        assert_eq!(message_of(""), "(no message)");
        let long = "x".repeat(2000);
        assert_eq!(message_of(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
