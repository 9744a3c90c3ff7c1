//! The schema and its migrations, one text for both backends: `{int}` and `{blob}` are the
//! types that differ (SQLite's INTEGER is 64-bit, PostgreSQL's is not), and `{rowid}` gives
//! PostgreSQL the insertion-order key that SQLite tables have by themselves.
//!
//! The version is the number of migrations applied: SQLite keeps it in `PRAGMA user_version`
//! (as every gateway before PostgreSQL did), PostgreSQL in the `schema_version` table. Each
//! gateway applies what its database lacks at start-up; on PostgreSQL, under an advisory lock,
//! so two gateways starting at once do not both apply a migration.

use anyhow::Context as _;
use sqlx::{Any, AnyPool, Transaction};

use super::Backend;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    state {int} NOT NULL,
    config {blob} NOT NULL,          -- arf.v1.RunConfig, protobuf
    create_time_ms {int} NOT NULL,
    end_time_ms {int},
    error TEXT NOT NULL DEFAULT '',
    current_stage {int} NOT NULL DEFAULT 0,
    training_job_id TEXT NOT NULL DEFAULT '',
    student_model_dir TEXT NOT NULL DEFAULT '',
    training_event_seq {int} NOT NULL DEFAULT 0  -- last training job event relayed
);
CREATE TABLE IF NOT EXISTS items (
    {rowid}
    run_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    line {int} NOT NULL,
    split TEXT NOT NULL,             -- 'train' or 'holdout'
    conversation TEXT NOT NULL,      -- JSON of the dataset Conversation
    teacher_summary TEXT NOT NULL,
    refs TEXT NOT NULL,              -- JSON array of human reference summaries
    analysis {blob},                 -- arf.v1.AnalyzeResponse of the teacher summary
    flagged {int},                   -- 1 when the teacher summary has findings
    revision_outcome TEXT,           -- 'accepted', 'repaired', 'rejected', 'clean', 'failed'
    final_summary TEXT,
    revision_rounds {int},
    revised_analysis {blob},
    evaluation TEXT,                 -- JSON of the item's evaluation
    trace_parent TEXT,               -- W3C traceparent of the item's trace, kept across stages
    PRIMARY KEY (run_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS items_by_line ON items (run_id, line);
CREATE TABLE IF NOT EXISTS bad_rows (
    run_id TEXT NOT NULL,
    line {int} NOT NULL,
    field TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq {int} NOT NULL,
    event {blob} NOT NULL,           -- arf.v1.RunEvent, protobuf
    PRIMARY KEY (run_id, seq)
);
";

/// Changes to the schema above, in order.
const MIGRATIONS: [&str; 9] = [
    // 1: teacher summaries written by the Generate stage; the unrevised student.
    "ALTER TABLE items ADD COLUMN needs_summary {int} NOT NULL DEFAULT 0;  -- arrived without one
     ALTER TABLE items ADD COLUMN teacher_input_tokens {int};             -- set by Generate
     ALTER TABLE items ADD COLUMN teacher_output_tokens {int};
     ALTER TABLE items ADD COLUMN teacher_ms {int};
     ALTER TABLE runs ADD COLUMN baseline_job_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN baseline_model_dir TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN baseline_event_seq {int} NOT NULL DEFAULT 0;",
    // 2: failed analyses counted per stage (items analyzed before it count as not failed).
    "ALTER TABLE items ADD COLUMN analysis_failed {int} NOT NULL DEFAULT 0;",
    // 3: rows the teacher could not summarize (why), which the later stages skip.
    "ALTER TABLE items ADD COLUMN generation_error TEXT;",
    // 4: runs leased by one gateway at a time (leases.rs); a cancel asked of another gateway.
    "ALTER TABLE runs ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN lease_expires_ms {int} NOT NULL DEFAULT 0;
     ALTER TABLE runs ADD COLUMN cancel_requested {int} NOT NULL DEFAULT 0;
     CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, lease_expires_ms);",
    // 5: the run's last event number, so an append takes its number, the lease check and the
    // run's lock in one statement.
    "ALTER TABLE runs ADD COLUMN last_event_seq {int} NOT NULL DEFAULT 0;
     UPDATE runs SET last_event_seq = COALESCE((SELECT MAX(seq) FROM events WHERE events.run_id = runs.id), 0);",
    // 6: the filter-only and oracle students of a comparison.
    "ALTER TABLE runs ADD COLUMN filter_job_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN filter_model_dir TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN filter_event_seq {int} NOT NULL DEFAULT 0;
     ALTER TABLE runs ADD COLUMN oracle_job_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN oracle_model_dir TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN oracle_event_seq {int} NOT NULL DEFAULT 0;",
    // 7: fencing tokens: each claim of a run's lease takes the next number, and every write
    // carries the number its gateway claimed (leases.rs).
    "ALTER TABLE runs ADD COLUMN lease_epoch {int} NOT NULL DEFAULT 0;",
    // 8: personal data a `privacy: SCRUB_PII` run replaced while its rows were stored, per kind.
    "CREATE TABLE IF NOT EXISTS pii_scrubbed (
         run_id TEXT NOT NULL,
         kind TEXT NOT NULL,
         spans {int} NOT NULL,
         PRIMARY KEY (run_id, kind)
     );",
    // 9: the candidates an accepted revision beat (JSON), each a preference pair for DPO.
    "ALTER TABLE items ADD COLUMN losing_candidates TEXT;",
];

/// The schema version this gateway writes.
pub const VERSION: usize = MIGRATIONS.len();

/// `sql` in `backend`'s types.
fn render(sql: &str, backend: Backend) -> String {
    let (int, blob, rowid) = match backend {
        Backend::Sqlite => ("INTEGER", "BLOB", ""),
        Backend::Postgres => (
            "BIGINT",
            "BYTEA",
            "rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,",
        ),
    };
    sql.replace("{int}", int)
        .replace("{blob}", blob)
        .replace("{rowid}", rowid)
}

/// The statements of a script, one at a time (a prepared statement holds one).
fn statements(script: &str) -> impl Iterator<Item = &str> {
    script.split(';').filter(|s| {
        s.lines()
            .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
    })
}

async fn run_script(
    tx: &mut Transaction<'_, Any>,
    script: &str,
    backend: Backend,
) -> anyhow::Result<()> {
    let script = render(script, backend);
    for statement in statements(&script) {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Creates the schema where it is missing and applies the migrations the database has not had,
/// each in its own transaction with the version it brings.
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> anyhow::Result<()> {
    let mut tx = begin_migration(pool, backend).await?;
    if backend == Backend::Postgres {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
    }
    run_script(&mut tx, SCHEMA, backend)
        .await
        .context("creating the schema")?;
    let version = version(&mut tx, backend).await?;
    anyhow::ensure!(
        version <= VERSION,
        "the database has schema version {version}, newer than this gateway's {VERSION}: upgrade \
         the gateway"
    );
    for (i, script) in MIGRATIONS.iter().enumerate().skip(version) {
        run_script(&mut tx, script, backend)
            .await
            .with_context(|| format!("applying schema migration {}", i + 1))?;
        set_version(&mut tx, backend, i + 1).await?;
        tx.commit().await?;
        tx = begin_migration(pool, backend).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// A transaction that, on PostgreSQL, holds the migration lock to its end: one gateway
/// migrates, the others wait for it.
async fn begin_migration(
    pool: &AnyPool,
    backend: Backend,
) -> anyhow::Result<Transaction<'static, Any>> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(727365)")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

async fn version(tx: &mut Transaction<'_, Any>, backend: Backend) -> anyhow::Result<usize> {
    let sql = match backend {
        Backend::Sqlite => "PRAGMA user_version",
        Backend::Postgres => "SELECT COALESCE(MAX(version), 0) FROM schema_version",
    };
    let version: i64 = sqlx::query_scalar(sql).fetch_one(&mut **tx).await?;
    Ok(version.max(0) as usize)
}

async fn set_version(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    version: usize,
) -> anyhow::Result<()> {
    match backend {
        // PRAGMA takes no parameters; the number is ours.
        Backend::Sqlite => {
            sqlx::query(&format!("PRAGMA user_version = {version}"))
                .execute(&mut **tx)
                .await?;
        }
        Backend::Postgres => {
            sqlx::query("DELETE FROM schema_version")
                .execute(&mut **tx)
                .await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(version as i64)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The schema version of the store.
#[cfg(test)]
async fn current_version(pool: &AnyPool, backend: Backend) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let v = version(&mut tx, backend).await?;
    tx.commit().await?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    /// Both backends end at this gateway's version, opening again changes nothing, and a
    /// database from a newer gateway is refused rather than written with an older schema.
    #[tokio::test]
    async fn both_backends_migrate_to_the_current_version_once() {
        for (_db, store) in testing::stores().await {
            let (pool, backend) = (&store.pool, store.backend);
            assert_eq!(current_version(pool, backend).await.unwrap(), VERSION);
            migrate(pool, backend).await.unwrap();
            assert_eq!(current_version(pool, backend).await.unwrap(), VERSION);
            let mut tx = pool.begin().await.unwrap();
            set_version(&mut tx, backend, VERSION + 1).await.unwrap();
            tx.commit().await.unwrap();
            let err = migrate(pool, backend).await.unwrap_err().to_string();
            assert!(
                err.contains("newer than this gateway's"),
                "{backend:?}: {err}"
            );
        }
    }

    /// A database written by the last SQLite-only gateway (schema version 3) gains the leases,
    /// the event numbers it already has and the comparison arms' columns.
    #[tokio::test]
    async fn a_version_3_sqlite_database_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arf.sqlite3");
        {
            let store = crate::store::Store::open(&path).await.unwrap();
            store
                .create_run("old", "old", &arf_proto::v1::RunConfig::default())
                .await
                .unwrap();
            for _ in 0..3 {
                store
                    .append_event("old", arf_proto::v1::run_event::Kind::Warning("w".into()))
                    .await
                    .unwrap();
            }
            let mut tx = store.pool.begin().await.unwrap();
            for statement in [
                "DROP INDEX runs_by_state",
                "ALTER TABLE runs DROP COLUMN last_event_seq",
                "ALTER TABLE runs DROP COLUMN lease_owner",
                "ALTER TABLE runs DROP COLUMN lease_expires_ms",
                "ALTER TABLE runs DROP COLUMN cancel_requested",
                "ALTER TABLE runs DROP COLUMN filter_job_id",
                "ALTER TABLE runs DROP COLUMN filter_model_dir",
                "ALTER TABLE runs DROP COLUMN filter_event_seq",
                "ALTER TABLE runs DROP COLUMN oracle_job_id",
                "ALTER TABLE runs DROP COLUMN oracle_model_dir",
                "ALTER TABLE runs DROP COLUMN oracle_event_seq",
                "ALTER TABLE runs DROP COLUMN lease_epoch",
                "ALTER TABLE items DROP COLUMN losing_candidates",
                "PRAGMA user_version = 3",
            ] {
                sqlx::query(statement).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        let store = crate::store::Store::open(&path).await.unwrap();
        assert_eq!(
            current_version(&store.pool, store.backend).await.unwrap(),
            VERSION
        );
        // As the gateway does at start-up: the runs left unfinished are its own again.
        assert_eq!(store.claim_runs(8, true).await.unwrap().len(), 1);
        let next = store
            .append_event("old", arf_proto::v1::run_event::Kind::Warning("w".into()))
            .await
            .unwrap();
        assert_eq!(next.sequence, 4, "numbered after the events it had");
    }
}
