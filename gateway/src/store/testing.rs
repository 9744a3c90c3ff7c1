//! The store's tests run on both backends: SQLite in a temporary folder, and PostgreSQL when
//! `ARF_TEST_POSTGRES` names a server (`scripts/with-postgres.sh` starts a private one; CI
//! runs every test under it). Each test gets a database of its own on that server.

use super::{DEFAULT_LEASE, Store, StoreLocation};

/// What keeps a test's database alive: its SQLite folder (PostgreSQL databases are left to
/// the private server, which is thrown away after the tests).
pub(crate) enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] String),
}

/// One store per backend available, each empty.
pub(crate) async fn stores() -> Vec<(TestDb, Store)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("arf.sqlite3")).await.unwrap();
    let mut stores = vec![(TestDb::Sqlite(dir), sqlite)];
    if let Some(url) = postgres_database().await {
        let location = StoreLocation::Postgres(url.clone());
        let store = Store::connect(&location, "test-gateway", DEFAULT_LEASE)
            .await
            .unwrap();
        stores.push((TestDb::Postgres(url), store));
    }
    stores
}

/// A new, empty database on the test server, or `None` when there is no server (unless
/// `ARF_REQUIRE_POSTGRES` is set, as under `scripts/with-postgres.sh`: then it fails).
pub(crate) async fn postgres_database() -> Option<String> {
    let Ok(server) = std::env::var("ARF_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("ARF_REQUIRE_POSTGRES").is_none(),
            "ARF_REQUIRE_POSTGRES is set but ARF_TEST_POSTGRES names no server"
        );
        eprintln!(
            "NOTE: PostgreSQL half skipped: no ARF_TEST_POSTGRES (run under scripts/with-postgres.sh)"
        );
        return None;
    };
    Some(super::fresh_database(&server).await.unwrap())
}
