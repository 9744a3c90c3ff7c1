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

/// INTERNAL for a failure the client cannot act on: logged here in full with a fresh request
/// id, answered with only that id (a `RequestInfo`), so no SQL text, file path or stack of
/// the server reaches the caller. An operator finds the details by the id.
pub fn internal_error(what: &str, error: &dyn std::fmt::Display) -> Status {
    let request_id = format!("req-{:016x}", rand_u64());
    tracing::error!(request_id = %request_id, error = %error, "{what}");
    Status::with_error_details(
        Code::Internal,
        format!(
            "internal error in {what} (request id {request_id}: the server's log has the details)"
        ),
        ErrorDetails::with_request_info(request_id, what),
    )
}

/// Unique enough for request ids, without a random-number dependency: the clock, a counter
/// and the process id, mixed.
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The `ErrorInfo` reason of an INTERNAL that is about one item's output, not the server: the
/// model answered, but not with what the request needs (revision JSON cut off at max_tokens,
/// ...). A caller fails that item and goes on; any other INTERNAL is a fault of the server.
pub const UNUSABLE_OUTPUT: &str = "UNUSABLE_OUTPUT";
const DOMAIN: &str = "arf.v1";

/// INTERNAL with the [`UNUSABLE_OUTPUT`] reason.
pub fn unusable_output(message: impl Into<String>) -> Status {
    let message = message.into();
    Status::with_error_details(
        Code::Internal,
        format!("unusable model output: {message}"),
        ErrorDetails::with_error_info(
            UNUSABLE_OUTPUT,
            DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        ),
    )
}

/// The `ErrorInfo` reason of a status from an ARF service, if it has one.
pub fn reason(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|i| i.domain == DOMAIN)
        .map(|i| i.reason)
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
    fn internal_errors_name_a_request_id_and_nothing_else() {
        let s = internal_error(
            "the run store",
            &"no such table: runs (SELECT * FROM runs WHERE id = 'x') in /var/lib/arf/arf.sqlite3",
        );
        assert_eq!(s.code(), Code::Internal);
        assert!(
            !s.message().contains("SELECT") && !s.message().contains("/var/lib"),
            "{}",
            s.message()
        );
        let id = s.get_details_request_info().unwrap().request_id;
        assert!(
            id.starts_with("req-") && s.message().contains(&id),
            "{}",
            s.message()
        );
        assert_ne!(
            id,
            internal_error("x", &"y")
                .get_details_request_info()
                .unwrap()
                .request_id
        );
    }

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
        let s = unusable_output("cut off");
        assert_eq!(reason(&s).as_deref(), Some(UNUSABLE_OUTPUT));
        assert_eq!(reason(&Status::internal("a bug")), None);
        let s = overloaded("busy", Duration::from_millis(250));
        assert_eq!(retry_after(&s), Some(Duration::from_millis(250)));
    }
}
