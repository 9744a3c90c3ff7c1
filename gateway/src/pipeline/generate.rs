//! Stage 0, Generate: the teacher writes the summaries that the dataset's rows lack, so a run
//! can start from raw conversations as the paper's GPT-3.5 teacher did. The teacher is any
//! Editor endpoint (the gateway's `--teacher`, or the editor replicas), asked exactly as the
//! student will be asked (the one summarization prompt), greedily. Each summary is committed
//! with its token counts and time, so a restarted run asks only for the ones still missing.
//! A row the teacher refuses (too long for its context, ...) or summarizes as nothing is
//! recorded as failed, with why, and the later stages skip it.

use std::time::Instant;

use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tracing::Instrument;

use super::waiting::TEACHER;
use super::{RunError, StageRun, item_trace, summarize_request};
use crate::store::Pending;
use crate::store::{ItemRecord, TeacherUsage};

const BATCH: usize = 32;
const CONCURRENCY: usize = 4;

pub async fn run(s: StageRun<'_>) -> Result<(), RunError> {
    let (p, run_id, _, token) = s.parts();
    p.drain_pending(
        token,
        || CONCURRENCY,
        || p.store().pending(run_id, Pending::Generation, BATCH),
        |item| generate_item(s, item),
    )
    .await
}

async fn generate_item(s: StageRun<'_>, item: ItemRecord) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    p.check(token)?;
    let id = item.conversation.id.clone();
    // The item's trace starts here; Analyze and the later stages continue it.
    let span = item_trace::start("arf.item.generate", run_id, &id);
    let request = summarize_request(&item.conversation, config);
    let started = Instant::now();
    let teacher = p.clients.teacher.as_ref().unwrap_or(&p.clients.editors);
    let answer = p
        .call(run_id, token, TEACHER, || {
            teacher.generate(&request).instrument(span.clone())
        })
        .await?;
    let failed = async |why: String| -> Result<(), RunError> {
        p.warn(
            run_id,
            format!("the teacher could not summarize {id}: {why}"),
        )
        .await?;
        let event = Kind::Item(pb::ItemProgress {
            conversation_id: id.clone(),
            stage: pb::Stage::Generate as i32,
            outcome: "failed".into(),
            findings: 0,
        });
        p.saved(p.store().fail_generation(run_id, &id, &why, event).await?);
        Ok(())
    };
    let answer = match answer {
        Ok(a) => a,
        Err(refusal) => return failed(format!("{}: {}", refusal.code(), refusal.message())).await,
    };
    let summary = answer.text.trim();
    if summary.is_empty() {
        return failed("it wrote an empty summary".into()).await;
    }
    let usage = TeacherUsage {
        input_tokens: answer.usage.as_ref().map_or(0, |u| u.input_tokens),
        output_tokens: answer.usage.as_ref().map_or(0, |u| u.output_tokens),
        millis: started.elapsed().as_millis() as u64,
    };
    let event = Kind::Item(pb::ItemProgress {
        conversation_id: id.clone(),
        stage: pb::Stage::Generate as i32,
        outcome: "generated".into(),
        findings: 0,
    });
    p.saved(
        p.store()
            .save_generated_summary(
                run_id,
                &id,
                summary,
                &usage,
                &item_trace::traceparent(&span),
                event,
            )
            .await?,
    );
    Ok(())
}
