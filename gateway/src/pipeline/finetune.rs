//! Stage 3: LoRA on the student over the refined pairs, as a trainer job; with
//! `compare_unrevised`, a second job trains the same base on the teacher's summaries as they
//! are, so Evaluate can show what revision changed. Each job's id is stored with the run, so a
//! restarted gateway watches the same job instead of starting another; the jobs' events are
//! relayed into the run's own event log.

use arf_common::dataset::{Conversation, conversation_to_wire};
use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tokio_util::sync::CancellationToken;

use super::{Pipeline, RunError};
use crate::store::Student;
use crate::store::Unimproved;

pub async fn run(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    token: &CancellationToken,
) -> Result<(), RunError> {
    train(p, run_id, config, Student::Refined, token).await?;
    if config.compare_unrevised {
        train(p, run_id, config, Student::Unrevised, token).await?;
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

/// The pairs a student of this kind learns from.
fn pairs(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    student: Student,
) -> anyhow::Result<Vec<(Conversation, String)>> {
    Ok(match student {
        Student::Refined => p
            .store()
            .training_pairs(run_id, Unimproved::of(config))?
            .into_iter()
            .map(|pair| (pair.conversation, pair.summary))
            .collect(),
        Student::Unrevised => p.store().unrevised_pairs(run_id)?,
    })
}

async fn train(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    student: Student,
    token: &CancellationToken,
) -> Result<(), RunError> {
    let run = p
        .store()
        .run(run_id)?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    if !run.model_dir(student).is_empty() {
        return Ok(()); // trained before a restart
    }
    let trainer = &p.clients.trainer;
    let job_id = if run.job_id(student).is_empty() {
        let pairs = pairs(p, run_id, config, student)?;
        if pairs.is_empty() {
            return Err(anyhow::anyhow!(
                "no training examples for the {}: every summary was excluded (no revision was \
                 accepted; on_unimproved KEEP_ORIGINAL trains on the teacher's summaries instead)",
                student.model().title()
            )
            .into());
        }
        let examples = pairs
            .into_iter()
            .map(|(conversation, summary)| pb::TrainingExample {
                conversation: Some(conversation_to_wire(&conversation)),
                summary,
            })
            .collect();
        let request = pb::CreateJobRequest {
            base_model_dir: student_base(p, config)?,
            data: Some(pb::create_job_request::Data::Inline(pb::InlineExamples {
                examples,
            })),
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
        };
        let job_id = trainer.create_job(request).await?;
        p.store().set_training_job(run_id, student, &job_id)?;
        job_id
    } else {
        run.job_id(student).to_string()
    };

    let after = p.store().training_event_seq(run_id, student)?;
    let mut events = trainer.watch(&job_id, after).await?;
    loop {
        let event = tokio::select! {
            e = events.message() => e?,
            () = token.cancelled() => {
                // A shutdown (deploy, node drain) is not the user's cancel: the job trains on,
                // and the restarted gateway follows it from the stored sequence.
                p.check(token)?;
                let _ = trainer.cancel(&job_id).await;
                return Err(RunError::Cancelled);
            }
        };
        let Some(event) = event else {
            // The stream ends at once when the stored sequence is already past the job's
            // `Ended` (a gateway stopped after relaying it, before recording the student).
            let job = trainer.get_job(&job_id).await?;
            return match pb::JobState::try_from(job.state) {
                Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled) => {
                    let end = pb::JobEnded {
                        state: job.state,
                        error: job.error,
                        outputs: job.outputs,
                    };
                    settle(p, run_id, student, &job_id, end)
                }
                _ => Err(anyhow::anyhow!(
                    "the trainer ended job {job_id}'s event stream before the job ended"
                )
                .into()),
            };
        };
        let seq = event.sequence;
        let ended = match &event.kind {
            Some(pb::job_event::Kind::Ended(end)) => Some(end.clone()),
            _ => None,
        };
        p.emit(run_id, Kind::Training(event))?;
        p.store().set_training_event_seq(run_id, student, seq)?;
        if let Some(end) = ended {
            return settle(p, run_id, student, &job_id, end);
        }
    }
}

/// What a finished job means for the run: its student recorded, or the run's end.
fn settle(
    p: &Pipeline,
    run_id: &str,
    student: Student,
    job_id: &str,
    end: pb::JobEnded,
) -> Result<(), RunError> {
    match pb::JobState::try_from(end.state) {
        Ok(pb::JobState::Succeeded) => {
            let merged = end.outputs.map(|o| o.merged_model_dir).unwrap_or_default();
            p.store().set_student_model_dir(run_id, student, &merged)?;
            Ok(())
        }
        Ok(pb::JobState::Cancelled) => Err(RunError::Cancelled),
        _ => Err(anyhow::anyhow!("training job {job_id} failed: {}", end.error).into()),
    }
}
