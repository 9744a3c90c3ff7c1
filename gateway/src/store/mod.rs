//! Durable state: runs, their items and each item's result per stage, and every run's event
//! log. Stage results are keyed by (run, conversation id), so a gateway that resumes a run
//! picks up exactly the items still pending and never redoes one whose result was committed.
//!
//! Two backends behind one set of queries (sqlx's Any driver; `schema.rs` writes the few
//! types that differ):
//! - embedded SQLite (WAL), the default: one gateway per file, which the file lock enforces;
//! - PostgreSQL (`--store postgres://...`): several gateways share it, and each run is leased
//!   by one of them at a time (`leases.rs`).
//!
//! Every write that belongs to a run's driver is fenced by its lease: a gateway that lost the
//! lease (it stalled past the expiry, and another took the run over) has its write refused
//! with [`LeaseLost`], so an item's result and the run's events are written by one gateway only.

pub mod evaluation;
mod events;
pub mod items;
mod leases;
pub mod location;
pub mod outage;
pub mod outcome;
mod runs;
mod schema;

use std::path::Path;

use anyhow::Context as _;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor as _};

pub use items::{
    ItemRecord, LosingCandidate, NewItem, Pending, PreferencePair, Revised, Split, TeacherUsage,
    TrainingPair,
};
pub use leases::{CancelOutcome, Claimed, LeaseLost, LeaseState};
pub use location::StoreLocation;

/// The SQLite file under the data folder (the default store).
pub const STORE_FILE: &str = "arf.sqlite3";
pub use outcome::{AnalysisOutcome, RevisionOutcome, Unimproved};
pub use runs::{RunRecord, Student, is_final};

/// Which database is behind the store: the few statements that differ ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// This gateway, as the lease holder of the runs it drives.
    owner: String,
    /// How long a lease lasts without a heartbeat, in milliseconds.
    lease_ms: i64,
    /// The fencing token of each run this gateway holds the lease of: the number its claim
    /// took (leases.rs). Every write to the run carries it.
    claims: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Added to this process's clock where the store reads it (tests of a skewed clock; 0).
    clock_skew_ms: i64,
    /// SQLite only, held for the store's life: see [`exclusive_lock`].
    _lock: Option<std::fs::File>,
}

impl Store {
    /// The embedded SQLite database at `path`, for this process alone.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        Self::connect(
            &StoreLocation::Sqlite(path.to_path_buf()),
            "local",
            DEFAULT_LEASE,
        )
        .await
    }

    /// The store at `location`; `owner` names this gateway in the runs' leases (unique among
    /// the gateways sharing a PostgreSQL database), which last `lease` without a heartbeat.
    pub async fn connect(
        location: &StoreLocation,
        owner: &str,
        lease: std::time::Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!owner.is_empty(), "the gateway needs a name for its leases");
        let lease_ms = lease.as_millis().clamp(100, 3_600_000) as i64;
        install_default_drivers();
        let store = match location {
            StoreLocation::Sqlite(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let lock = exclusive_lock(path)?;
                // One connection, as the single gateway's writes are serialized anyway: two
                // would meet SQLite's lock upgrade (SQLITE_BUSY) in read-then-write transactions.
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // NORMAL in WAL mode: a committed transaction survives a process kill
                            // (SIGKILL), which is what resuming runs needs; only an OS crash can
                            // lose the last few.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&location.url())
                    .await
                    .with_context(|| format!("cannot open the database {}", path.display()))?;
                Self {
                    pool,
                    backend: Backend::Sqlite,
                    owner: owner.to_string(),
                    lease_ms,
                    claims: Default::default(),
                    clock_skew_ms: 0,
                    _lock: Some(lock),
                }
            }
            StoreLocation::Postgres(url) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            // A gateway frozen inside a transaction (a VM pause, a stall) holds
                            // its run's row lock, and the others' claims skip locked rows: its
                            // run would wait for it forever. The server ends such a transaction
                            // once it has been idle for a lease, when the frozen gateway has
                            // lost the run anyway (its late writes fail on their fence).
                            conn.execute(
                                format!("SET idle_in_transaction_session_timeout = {lease_ms}")
                                    .as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .with_context(|| {
                        format!("cannot connect to PostgreSQL at {}", location.redacted())
                    })?;
                Self {
                    pool,
                    backend: Backend::Postgres,
                    owner: owner.to_string(),
                    lease_ms,
                    claims: Default::default(),
                    clock_skew_ms: 0,
                    _lock: None,
                }
            }
        };
        schema::migrate(&store.pool, store.backend).await?;
        Ok(store)
    }

    /// Other gateways write to this store too: a watcher cannot count on being woken by this
    /// process, and reads the log again from time to time.
    pub fn is_shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// This gateway's name in the leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// This process's clock, for the times the store records (leases use the database's).
    fn clock_ms(&self) -> i64 {
        now_ms() + self.clock_skew_ms
    }

    /// This store with its process's clock `skew_ms` off (tests of lease timing).
    pub fn with_clock_skew(mut self, skew_ms: i64) -> Self {
        self.clock_skew_ms = skew_ms;
        self
    }
}

/// A new, empty database on the PostgreSQL server at `server_url` (whose path names a database
/// to connect to first), and its URL: for the tests and benches, which each take a fresh one.
pub async fn fresh_database(server_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    install_default_drivers();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "arf_test_{}_{}_{}",
        std::process::id(),
        now_ms(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut admin = sqlx::AnyConnection::connect(server_url)
        .await
        .with_context(|| format!("cannot connect to {}", location::redact(server_url)))?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    admin.close().await?;
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Ok(format!("{server}/{name}{query}"))
}

/// One process per SQLite database: a second gateway on the same file would resume the same runs
/// and do their items twice. The lock is the kernel's (flock), so a killed gateway releases it.
fn exclusive_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another gateway is using {} (it holds {}): two gateways on one SQLite file would both \
             resume the same runs. Give each its own --data-dir, or share a PostgreSQL database \
             (--store postgres://...)",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}

/// How long a statement waits for a PostgreSQL connection. A server that restarts within it is
/// never noticed (the pool reconnects); past it, the store call fails as transient and the run
/// waits the outage out in the open (`pipeline/outages.rs`: backoff, and events that say so)
/// instead of every caller hanging on the pool.
const POOL_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A lease's length when the operator sets none (`--lease-secs`): a gateway that dies is
/// replaced within this, and one that stalls this long loses its runs.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(15);

pub use arf_proto::timestamp_from_millis as timestamp;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Takes a lock; a panic while holding one leaves plain data, still usable.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A count or number read back from the database (always a 64-bit integer in the Any driver).
fn to_u32(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_gateway_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arf.sqlite3");
        let first = Store::open(&path).await.unwrap();
        let err = Store::open(&path)
            .await
            .err()
            .expect("the second open is refused")
            .to_string();
        assert!(err.contains("another gateway is using"), "{err}");
        drop(first);
        Store::open(&path)
            .await
            .expect("free again once the first is gone");
    }
}
