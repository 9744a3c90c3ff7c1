//! Durable state: an embedded SQLite database (WAL) with runs, their items and each item's
//! result per stage, and every run's event log. Stage results are keyed by
//! (run, conversation id), so a restarted gateway picks up exactly the items still pending and
//! never redoes one whose result was committed.
//!
//! Calls are short (one row or one small batch) and run under a mutex on the async threads;
//! WAL keeps them from waiting on disk flushes of other transactions.

pub mod evaluation;
mod events;
pub mod items;
pub mod outcome;
mod runs;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::Context as _;
use rusqlite::Connection;

pub use items::{ItemRecord, NewItem, Split, TeacherUsage, TrainingPair};
pub use outcome::{AnalysisOutcome, RevisionOutcome, Unimproved};
pub use runs::{RunRecord, Student};

pub struct Store {
    conn: Mutex<Connection>,
    /// Held for the store's life: see [`exclusive_lock`].
    _lock: std::fs::File,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    state INTEGER NOT NULL,
    config BLOB NOT NULL,            -- arf.v1.RunConfig, protobuf
    create_time_ms INTEGER NOT NULL,
    end_time_ms INTEGER,
    error TEXT NOT NULL DEFAULT '',
    current_stage INTEGER NOT NULL DEFAULT 0,
    training_job_id TEXT NOT NULL DEFAULT '',
    student_model_dir TEXT NOT NULL DEFAULT '',
    training_event_seq INTEGER NOT NULL DEFAULT 0  -- last training job event relayed
);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    split TEXT NOT NULL,             -- 'train' or 'holdout'
    conversation TEXT NOT NULL,      -- JSON of the dataset Conversation
    teacher_summary TEXT NOT NULL,
    refs TEXT NOT NULL,              -- JSON array of human reference summaries
    analysis BLOB,                   -- arf.v1.AnalyzeResponse of the teacher summary
    flagged INTEGER,                 -- 1 when the teacher summary has findings
    revision_outcome TEXT,           -- 'accepted', 'rejected', 'clean', 'failed'
    final_summary TEXT,
    revision_rounds INTEGER,
    revised_analysis BLOB,
    evaluation TEXT,                 -- JSON of the item's evaluation
    trace_parent TEXT,               -- W3C traceparent of the item's trace, kept across stages
    PRIMARY KEY (run_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS items_by_line ON items (run_id, line);
CREATE TABLE IF NOT EXISTS bad_rows (
    run_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    field TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,             -- arf.v1.RunEvent, protobuf
    PRIMARY KEY (run_id, seq)
);
";

/// Changes to the schema above, in order; `PRAGMA user_version` records how many a database has
/// had, so a database written by an older gateway is brought up to date at start-up.
const MIGRATIONS: [&str; 3] = [
    // 1: teacher summaries written by the Generate stage; the unrevised student.
    "ALTER TABLE items ADD COLUMN needs_summary INTEGER NOT NULL DEFAULT 0;  -- arrived without one
     ALTER TABLE items ADD COLUMN teacher_input_tokens INTEGER;             -- set by Generate
     ALTER TABLE items ADD COLUMN teacher_output_tokens INTEGER;
     ALTER TABLE items ADD COLUMN teacher_ms INTEGER;
     ALTER TABLE runs ADD COLUMN baseline_job_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN baseline_model_dir TEXT NOT NULL DEFAULT '';
     ALTER TABLE runs ADD COLUMN baseline_event_seq INTEGER NOT NULL DEFAULT 0;",
    // 2: failed analyses counted per stage (items analyzed before it count as not failed).
    "ALTER TABLE items ADD COLUMN analysis_failed INTEGER NOT NULL DEFAULT 0;",
    // 3: rows the teacher could not summarize (why), which the later stages skip.
    "ALTER TABLE items ADD COLUMN generation_error TEXT;",
];

impl Store {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock = exclusive_lock(path)?;
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a committed transaction survives a process kill (SIGKILL), which is
        // what resuming runs needs; only an OS crash can lose the last few.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA).context("creating the schema")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            _lock: lock,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One process per database: a second gateway on the same file would resume the same runs and
/// do their items twice. The lock is the kernel's (flock), so a killed gateway releases it.
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
             resume the same runs. Give each its own --data-dir",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
        }
    }
}

/// Applies the migrations a database has not had yet, each in its own transaction.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    anyhow::ensure!(
        version <= MIGRATIONS.len(),
        "the database has schema version {version}, newer than this gateway's {}: upgrade the gateway",
        MIGRATIONS.len()
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("applying schema migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

pub use arf_proto::timestamp_from_millis as timestamp;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_gateway_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arf.sqlite3");
        let first = Store::open(&path).unwrap();
        let err = Store::open(&path)
            .err()
            .expect("the second open is refused")
            .to_string();
        assert!(err.contains("another gateway is using"), "{err}");
        drop(first);
        Store::open(&path).expect("free again once the first is gone");
    }
}
