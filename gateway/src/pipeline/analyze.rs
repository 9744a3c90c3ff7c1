//! Stage 1: analyze every teacher summary (held-out ones too: evaluation compares against them).
//! One unary call per item, several at once, each in the item's own trace.

use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tracing::Instrument;

use super::waiting::ANALYZER;
use super::{RunError, StageRun, item_trace};
use crate::store::Pending;
use crate::store::{AnalysisOutcome, ItemRecord};

const BATCH: usize = 128;
const CONCURRENCY: usize = 16;

pub async fn run(s: StageRun<'_>) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    // Checked at CreateRun too; the analyzer may have been redeployed since.
    if let Some(options) = config.analyzer.as_ref().filter(|o| needs_taxonomy(o)) {
        let taxonomy = p
            .call(run_id, token, ANALYZER, || p.clients.analyzer.taxonomy())
            .await?
            .map_err(|s| anyhow::anyhow!("the analyzer gave no taxonomy: {s}"))?;
        if let Some((field, why)) = crate::clients::first_unsupported(options, &taxonomy) {
            return Err(anyhow::anyhow!("config.analyzer.{field}: {why}").into());
        }
    }
    p.drain_pending(
        token,
        || CONCURRENCY,
        || p.store().pending(run_id, Pending::Analysis, BATCH),
        |item| analyze_item(s, item),
    )
    .await
}

/// Whether the options ask for something the analyzer may lack: named detectors or
/// categories, or its judge.
pub(crate) fn needs_taxonomy(options: &pb::AnalyzeOptions) -> bool {
    !options.detectors.is_empty() || !options.categories.is_empty() || options.model_judged
}

async fn analyze_item(s: StageRun<'_>, item: ItemRecord) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    p.check(token)?;
    let id = item.conversation.id.clone();
    // A summary the Generate stage wrote has begun the item's trace already.
    let span = item_trace::resume(
        "arf.item.analyze",
        run_id,
        &id,
        item.trace_parent.as_deref(),
    );
    let answer = p
        .call(run_id, token, ANALYZER, || {
            p.clients
                .analyzer
                .analyze(
                    &item.conversation,
                    &item.teacher_summary,
                    config.analyzer.clone(),
                )
                .instrument(span.clone())
        })
        .await?;
    let analysis = match answer {
        Ok(a) => a,
        // The analyzer refuses this item (too long, ...): record why; it will not be trained on.
        Err(refusal) => {
            let why = format!("{}: {}", refusal.code(), refusal.message());
            p.warn(
                run_id,
                format!("the analyzer refused {id}'s summary: {why}"),
            )
            .await?;
            pb::AnalyzeResponse {
                request_id: id.clone(),
                conversation_id: id.clone(),
                detector_failures: vec![pb::DetectorFailure {
                    detector: "analyzer".into(),
                    message: why,
                }],
                ..Default::default()
            }
        }
    };
    let outcome = AnalysisOutcome::of(&analysis).as_str();
    let event = Kind::Item(pb::ItemProgress {
        conversation_id: id.clone(),
        stage: pb::Stage::Analyze as i32,
        outcome: outcome.into(),
        findings: analysis.findings.len() as u32,
    });
    p.saved(
        p.store()
            .save_analysis(
                run_id,
                &id,
                &analysis,
                &item_trace::traceparent(&span),
                event,
            )
            .await?,
    );
    Ok(())
}
