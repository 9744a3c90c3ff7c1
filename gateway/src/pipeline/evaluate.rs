//! Stage 4: the student summarizes the held-out conversations (asked exactly as it was trained);
//! student and teacher summaries are scored side by side: the analyzer's error categories,
//! ROUGE-1/2/L against human references where the data has them (rougers matches Google's
//! rouge-score bit for bit), and optionally a judge's 1-5 rating through Generate.

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::dataset::{SUMMARIZE_SYSTEM_PROMPT, conversation_to_wire, summarize_user_prompt};
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use pb::run_event::Kind;
use rougers::{RougeScorer, RougeType};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Pipeline, RunError, item_trace};
use crate::store::ItemRecord;

const BATCH: usize = 32;
const CONCURRENCY: usize = 4;
const DEFAULT_MAX_TOKENS: u32 = 160;

pub async fn run(p: &Pipeline, run_id: &str, config: &pb::RunConfig, token: &CancellationToken) -> Result<(), RunError> {
    let evaluation = config.evaluation.clone().unwrap_or_default();
    if p.store().pending_evaluation(run_id, 1)?.is_empty() {
        return Ok(()); // nothing held out, or all done
    }
    let endpoint = if !evaluation.student_endpoint.is_empty() {
        evaluation.student_endpoint.clone()
    } else {
        let run = p.store().run(run_id)?.ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
        let host = p.student_host.as_ref().ok_or_else(|| anyhow::anyhow!("no student endpoint configured and no way to serve one here"))?;
        if run.student_model_dir.is_empty() {
            return Err(anyhow::anyhow!("the fine-tuning stage left no merged student model to evaluate").into());
        }
        host.serve(std::path::Path::new(&run.student_model_dir)).await?
    };
    let student = EditorClient::new(connect_lazy(&endpoint, &ClientOptions::default())?);
    let scorer = RougeScorer::new(["rouge1", "rouge2", "rougeL"], true).map_err(|e| anyhow::anyhow!("{e}"))?;
    p.drain_pending(token, CONCURRENCY, || p.store().pending_evaluation(run_id, BATCH), |item| {
        evaluate_item(p, run_id, config, &evaluation, &student, &scorer, token, item)
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn evaluate_item(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    evaluation: &pb::EvaluationConfig,
    student: &EditorClient<arf_common::client::GrpcChannel>,
    scorer: &RougeScorer,
    token: &CancellationToken,
    item: ItemRecord,
) -> Result<(), RunError> {
    p.check(token)?;
    let id = item.conversation.id.clone();
    let span = item_trace::resume("arf.item.evaluate", run_id, &id, item.trace_parent.as_deref());
    let max_tokens = if evaluation.max_summary_tokens == 0 { DEFAULT_MAX_TOKENS } else { evaluation.max_summary_tokens };
    let request = pb::GenerateRequest {
        messages: vec![
            pb::ChatMessage { role: "system".into(), content: SUMMARIZE_SYSTEM_PROMPT.into() },
            pb::ChatMessage { role: "user".into(), content: summarize_user_prompt(&item.conversation) },
        ],
        params: Some(pb::GenerationParams { max_tokens, temperature: Some(0.0), top_p: None, stop: vec![] }),
        json_schema: String::new(),
    };
    let generated = student.clone().generate(request).instrument(span.clone()).await?.into_inner();
    let student_summary = generated.text.trim().to_string();

    let teacher_categories = categories(item.analysis.as_ref());
    let student_analysis = if student_summary.is_empty() {
        None
    } else {
        let check = pb::AnalyzeRequest {
            request_id: id.clone(),
            conversation: Some(conversation_to_wire(&item.conversation)),
            summary: student_summary.clone(),
            options: config.analyzer.clone(),
        };
        match p.clients.analyzer.clone().analyze(check).instrument(span.clone()).await {
            Ok(r) => Some(r.into_inner()),
            Err(s) if s.code() == tonic::Code::InvalidArgument => None,
            Err(s) => return Err(s.into()),
        }
    };
    let rouge = |summary: &str| -> Value {
        if item.references.is_empty() || summary.is_empty() {
            return Value::Null;
        }
        let Some(scores) = scorer.score_multi(&item.references, summary) else { return Value::Null };
        let f = |t: RougeType| scores.get(t).map_or(0.0, |s| s.fmeasure);
        json!({"rouge1": f(RougeType::N(1)), "rouge2": f(RougeType::N(2)), "rougeL": f(RougeType::L)})
    };
    let (teacher_judge, student_judge) = if evaluation.judge {
        (judge(p, &item, &item.teacher_summary).await, judge(p, &item, &student_summary).await)
    } else {
        (None, None)
    };
    let result = json!({
        "channel": item.conversation.channel,
        "teacher": {"summary": item.teacher_summary, "categories": teacher_categories, "rouge": rouge(&item.teacher_summary), "judge": teacher_judge},
        "student": {
            "summary": student_summary,
            "categories": categories(student_analysis.as_ref()),
            "failed": student_analysis.is_none(),
            "rouge": rouge(&student_summary),
            "judge": student_judge,
            "output_tokens": generated.usage.map_or(0, |u| u.output_tokens),
        },
    });
    p.store().save_evaluation(run_id, &id, &result)?;
    let findings = student_analysis.as_ref().map_or(0, |a| a.findings.len() as u32);
    p.emit(run_id, Kind::Item(pb::ItemProgress { conversation_id: id, stage: pb::Stage::Evaluate as i32, outcome: "evaluated".into(), findings }))?;
    Ok(())
}

fn categories(analysis: Option<&pb::AnalyzeResponse>) -> Vec<String> {
    let mut c: Vec<String> = analysis.map(|a| a.findings.iter().map(|f| f.category_id.clone()).collect()).unwrap_or_default();
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
            pb::ChatMessage { role: "system".into(), content: "You are a strict judge of customer-service summaries.".into() },
            pb::ChatMessage { role: "user".into(), content: prompt },
        ],
        params: Some(pb::GenerationParams { max_tokens: 16, temperature: Some(0.0), top_p: None, stop: vec![] }),
        json_schema: schema.to_string(),
    };
    let answer = p.clients.editors.generate(&request).await.ok()?;
    let rating = serde_json::from_str::<Value>(answer.text.trim()).ok()?.get("rating")?.as_u64()?;
    (1..=5).contains(&rating).then_some(rating as u8)
}
