//! Which store errors are a database blip, to be waited out like a downstream UNAVAILABLE, and
//! which are faults: a lost connection, a pool with no connection to give, a serialization
//! failure or deadlock (the transaction can simply run again), and a server shutting down or
//! starting up are transient; a constraint violation or a bad statement is not.

/// PostgreSQL's SQLSTATEs that mean "try again": serialization failure, deadlock, too many
/// connections, the server shutting down (admin or crash) or not accepting connections yet.
const POSTGRES_TRANSIENT: [&str; 6] = ["40001", "40P01", "53300", "57P01", "57P02", "57P03"];
/// The SQLSTATE class of connection exceptions ("08006: connection failure", ...).
const POSTGRES_CONNECTION_CLASS: &str = "08";
/// SQLite's busy and locked result codes (primary, and the extended ones built on them).
const SQLITE_TRANSIENT: [&str; 5] = ["5", "6", "261", "517", "262"];

/// Whether `error` (or an error it wraps) is a store error that goes away by itself.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .any(is_transient_sqlx)
}

fn is_transient_sqlx(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            POSTGRES_TRANSIENT.contains(&code.as_ref())
                || code.starts_with(POSTGRES_CONNECTION_CLASS)
                || SQLITE_TRANSIENT.contains(&code.as_ref())
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_transient_and_a_bad_statement_is_not() {
        let lost = anyhow::Error::new(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
        .context("saving an item");
        assert!(is_transient(&lost), "{lost:#}");
        assert!(is_transient(&anyhow::Error::new(sqlx::Error::PoolTimedOut)));
        assert!(!is_transient(&anyhow::Error::new(sqlx::Error::RowNotFound)));
        assert!(!is_transient(&anyhow::anyhow!("the editor refused")));
    }

    /// The codes a real server gives, from both backends.
    #[tokio::test]
    async fn a_server_error_is_judged_by_its_code() {
        for (_db, store) in crate::store::testing::stores().await {
            let bad = sqlx::query("SELECT no_such_column FROM runs")
                .execute(&store.pool)
                .await
                .unwrap_err();
            assert!(!is_transient(&bad.into()), "{:?}", store.backend);
            if store.backend == crate::store::Backend::Postgres {
                // The server ends this connection, as a restart ends every one.
                let mut conn = store.pool.acquire().await.unwrap();
                let ended = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                    .execute(&mut *conn)
                    .await
                    .unwrap_err();
                assert!(is_transient(&ended.into()));
            }
        }
    }
}
