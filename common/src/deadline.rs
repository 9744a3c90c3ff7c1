//! Deadline propagation. tonic does not forward deadlines: the server layer records the
//! incoming call's deadline (from `grpc-timeout`) in a task-local, and the client layer copies
//! the remaining time onto every downstream call made inside that handler.
//!
//! Work spawned onto another task leaves the task-local behind: capture [`current`] and
//! re-enter it with [`scope`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Option<Instant>;
}

/// The deadline of the call being handled, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok().flatten()
}

/// Time left before the current call's deadline (zero once passed).
pub fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Runs `fut` with `deadline` as the current deadline.
pub fn scope<F: Future>(deadline: Option<Instant>, fut: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(deadline, fut)
}

/// Parses a `grpc-timeout` header value ("100m", "5S", ...; gRPC over HTTP/2 spec).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` value (at most 8 digits, so pick the unit).
pub fn format_grpc_timeout(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 100_000_000 {
        format!("{micros}u")
    } else if d.as_millis() < 100_000_000 {
        format!("{}m", d.as_millis())
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_round_trips() {
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(3 * 3600),
            Duration::from_micros(7),
        ] {
            let parsed = parse_grpc_timeout(&format_grpc_timeout(d)).unwrap();
            assert!(
                parsed <= d && d - parsed < Duration::from_millis(1),
                "{d:?} -> {parsed:?}"
            );
        }
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("10x"), None);
    }

    #[tokio::test]
    async fn remaining_is_visible_inside_the_scope_only() {
        assert!(remaining().is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = scope(Some(deadline), async { remaining() }).await.unwrap();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
    }
}
