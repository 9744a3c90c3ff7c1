//! Stage 4: the student summarizes the held-out conversations (asked exactly as it was trained)
//! and is scored beside the teacher: the analyzer's error categories, ROUGE-1/2/L against human
//! references where the data has them (rougers matches Google's rouge-score bit for bit), and
//! optionally a judge's 1-5 rating through Generate. With `compare_unrevised`, the student
//! trained on unrevised data and the base model (zero-shot) are asked and scored the same way.

use std::path::Path;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::dataset::{conversation_to_wire, summarize_user_prompt};
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use pb::run_event::Kind;
use rougers::{RougeScorer, RougeType};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Pipeline, RunError, finetune, item_trace, summarize_request};
use crate::store::evaluation::{Evaluation, Rouge, ScoredSummary};
use crate::store::{ItemRecord, Student};

const BATCH: usize = 32;
const CONCURRENCY: usize = 4;

/// The models that summarize the held-out conversations, each behind an Editor endpoint.
struct Summarizers {
    student: EditorClient<GrpcChannel>,
    unrevised: Option<EditorClient<GrpcChannel>>,
    base: Option<EditorClient<GrpcChannel>>,
}

pub async fn run(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    token: &CancellationToken,
) -> Result<(), RunError> {
    let evaluation = config.evaluation.clone().unwrap_or_default();
    if p.store().pending_evaluation(run_id, 1)?.is_empty() {
        return Ok(()); // nothing held out, or all done
    }
    let run = p
        .store()
        .run(run_id)?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    let student = if !evaluation.student_endpoint.is_empty() {
        evaluation.student_endpoint.clone()
    } else {
        serve(
            p,
            run.model_dir(Student::Refined),
            "the fine-tuning stage left no merged student model to evaluate",
        )
        .await?
    };
    let (unrevised, base) = if config.compare_unrevised {
        let unrevised = serve(
            p,
            run.model_dir(Student::Unrevised),
            "no merged unrevised student to compare against",
        )
        .await?;
        let base = serve(
            p,
            &finetune::student_base(p, config)?,
            "no student base model",
        )
        .await?;
        (Some(unrevised), Some(base))
    } else {
        (None, None)
    };
    let client = |endpoint: &str| -> anyhow::Result<EditorClient<GrpcChannel>> {
        Ok(EditorClient::new(connect_lazy(
            endpoint,
            &ClientOptions::default(),
        )?))
    };
    let summarizers = Summarizers {
        student: client(&student)?,
        unrevised: unrevised.as_deref().map(client).transpose()?,
        base: base.as_deref().map(client).transpose()?,
    };
    let scorer = RougeScorer::new(["rouge1", "rouge2", "rougeL"], true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    p.drain_pending(
        token,
        CONCURRENCY,
        || p.store().pending_evaluation(run_id, BATCH),
        |item| {
            evaluate_item(
                p,
                run_id,
                config,
                &evaluation,
                &summarizers,
                &scorer,
                token,
                item,
            )
        },
    )
    .await
}

/// An Editor endpoint serving the model at `path` (a merged student directory or a base
/// model), through the gateway's student host.
async fn serve(p: &Pipeline, path: &str, missing: &str) -> Result<String, RunError> {
    let host = p.student_host.as_ref().ok_or_else(|| {
        anyhow::anyhow!("no student endpoint configured and no way to serve one here")
    })?;
    if path.is_empty() {
        return Err(anyhow::anyhow!("{missing}").into());
    }
    Ok(host.serve(Path::new(path)).await?)
}

#[allow(clippy::too_many_arguments)]
async fn evaluate_item(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    evaluation: &pb::EvaluationConfig,
    summarizers: &Summarizers,
    scorer: &RougeScorer,
    token: &CancellationToken,
    item: ItemRecord,
) -> Result<(), RunError> {
    p.check(token)?;
    let id = item.conversation.id.clone();
    let span = item_trace::resume(
        "arf.item.evaluate",
        run_id,
        &id,
        item.trace_parent.as_deref(),
    );
    let scoring = Scoring {
        p,
        config,
        judge: evaluation.judge,
        scorer,
        item: &item,
        span: &span,
    };
    let ask = |model: &EditorClient<GrpcChannel>| summarize(model.clone(), &scoring);

    let student = ask(&summarizers.student).await?;
    let unrevised = match &summarizers.unrevised {
        Some(m) => Some(ask(m).await?),
        None => None,
    };
    let base = match &summarizers.base {
        Some(m) => Some(ask(m).await?),
        None => None,
    };
    let teacher_summary = item.teacher_summary.clone();
    let teacher = ScoredSummary {
        categories: categories(item.analysis.as_ref()),
        rouge: scoring.rouge(&teacher_summary),
        judge: scoring.judge(&teacher_summary).await,
        summary: teacher_summary,
        ..Default::default()
    };
    let findings = student.categories.len() as u32;
    let result = Evaluation {
        channel: item.conversation.channel.clone(),
        teacher,
        student,
        unrevised,
        base,
    };
    p.store().save_evaluation(run_id, &id, &result)?;
    p.emit(
        run_id,
        Kind::Item(pb::ItemProgress {
            conversation_id: id,
            stage: pb::Stage::Evaluate as i32,
            outcome: "evaluated".into(),
            findings,
        }),
    )?;
    Ok(())
}

/// What scoring one item's summaries needs.
struct Scoring<'a> {
    p: &'a Pipeline,
    config: &'a pb::RunConfig,
    judge: bool,
    scorer: &'a RougeScorer,
    item: &'a ItemRecord,
    span: &'a tracing::Span,
}

/// One model's summary of the item, scored.
async fn summarize(
    mut model: EditorClient<GrpcChannel>,
    s: &Scoring<'_>,
) -> Result<ScoredSummary, RunError> {
    let request = summarize_request(&s.item.conversation, s.config);
    let generated = model
        .generate(request)
        .instrument(s.span.clone())
        .await?
        .into_inner();
    let summary = generated.text.trim().to_string();
    let analysis = s.analyze(&summary).await?;
    Ok(ScoredSummary {
        categories: categories(analysis.as_ref()),
        failed: analysis.is_none(),
        rouge: s.rouge(&summary),
        judge: s.judge(&summary).await,
        output_tokens: generated.usage.map_or(0, |u| u.output_tokens),
        summary,
    })
}

impl Scoring<'_> {
    /// The analyzer's findings; `None` when it refused the summary (or there is none).
    async fn analyze(&self, summary: &str) -> Result<Option<pb::AnalyzeResponse>, RunError> {
        if summary.is_empty() {
            return Ok(None);
        }
        let check = pb::AnalyzeRequest {
            request_id: self.item.conversation.id.clone(),
            conversation: Some(conversation_to_wire(&self.item.conversation)),
            summary: summary.to_string(),
            options: self.config.analyzer.clone(),
        };
        match self
            .p
            .clients
            .analyzer
            .clone()
            .analyze(check)
            .instrument(self.span.clone())
            .await
        {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    fn rouge(&self, summary: &str) -> Option<Rouge> {
        if self.item.references.is_empty() || summary.is_empty() {
            return None;
        }
        let scores = self.scorer.score_multi(&self.item.references, summary)?;
        let f = |t: RougeType| scores.get(t).map_or(0.0, |s| s.fmeasure);
        Some(Rouge {
            rouge1: f(RougeType::N(1)),
            rouge2: f(RougeType::N(2)),
            rouge_l: f(RougeType::L),
        })
    }

    async fn judge(&self, summary: &str) -> Option<u8> {
        if self.judge {
            judge(self.p, self.item, summary)
                .instrument(self.span.clone())
                .await
        } else {
            None
        }
    }
}

fn categories(analysis: Option<&pb::AnalyzeResponse>) -> Vec<String> {
    let mut c: Vec<String> = analysis
        .map(|a| a.findings.iter().map(|f| f.category_id.clone()).collect())
        .unwrap_or_default();
    c.sort();
    c.dedup();
    c
}

/// A 1-5 rating of a summary by the editor model, constrained to `{"rating": n}`; `None` when
/// the judge could not answer (it is reported as missing, never guessed).
async fn judge(p: &Pipeline, item: &ItemRecord, summary: &str) -> Option<u8> {
    if summary.is_empty() {
        return Some(1);
    }
    let schema = json!({
        "x-guidance": {"whitespace_flexible": false},
        "type": "object",
        "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["rating"],
        "additionalProperties": false,
    });
    let prompt = format!(
        "{}\nSummary to rate:\n{summary}\n\nRate the summary from 1 (useless or wrong) to 5 (complete, faithful, concise). \
         Answer with JSON: {{\"rating\": n}}.",
        summarize_user_prompt(&item.conversation)
    );
    let request = pb::GenerateRequest {
        messages: vec![
            pb::ChatMessage {
                role: "system".into(),
                content: "You are a strict judge of customer-service summaries.".into(),
            },
            pb::ChatMessage {
                role: "user".into(),
                content: prompt,
            },
        ],
        params: Some(pb::GenerationParams {
            max_tokens: 16,
            temperature: Some(0.0),
            top_p: None,
            stop: vec![],
        }),
        json_schema: schema.to_string(),
    };
    let answer = p.clients.editors.generate(&request).await.ok()?;
    let rating = serde_json::from_str::<Value>(answer.text.trim())
        .ok()?
        .get("rating")?
        .as_u64()?;
    (1..=5).contains(&rating).then_some(rating as u8)
}
