//! `tonic::Status` with rich details (google.rpc error details), built the same way everywhere.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// INVALID_ARGUMENT naming the offending field (a `BadRequest` field violation).
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        details,
    )
}

/// RESOURCE_EXHAUSTED telling the client when to retry (a `RetryInfo`).
pub fn overloaded(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

/// The field violations of a status, as (field, description) pairs: for clients and tests.
pub fn field_violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// The retry delay a status asks for, if any.
pub fn retry_after(status: &Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive_the_round_trip() {
        let s = invalid_field("conversation.turns", "must not be empty");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            field_violations(&s),
            [(
                "conversation.turns".to_string(),
                "must not be empty".to_string()
            )]
        );
        let s = overloaded("busy", Duration::from_millis(250));
        assert_eq!(retry_after(&s), Some(Duration::from_millis(250)));
    }
}
