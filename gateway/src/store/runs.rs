//! Runs: one row each, with the configuration they were created with.

use anyhow::Context as _;
use arf_proto::v1 as pb;
use prost::Message;
use rusqlite::{OptionalExtension, params};

use super::{Store, now_ms};

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: String,
    pub display_name: String,
    pub state: pb::RunState,
    pub config: pb::RunConfig,
    pub create_time_ms: i64,
    pub end_time_ms: Option<i64>,
    pub error: String,
    pub current_stage: pb::Stage,
    pub training_job_id: String,
    pub student_model_dir: String,
}

const COLUMNS: &str =
    "id, display_name, state, config, create_time_ms, end_time_ms, error, current_stage, training_job_id, student_model_dir";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let config: Vec<u8> = row.get(3)?;
    Ok(RunRecord {
        id: row.get(0)?,
        display_name: row.get(1)?,
        state: pb::RunState::try_from(row.get::<_, i32>(2)?).unwrap_or(pb::RunState::Unspecified),
        config: pb::RunConfig::decode(config.as_slice()).unwrap_or_default(),
        create_time_ms: row.get(4)?,
        end_time_ms: row.get(5)?,
        error: row.get(6)?,
        current_stage: pb::Stage::try_from(row.get::<_, i32>(7)?).unwrap_or(pb::Stage::Unspecified),
        training_job_id: row.get(8)?,
        student_model_dir: row.get(9)?,
    })
}

impl Store {
    pub fn create_run(&self, id: &str, display_name: &str, config: &pb::RunConfig) -> anyhow::Result<()> {
        self.conn()
            .execute(
                "INSERT INTO runs (id, display_name, state, config, create_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, display_name, pb::RunState::Queued as i32, config.encode_to_vec(), now_ms()],
            )
            .context("creating the run")?;
        Ok(())
    }

    pub fn run(&self, id: &str) -> anyhow::Result<Option<RunRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = ?1");
        Ok(self.conn().query_row(&sql, [id], from_row).optional()?)
    }

    /// Newest first; `offset` is the page token.
    pub fn runs(&self, offset: usize, limit: usize) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM runs ORDER BY create_time_ms DESC, id LIMIT ?1 OFFSET ?2");
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![limit as i64, offset as i64], from_row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs a restarted gateway must pick up again.
    pub fn unfinished_runs(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM runs WHERE state IN (?1, ?2) ORDER BY create_time_ms")?;
        let ids = stmt
            .query_map(params![pb::RunState::Queued as i32, pb::RunState::Running as i32], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    pub fn set_stage(&self, id: &str, stage: pb::Stage) -> anyhow::Result<()> {
        self.conn().execute("UPDATE runs SET current_stage = ?2 WHERE id = ?1", params![id, stage as i32])?;
        Ok(())
    }

    pub fn set_training_job(&self, id: &str, job_id: &str) -> anyhow::Result<()> {
        self.conn().execute("UPDATE runs SET training_job_id = ?2 WHERE id = ?1", params![id, job_id])?;
        Ok(())
    }

    pub fn training_event_seq(&self, id: &str) -> anyhow::Result<u64> {
        Ok(self.conn().query_row("SELECT training_event_seq FROM runs WHERE id = ?1", [id], |r| r.get(0))?)
    }

    pub fn set_training_event_seq(&self, id: &str, seq: u64) -> anyhow::Result<()> {
        self.conn().execute("UPDATE runs SET training_event_seq = ?2 WHERE id = ?1", params![id, seq])?;
        Ok(())
    }

    pub fn set_student_model_dir(&self, id: &str, dir: &str) -> anyhow::Result<()> {
        self.conn().execute("UPDATE runs SET student_model_dir = ?2 WHERE id = ?1", params![id, dir])?;
        Ok(())
    }

    /// Records the state; a final state also records the end time and the error (if any).
    pub fn set_run_state(&self, id: &str, state: pb::RunState, error: &str) -> anyhow::Result<()> {
        let finished = matches!(state, pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled);
        let end = finished.then(now_ms);
        self.conn().execute(
            "UPDATE runs SET state = ?2, error = ?3, end_time_ms = COALESCE(?4, end_time_ms) WHERE id = ?1",
            params![id, state as i32, error, end],
        )?;
        Ok(())
    }
}
