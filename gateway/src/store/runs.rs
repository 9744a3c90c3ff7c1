//! Runs: one row each, with the configuration they were created with.

use anyhow::Context as _;
use arf_proto::v1 as pb;
use prost::Message;
use rusqlite::{OptionalExtension, params};

use super::evaluation::Model;
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
    /// The unrevised student's job and model (compare_unrevised only).
    pub baseline_job_id: String,
    pub baseline_model_dir: String,
}

impl RunRecord {
    pub fn job_id(&self, student: Student) -> &str {
        match student {
            Student::Refined => &self.training_job_id,
            Student::Unrevised => &self.baseline_job_id,
        }
    }

    pub fn model_dir(&self, student: Student) -> &str {
        match student {
            Student::Refined => &self.student_model_dir,
            Student::Unrevised => &self.baseline_model_dir,
        }
    }
}

/// Which student a training job makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Student {
    /// Trained on the ARF-refined pairs: the run's student.
    Refined,
    /// Trained on the teacher's summaries as they are, to compare against (compare_unrevised).
    Unrevised,
}

impl Student {
    /// Its job, model and relayed-event columns in `runs`.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Student::Refined => ("training_job_id", "student_model_dir", "training_event_seq"),
            Student::Unrevised => (
                "baseline_job_id",
                "baseline_model_dir",
                "baseline_event_seq",
            ),
        }
    }

    /// The model it is in reports.
    pub fn model(self) -> Model {
        match self {
            Student::Refined => Model::Student,
            Student::Unrevised => Model::Unrevised,
        }
    }
}

const COLUMNS: &str = "id, display_name, state, config, create_time_ms, end_time_ms, error, current_stage, training_job_id, \
                       student_model_dir, baseline_job_id, baseline_model_dir";

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
        baseline_job_id: row.get(10)?,
        baseline_model_dir: row.get(11)?,
    })
}

impl Store {
    pub fn create_run(
        &self,
        id: &str,
        display_name: &str,
        config: &pb::RunConfig,
    ) -> anyhow::Result<()> {
        self.conn()
            .execute(
                "INSERT INTO runs (id, display_name, state, config, create_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, display_name, pb::RunState::Ingesting as i32, config.encode_to_vec(), now_ms()],
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
        let sql = format!(
            "SELECT {COLUMNS} FROM runs ORDER BY create_time_ms DESC, id LIMIT ?1 OFFSET ?2"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map(params![limit as i64, offset as i64], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Runs a restarted gateway must pick up again.
    pub fn unfinished_runs(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id FROM runs WHERE state IN (?1, ?2) ORDER BY create_time_ms")?;
        let ids = stmt
            .query_map(
                params![pb::RunState::Queued as i32, pb::RunState::Running as i32],
                |r| r.get(0),
            )?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Runs whose upload a previous process never finished (their rows are a truncated dataset).
    pub fn ingesting_runs(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id FROM runs WHERE state = ?1 ORDER BY create_time_ms")?;
        let ids = stmt
            .query_map(params![pb::RunState::Ingesting as i32], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// INGESTING to QUEUED with its event, in one transaction, once the last row is stored.
    /// False (and nothing written) when the run is no longer ingesting: it was cancelled meanwhile.
    pub fn finish_ingest(&self, id: &str) -> anyhow::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE runs SET state = ?2 WHERE id = ?1 AND state = ?3",
            params![
                id,
                pb::RunState::Queued as i32,
                pb::RunState::Ingesting as i32
            ],
        )?;
        if changed == 0 {
            return Ok(false);
        }
        super::events::append_in(
            &tx,
            id,
            pb::run_event::Kind::State(pb::RunState::Queued as i32),
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn set_stage(&self, id: &str, stage: pb::Stage) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE runs SET current_stage = ?2 WHERE id = ?1",
            params![id, stage as i32],
        )?;
        Ok(())
    }

    pub fn set_training_job(&self, id: &str, student: Student, job_id: &str) -> anyhow::Result<()> {
        let sql = format!("UPDATE runs SET {} = ?2 WHERE id = ?1", student.columns().0);
        self.conn().execute(&sql, params![id, job_id])?;
        Ok(())
    }

    /// The last of the training job's events relayed into the run's log.
    pub fn training_event_seq(&self, id: &str, student: Student) -> anyhow::Result<u64> {
        let sql = format!("SELECT {} FROM runs WHERE id = ?1", student.columns().2);
        Ok(self.conn().query_row(&sql, [id], |r| r.get(0))?)
    }

    /// Relays one of the training job's events into the run's log and records its sequence,
    /// in one transaction: an event is relayed once, however the gateway stops. `None`: it
    /// was relayed before.
    pub fn relay_training_event(
        &self,
        id: &str,
        student: Student,
        event: pb::JobEvent,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let column = student.columns().2;
        let sql = format!("UPDATE runs SET {column} = ?2 WHERE id = ?1 AND {column} < ?2");
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let relayed = match tx.execute(&sql, params![id, event.sequence])? {
            0 => None,
            _ => Some(super::events::append_in(
                &tx,
                id,
                pb::run_event::Kind::Training(event),
            )?),
        };
        tx.commit()?;
        Ok(relayed)
    }

    pub fn set_student_model_dir(
        &self,
        id: &str,
        student: Student,
        dir: &str,
    ) -> anyhow::Result<()> {
        let sql = format!("UPDATE runs SET {} = ?2 WHERE id = ?1", student.columns().1);
        self.conn().execute(&sql, params![id, dir])?;
        Ok(())
    }

    /// Records the state and appends the event announcing it, in one transaction: a watcher that
    /// finds the run final has also been able to read its final event. A final state also
    /// records the end time and the error (if any).
    pub fn set_run_state(
        &self,
        id: &str,
        state: pb::RunState,
        error: &str,
    ) -> anyhow::Result<pb::RunEvent> {
        let finished = matches!(
            state,
            pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled
        );
        let end = finished.then(now_ms);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE runs SET state = ?2, error = ?3, end_time_ms = COALESCE(?4, end_time_ms) WHERE id = ?1",
            params![id, state as i32, error, end],
        )?;
        let event = super::events::append_in(&tx, id, pb::run_event::Kind::State(state as i32))?;
        tx.commit()?;
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher that finds the run final must find its final event too: the stream ends there.
    #[test]
    fn a_final_state_and_its_event_are_seen_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(&dir.path().join("arf.db")).unwrap());
        let ids: Vec<String> = (0..200).map(|i| format!("run-{i}")).collect();
        for id in &ids {
            store.create_run(id, id, &pb::RunConfig::default()).unwrap();
        }
        // The two threads meet before each run, so the reader polls while the writer finishes it.
        let meet = std::sync::Arc::new(std::sync::Barrier::new(2));
        let writer = {
            let (store, ids, meet) = (store.clone(), ids.clone(), meet.clone());
            std::thread::spawn(move || {
                for id in &ids {
                    meet.wait();
                    store
                        .set_run_state(id, pb::RunState::Succeeded, "")
                        .unwrap();
                }
            })
        };
        for id in &ids {
            meet.wait();
            loop {
                let final_ = store.run(id).unwrap().unwrap().state == pb::RunState::Succeeded;
                let last = store.events_after(id, 0, 10).unwrap().pop();
                if final_ {
                    assert!(
                        matches!(last.and_then(|e| e.kind), Some(pb::run_event::Kind::State(s)) if s == pb::RunState::Succeeded as i32),
                        "{id}"
                    );
                    break;
                }
            }
        }
        writer.join().unwrap();
    }
}
