//! Runs: one row each, with the configuration they were created with.

use anyhow::Context as _;
use arf_proto::v1 as pb;
use prost::Message;
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::Store;
use super::evaluation::Model;

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
    /// The filter-only student's (compare_filter_only only).
    pub filter_job_id: String,
    pub filter_model_dir: String,
    /// The oracle student's (compare_oracle only).
    pub oracle_job_id: String,
    pub oracle_model_dir: String,
}

impl RunRecord {
    pub fn job_id(&self, student: Student) -> &str {
        match student {
            Student::Refined => &self.training_job_id,
            Student::Unrevised => &self.baseline_job_id,
            Student::FilterOnly => &self.filter_job_id,
            Student::Oracle => &self.oracle_job_id,
        }
    }

    pub fn model_dir(&self, student: Student) -> &str {
        match student {
            Student::Refined => &self.student_model_dir,
            Student::Unrevised => &self.baseline_model_dir,
            Student::FilterOnly => &self.filter_model_dir,
            Student::Oracle => &self.oracle_model_dir,
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
    /// Trained on the teacher's summaries the analyzer did not flag (compare_filter_only).
    FilterOnly,
    /// Trained on the human references (compare_oracle): the ceiling.
    Oracle,
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
            Student::FilterOnly => ("filter_job_id", "filter_model_dir", "filter_event_seq"),
            Student::Oracle => ("oracle_job_id", "oracle_model_dir", "oracle_event_seq"),
        }
    }

    /// The students a run trains, the run's own first.
    pub fn of_run(config: &pb::RunConfig) -> Vec<Student> {
        let mut students = vec![Student::Refined];
        if config.compare_unrevised {
            students.push(Student::Unrevised);
        }
        if config.compare_filter_only {
            students.push(Student::FilterOnly);
        }
        if config.compare_oracle {
            students.push(Student::Oracle);
        }
        students
    }

    /// The model it is in reports.
    pub fn model(self) -> Model {
        match self {
            Student::Refined => Model::Student,
            Student::Unrevised => Model::Unrevised,
            Student::FilterOnly => Model::FilterOnly,
            Student::Oracle => Model::Oracle,
        }
    }
}

const COLUMNS: &str = "id, display_name, state, config, create_time_ms, end_time_ms, error, current_stage, training_job_id, \
                       student_model_dir, baseline_job_id, baseline_model_dir, filter_job_id, filter_model_dir, \
                       oracle_job_id, oracle_model_dir";

/// A run as stored; a configuration that does not decode is an error naming the run.
fn from_row(row: &AnyRow) -> anyhow::Result<RunRecord> {
    let id: String = row.try_get("id")?;
    let config: Vec<u8> = row.try_get("config")?;
    let state: i64 = row.try_get("state")?;
    let stage: i64 = row.try_get("current_stage")?;
    Ok(RunRecord {
        display_name: row.try_get("display_name")?,
        state: pb::RunState::try_from(state as i32).unwrap_or(pb::RunState::Unspecified),
        config: pb::RunConfig::decode(config.as_slice())
            .with_context(|| format!("run {id:?}: stored config"))?,
        create_time_ms: row.try_get("create_time_ms")?,
        end_time_ms: row.try_get("end_time_ms")?,
        error: row.try_get("error")?,
        current_stage: pb::Stage::try_from(stage as i32).unwrap_or(pb::Stage::Unspecified),
        training_job_id: row.try_get("training_job_id")?,
        student_model_dir: row.try_get("student_model_dir")?,
        baseline_job_id: row.try_get("baseline_job_id")?,
        baseline_model_dir: row.try_get("baseline_model_dir")?,
        filter_job_id: row.try_get("filter_job_id")?,
        filter_model_dir: row.try_get("filter_model_dir")?,
        oracle_job_id: row.try_get("oracle_job_id")?,
        oracle_model_dir: row.try_get("oracle_model_dir")?,
        id,
    })
}

impl Store {
    /// A new run, INGESTING, leased by this gateway (which stores its rows).
    pub async fn create_run(
        &self,
        id: &str,
        display_name: &str,
        config: &pb::RunConfig,
    ) -> anyhow::Result<()> {
        // The first claim: fencing token 1.
        sqlx::query(&format!(
            "INSERT INTO runs (id, display_name, state, config, create_time_ms, lease_owner, lease_expires_ms, lease_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6, {} + $7, 1)",
            self.db_now()
        ))
        .bind(id)
        .bind(display_name)
        .bind(pb::RunState::Ingesting as i64)
        .bind(config.encode_to_vec())
        .bind(self.clock_ms())
        .bind(&self.owner)
        .bind(self.lease_ms)
        .execute(&self.pool)
        .await
        .context("creating the run")?;
        self.hold(id, 1);
        Ok(())
    }

    pub async fn run(&self, id: &str) -> anyhow::Result<Option<RunRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM runs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Newest first; `offset` is the page token.
    pub async fn runs(&self, offset: usize, limit: usize) -> anyhow::Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM runs ORDER BY create_time_ms DESC, id LIMIT $1 OFFSET $2"
        );
        let rows = sqlx::query(&sql)
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect::<Result<_, _>>()
    }

    /// INGESTING to QUEUED with its event, in one transaction, once the last row is stored.
    /// False (and nothing written) when the run is no longer ingesting: it was cancelled meanwhile.
    pub async fn finish_ingest(&self, id: &str) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE runs SET state = $2 WHERE id = $1 AND state = $3")
            .bind(id)
            .bind(pb::RunState::Queued as i64)
            .bind(pb::RunState::Ingesting as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Ok(false);
        }
        self.append_in(
            &mut tx,
            id,
            pb::run_event::Kind::State(pb::RunState::Queued as i32),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn set_stage(&self, id: &str, stage: pb::Stage) -> anyhow::Result<()> {
        self.update_run(id, "current_stage = $2", stage as i64)
            .await
    }

    pub async fn set_training_job(
        &self,
        id: &str,
        student: Student,
        job_id: &str,
    ) -> anyhow::Result<()> {
        let set = format!("{} = $2", student.columns().0);
        self.update_run(id, &set, job_id.to_string()).await
    }

    /// The last of the training job's events relayed into the run's log.
    pub async fn training_event_seq(&self, id: &str, student: Student) -> anyhow::Result<u64> {
        let sql = format!("SELECT {} FROM runs WHERE id = $1", student.columns().2);
        let seq: i64 = sqlx::query_scalar(&sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.max(0) as u64)
    }

    /// Relays one of the training job's events into the run's log and records its sequence,
    /// in one transaction: an event is relayed once, however the gateway stops. `None`: it
    /// was relayed before.
    pub async fn relay_training_event(
        &self,
        id: &str,
        student: Student,
        event: pb::JobEvent,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let column = student.columns().2;
        let sql = format!("UPDATE runs SET {column} = $2 WHERE id = $1 AND {column} < $2");
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&sql)
            .bind(id)
            .bind(event.sequence as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let relayed = match changed {
            0 => None,
            _ => Some(
                self.append_in(&mut tx, id, pb::run_event::Kind::Training(event))
                    .await?,
            ),
        };
        tx.commit().await?;
        Ok(relayed)
    }

    pub async fn set_student_model_dir(
        &self,
        id: &str,
        student: Student,
        dir: &str,
    ) -> anyhow::Result<()> {
        let set = format!("{} = $2", student.columns().1);
        self.update_run(id, &set, dir.to_string()).await
    }

    /// One column of the run, written by its lease holder only (fenced like the events).
    async fn update_run<T>(&self, id: &str, set: &str, value: T) -> anyhow::Result<()>
    where
        T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send,
    {
        let sql = format!(
            "UPDATE runs SET {set} WHERE id = $1 AND {}",
            super::leases::fenced(3)
        );
        let changed = sqlx::query(&sql)
            .bind(id)
            .bind(value)
            .bind(self.claim(id))
            .execute(&self.pool)
            .await?
            .rows_affected();
        if changed == 0 {
            // A newer claim or an ended run (the fence says which), or there is no such run.
            self.check_lease(id).await?;
        }
        Ok(())
    }

    /// Records the state and appends the event announcing it, in one transaction: a watcher that
    /// finds the run final has also been able to read its final event. A final state also
    /// records the end time and the error (if any), and frees the lease.
    pub async fn set_run_state(
        &self,
        id: &str,
        state: pb::RunState,
        error: &str,
    ) -> anyhow::Result<pb::RunEvent> {
        let mut tx = self.pool.begin().await?;
        let event = self.set_run_state_in(&mut tx, id, state, error).await?;
        tx.commit().await?;
        if is_final(state) {
            self.let_go(id);
        }
        Ok(event)
    }

    pub(super) async fn set_run_state_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        id: &str,
        state: pb::RunState,
        error: &str,
    ) -> anyhow::Result<pb::RunEvent> {
        let end = is_final(state).then(|| self.clock_ms());
        // Fenced (and the run's row locked) by the append, before the state changes.
        let event = self
            .append_in(tx, id, pb::run_event::Kind::State(state as i32))
            .await?;
        let mut sql = String::from(
            "UPDATE runs SET state = $2, error = $3, end_time_ms = COALESCE($4, end_time_ms)",
        );
        if end.is_some() {
            sql.push_str(", lease_owner = '', lease_expires_ms = 0");
        }
        sql.push_str(" WHERE id = $1");
        sqlx::query(&sql)
            .bind(id)
            .bind(state as i64)
            .bind(error)
            .bind(end)
            .execute(&mut **tx)
            .await?;
        Ok(event)
    }
}

pub fn is_final(state: pb::RunState) -> bool {
    matches!(
        state,
        pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher that finds the run final must find its final event too: the stream ends there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_final_state_and_its_event_are_seen_together() {
        for (_db, store) in crate::store::testing::stores().await {
            seen_together(std::sync::Arc::new(store)).await;
        }
    }

    async fn seen_together(store: std::sync::Arc<Store>) {
        let ids: Vec<String> = (0..200).map(|i| format!("run-{i}")).collect();
        for id in &ids {
            store
                .create_run(id, id, &pb::RunConfig::default())
                .await
                .unwrap();
        }
        // The two tasks meet before each run, so the reader polls while the writer finishes it.
        let meet = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let writer = {
            let (store, ids, meet) = (store.clone(), ids.clone(), meet.clone());
            tokio::spawn(async move {
                for id in &ids {
                    meet.wait().await;
                    store
                        .set_run_state(id, pb::RunState::Succeeded, "")
                        .await
                        .unwrap();
                }
            })
        };
        for id in &ids {
            meet.wait().await;
            loop {
                let final_ = store.run(id).await.unwrap().unwrap().state == pb::RunState::Succeeded;
                let last = store.events_after(id, 0, 10).await.unwrap().pop();
                if final_ {
                    assert!(
                        matches!(last.and_then(|e| e.kind), Some(pb::run_event::Kind::State(s)) if s == pb::RunState::Succeeded as i32),
                        "{id}"
                    );
                    break;
                }
            }
        }
        writer.await.unwrap();
    }
}
