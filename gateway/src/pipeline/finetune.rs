//! Stage 3: LoRA on the student over the refined pairs, as a trainer job; with
//! `compare_unrevised`, a second job trains the same base on the teacher's summaries as they
//! are, so Evaluate can show what revision changed (and, asked for, a filter-only student on
//! the unflagged summaries and an oracle on the human references). Every student gets the
//! run's hyperparameters, seed included, so with `max_steps` they take the same steps. Each job's id is stored with the run, so a
//! restarted gateway watches the same job instead of starting another; the jobs' events are
//! relayed into the run's own event log.

use arf_common::dataset::{Conversation, conversation_to_wire};
use arf_proto::v1 as pb;

use super::waiting::TRAINER;
use super::{Pipeline, RunError, StageRun};
use crate::clients::Chunker;
use crate::clients::faults::{Fault, classify};
use crate::store::Student;
use crate::store::Unimproved;

pub async fn run(s: StageRun<'_>) -> Result<(), RunError> {
    for student in Student::of_run(s.config) {
        train(s, student).await?;
    }
    Ok(())
}

/// The student's base model: the run's, or the gateway's default.
pub fn student_base(p: &Pipeline, config: &pb::RunConfig) -> anyhow::Result<String> {
    if !config.student_base_model_dir.is_empty() {
        return Ok(config.student_base_model_dir.clone());
    }
    p.default_student_base.as_ref().map(|d| d.display().to_string()).ok_or_else(|| {
        anyhow::anyhow!("no student base model: set config.student_base_model_dir or the gateway's --student-base")
    })
}

/// Items read from the store per page of training pairs.
const PAGE: usize = 256;

/// The pages of pairs a student of this kind learns from, in dataset order: `next` gives the
/// next non-empty page, or `None` at the end.
struct Pairs<'a> {
    p: &'a Pipeline,
    run_id: &'a str,
    student: Student,
    unimproved: Unimproved,
    after: Option<i64>,
}

impl<'a> Pairs<'a> {
    fn of(p: &'a Pipeline, run_id: &'a str, config: &pb::RunConfig, student: Student) -> Self {
        Self {
            p,
            run_id,
            student,
            unimproved: Unimproved::of(config),
            after: Some(0),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<Vec<(Conversation, String)>>> {
        while let Some(after) = self.after {
            let (pairs, last) = self
                .p
                .store()
                .pairs_page(self.run_id, self.student, self.unimproved, after, PAGE)
                .await?;
            self.after = last;
            if !pairs.is_empty() {
                return Ok(Some(pairs));
            }
        }
        Ok(None)
    }
}

/// Streams the student's pairs from the store into one upload, a page at a time, so the gateway
/// holds one page of a training set however large; returns the upload's id. A store error
/// cancels the upload (the trainer then keeps nothing of it) and is answered UNAVAILABLE, so the
/// call is tried again, from the first page.
async fn upload(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    student: Student,
) -> Result<String, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let produce = async move {
        let mut pairs = Pairs::of(p, run_id, config, student);
        let mut chunker = Chunker::default();
        while let Some(page) = pairs.next().await? {
            for (conversation, summary) in page {
                let example = pb::TrainingExample {
                    conversation: Some(conversation_to_wire(&conversation)),
                    summary,
                };
                if let Some(chunk) = chunker.push(example)
                    && tx.send(chunk).await.is_err()
                {
                    return Ok(()); // the upload ended first: its answer says why
                }
            }
        }
        if let Some(chunk) = chunker.finish() {
            let _ = tx.send(chunk).await;
        }
        anyhow::Ok(())
    };
    let sent = p
        .clients
        .trainer
        .upload_examples(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::pin!(produce, sent);
    tokio::select! {
        produced = &mut produce => {
            if let Err(e) = produced {
                return Err(tonic::Status::unavailable(format!(
                    "reading the training set from the store: {e:#}"
                )));
            }
            sent.await
        }
        // The trainer answered before the last example was sent: a refusal.
        answered = &mut sent => answered,
    }
}

async fn train(s: StageRun<'_>, student: Student) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    let run = p
        .store()
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    if !run.model_dir(student).is_empty() {
        return Ok(()); // trained before a restart
    }
    let trainer = &p.clients.trainer;
    let job_id = if run.job_id(student).is_empty() {
        if Pairs::of(p, run_id, config, student)
            .next()
            .await?
            .is_none()
        {
            let why = match student {
                Student::FilterOnly => "the analyzer flagged every training summary",
                Student::Oracle => "no training row has a human reference",
                _ => {
                    "every summary was excluded (no revision was accepted; on_unimproved \
                     KEEP_ORIGINAL trains on the teacher's summaries instead)"
                }
            };
            return Err(anyhow::anyhow!(
                "no training examples for the {}: {why}",
                student.model().title()
            )
            .into());
        }
        let request = pb::CreateJobRequest {
            base_model_dir: student_base(p, config)?,
            data: None, // the upload, below
            hyperparameters: config.training.clone(),
            display_name: format!("{run_id} {} student", student.model().card_name()),
            export_merged: true,
            labels: [
                ("arf.run_id".to_string(), run_id.to_string()),
                (
                    "arf.student".to_string(),
                    student.model().card_name().to_string(),
                ),
            ]
            .into(),
            // A gateway killed after the trainer created the job but before the id below was
            // stored asks again on resume, with the same key, and gets the same job.
            request_id: format!("{run_id}/{}", student.model().card_name()),
            validate_only: false,
        };
        // A gateway that stalled past its lease starts no job for a run it no longer drives.
        p.store().check_lease(run_id).await?;
        // The examples are streamed (a refined dataset can outgrow one message), then named by
        // the job; a retry uploads again, since an upload serves one job.
        let created = p
            .call(run_id, token, TRAINER, || {
                let mut request = request.clone();
                async move {
                    let upload = upload(p, run_id, config, student).await?;
                    request.data = Some(pb::create_job_request::Data::UploadId(upload));
                    trainer.create_job(request).await
                }
            })
            .await?;
        let job_id = created.map_err(|s| {
            anyhow::anyhow!(
                "the trainer refused the training job: {}: {}",
                s.code(),
                s.message()
            )
        })?;
        if let Err(e) = p.store().set_training_job(run_id, student, &job_id).await {
            // Refused because the run ended while this gateway stalled between the check and
            // the job: nobody will follow the job, so it must not train on. (Refused because
            // another gateway drives the run now: that one asks for the job under the same
            // key, gets this one and follows it.)
            let ended = e
                .downcast_ref::<crate::store::LeaseLost>()
                .is_some_and(|lost| lost.ended);
            if ended && let Err(s) = trainer.cancel(&job_id).await {
                tracing::warn!(run_id, job_id, code = ?s.code(), error = %s.message(), "cannot cancel the training job of a run that ended");
            }
            return Err(e.into());
        }
        job_id
    } else {
        run.job_id(student).to_string()
    };
    follow(s, student, &job_id).await
}

/// Relays the job's events into the run's log until the job ends, through trainer restarts:
/// a broken or ended stream is watched again from the last event relayed. A user's cancel,
/// wherever it finds the run (the first `call` checks the token too), reaches the job.
async fn follow(s: StageRun<'_>, student: Student, job_id: &str) -> Result<(), RunError> {
    let followed = relay(s, student, job_id).await;
    // A shutdown (deploy, node drain) is not the user's cancel: the job trains on, and the
    // restarted gateway follows it from the stored sequence; nor is a lease another gateway
    // took (that one follows the same job), nor a job that was cancelled itself. A user's
    // cancel reaches the job: the trainer runs one job at a time, and an orphan would hold up
    // every later run's Finetune.
    if let Err(RunError::Cancelled) = followed
        && s.token.is_cancelled()
        && !s.p.dropped_here(s.run_id)
        && let Err(e) = s.p.clients.trainer.cancel(job_id).await
    {
        tracing::warn!(run_id = s.run_id, job_id, code = ?e.code(), error = %e.message(), "cannot cancel the training job of a cancelled run");
    }
    followed
}

async fn relay(s: StageRun<'_>, student: Student, job_id: &str) -> Result<(), RunError> {
    let (p, run_id, _, token) = s.parts();
    let trainer = &p.clients.trainer;
    let refused = |what: &str, s: tonic::Status| -> RunError {
        anyhow::anyhow!("{what} job {job_id}: {}: {}", s.code(), s.message()).into()
    };
    loop {
        let after = p.store().training_event_seq(run_id, student).await?;
        let mut events = p
            .call(run_id, token, TRAINER, || trainer.watch(job_id, after))
            .await?
            .map_err(|s| refused("the trainer cannot watch", s))?;
        loop {
            let event = tokio::select! {
                e = events.message() => e,
                () = token.cancelled() => return Err(p.stopped(token)),
            };
            match event {
                Ok(Some(event)) => {
                    let ended = match &event.kind {
                        Some(pb::job_event::Kind::Ended(end)) => Some(end.clone()),
                        _ => None,
                    };
                    p.saved(
                        p.store()
                            .relay_training_event(run_id, student, event)
                            .await?,
                    );
                    if let Some(end) = ended {
                        return settle(p, run_id, student, job_id, end).await;
                    }
                }
                // The stream ends at once when the stored sequence is already past the job's
                // `Ended` (a gateway stopped after relaying it, before recording the student),
                // and early when the trainer shuts down.
                Ok(None) => {
                    let job = p
                        .call(run_id, token, TRAINER, || trainer.get_job(job_id))
                        .await?
                        .map_err(|s| refused("the trainer cannot read", s))?;
                    if let Some(end) = ended(&job) {
                        return settle(p, run_id, student, job_id, end).await;
                    }
                    break;
                }
                Err(s) if classify(&s) == Fault::Transient => {
                    tracing::warn!(run_id, job_id, code = ?s.code(), error = %s.message(), "the training job's event stream broke; watching again");
                    break;
                }
                Err(s) => return Err(refused("the trainer's event stream failed for", s)),
            }
        }
        // Not in a tight loop if the trainer keeps closing streams while it stops.
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            () = token.cancelled() => p.check(token)?,
        }
    }
}

/// The job's end, if it has ended.
fn ended(job: &pb::Job) -> Option<pb::JobEnded> {
    match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled) => {
            Some(pb::JobEnded {
                state: job.state,
                error: job.error.clone(),
                outputs: job.outputs.clone(),
            })
        }
        _ => None,
    }
}

/// What a finished job means for the run: its student recorded, or the run's end.
async fn settle(
    p: &Pipeline,
    run_id: &str,
    student: Student,
    job_id: &str,
    end: pb::JobEnded,
) -> Result<(), RunError> {
    match pb::JobState::try_from(end.state) {
        Ok(pb::JobState::Succeeded) => {
            let merged = end.outputs.map(|o| o.merged_model_dir).unwrap_or_default();
            p.store()
                .set_student_model_dir(run_id, student, &merged)
                .await?;
            Ok(())
        }
        Ok(pb::JobState::Cancelled) => Err(RunError::Cancelled),
        _ => Err(anyhow::anyhow!("training job {job_id} failed: {}", end.error).into()),
    }
}
