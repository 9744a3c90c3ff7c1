//! Stage 4: the student summarizes the held-out conversations (asked exactly as it was trained)
//! and is scored beside the teacher: the analyzer's error categories, ROUGE-1/2/L against human
//! references where the data has them (rougers matches Google's rouge-score bit for bit), and
//! optionally a judge's 1-5 rating (the analyzer's Rate, beside its model-judged detectors), and
//! each model's likelihood of the human references (Editor.Score). With `compare_unrevised`,
//! the student trained on unrevised data and the base model (zero-shot), and the filter-only
//! and oracle students where the run trained them, are asked and scored the same way.

use std::path::Path;

use arf_common::client::GrpcChannel;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use pb::run_event::Kind;
use rougers::{RougeScorer, RougeType};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::waiting::{ANALYZER, STUDENT};
use super::{Pipeline, RunError, finetune, item_trace, summarize_request};
use crate::store::evaluation::{Evaluation, Model, Rouge, ScoredSummary};
use crate::store::{ItemRecord, Student};

/// Held-out conversations per pass. Within a pass the models take turns: every conversation
/// goes to one model at once, so its engine decodes them together (one batch, each weight
/// read once per step for all of them), then to the next; the idle models cost memory only.
const BATCH: usize = 16;

/// The models that summarize the held-out conversations, each behind an Editor endpoint.
struct Summarizers {
    student: EditorClient<GrpcChannel>,
    /// The comparison's other models, in the report's order.
    others: Vec<(Model, EditorClient<GrpcChannel>)>,
}

pub async fn run(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    token: &CancellationToken,
) -> Result<(), RunError> {
    let evaluation = config.evaluation.clone().unwrap_or_default();
    if p.store().pending_evaluation(run_id, 1).await?.is_empty() {
        return Ok(()); // nothing held out, or all done
    }
    let run = p
        .store()
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    // The models this gateway serves for the run, unloaded when the stage ends however it ends.
    let mut hosted = Vec::new();
    let evaluated = evaluate_all(p, run_id, config, &evaluation, &run, token, &mut hosted).await;
    if let Some(host) = &p.student_host {
        for model in &hosted {
            host.release(model).await;
        }
    }
    evaluated
}

async fn evaluate_all(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    evaluation: &pb::EvaluationConfig,
    run: &crate::store::RunRecord,
    token: &CancellationToken,
    hosted: &mut Vec<std::path::PathBuf>,
) -> Result<(), RunError> {
    let student = if !evaluation.student_endpoint.is_empty() {
        p.clients.student(&evaluation.student_endpoint)?
    } else {
        serve(
            p,
            hosted,
            run.model_dir(Student::Refined),
            "the fine-tuning stage left no merged student model to evaluate",
        )
        .await?
    };
    let mut others = Vec::new();
    if config.compare_unrevised {
        let base = finetune::student_base(p, config)?;
        others.push((
            Model::Base,
            serve(p, hosted, &base, "no student base model").await?,
        ));
    }
    for arm in Student::of_run(config).into_iter().skip(1) {
        let missing = format!("no merged {} to compare against", arm.model().title());
        let model = serve(p, hosted, run.model_dir(arm), &missing).await?;
        others.push((arm.model(), model));
    }
    let summarizers = Summarizers { student, others };
    let scorer = RougeScorer::new(["rouge1", "rouge2", "rougeL"], true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    loop {
        p.check(token)?;
        let batch = p.store().pending_evaluation(run_id, BATCH).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let pass = evaluate_batch(
            p,
            run_id,
            config,
            evaluation,
            &summarizers,
            &scorer,
            token,
            &batch,
        );
        // A cancelled run (or a shutdown) drops the calls in flight: nothing of the pass is
        // saved, so a resumed run evaluates it again, and no item twice.
        tokio::select! {
            done = pass => done?,
            _ = token.cancelled() => return p.check(token),
        }
    }
}

/// The model at `path` (a merged student directory or a base model) behind an Editor, served by
/// the gateway's student host; recorded in `hosted`, to be released.
async fn serve(
    p: &Pipeline,
    hosted: &mut Vec<std::path::PathBuf>,
    path: &str,
    missing: &str,
) -> Result<EditorClient<GrpcChannel>, RunError> {
    let host = p.student_host.as_ref().ok_or_else(|| {
        anyhow::anyhow!("no student endpoint configured and this gateway hosts no students")
    })?;
    if path.is_empty() {
        return Err(anyhow::anyhow!("{missing}").into());
    }
    let channel = host.serve(Path::new(path)).await?;
    hosted.push(Path::new(path).to_path_buf());
    Ok(p.clients.student_over(channel))
}

/// One pass over a batch of held-out items: each model in turn summarizes all of them at
/// once (see [`BATCH`]); then each item's evaluation is saved with its event.
#[allow(clippy::too_many_arguments)]
async fn evaluate_batch(
    p: &Pipeline,
    run_id: &str,
    config: &pb::RunConfig,
    evaluation: &pb::EvaluationConfig,
    summarizers: &Summarizers,
    scorer: &RougeScorer,
    token: &CancellationToken,
    items: &[ItemRecord],
) -> Result<(), RunError> {
    let spans: Vec<tracing::Span> = items
        .iter()
        .map(|item| {
            item_trace::resume(
                "arf.item.evaluate",
                run_id,
                &item.conversation.id,
                item.trace_parent.as_deref(),
            )
        })
        .collect();
    let scorings: Vec<Scoring> = items
        .iter()
        .zip(&spans)
        .map(|(item, span)| Scoring {
            p,
            run_id,
            token,
            config,
            judge: evaluation.judge,
            scorer,
            item,
            span,
        })
        .collect();
    // Every item's summary by one model, all at once.
    let by = async |model: &EditorClient<GrpcChannel>| -> Result<Vec<ScoredSummary>, RunError> {
        futures::future::join_all(scorings.iter().map(|s| summarize(model.clone(), s)))
            .await
            .into_iter()
            .collect()
    };
    let students = by(&summarizers.student).await?;
    let mut others = Vec::new();
    for (model, client) in &summarizers.others {
        others.push((*model, by(client).await?));
    }
    let mut others: Vec<(Model, std::vec::IntoIter<ScoredSummary>)> = others
        .into_iter()
        .map(|(m, s)| (m, s.into_iter()))
        .collect();
    for ((scoring, student), item) in scorings.iter().zip(students).zip(items) {
        let teacher_summary = item.teacher_summary.clone();
        let teacher = ScoredSummary {
            categories: categories(item.analysis.as_ref()),
            rouge: scoring.rouge(&teacher_summary),
            judge: scoring.judge(&teacher_summary).await?,
            summary: teacher_summary,
            ..Default::default()
        };
        let findings = student.categories.len() as u32;
        let mut result = Evaluation {
            channel: item.conversation.channel.clone(),
            teacher,
            student,
            ..Default::default()
        };
        for (model, scored) in &mut others {
            if let Some(scored) = scored.next() {
                result.set(*model, scored);
            }
        }
        let id = &item.conversation.id;
        let event = Kind::Item(pb::ItemProgress {
            conversation_id: id.clone(),
            stage: pb::Stage::Evaluate as i32,
            outcome: "evaluated".into(),
            findings,
        });
        p.saved(
            p.store()
                .save_evaluation(run_id, id, &result, event)
                .await?,
        );
    }
    Ok(())
}

/// What scoring one item's summaries needs.
struct Scoring<'a> {
    p: &'a Pipeline,
    run_id: &'a str,
    token: &'a CancellationToken,
    config: &'a pb::RunConfig,
    judge: bool,
    scorer: &'a RougeScorer,
    item: &'a ItemRecord,
    span: &'a tracing::Span,
}

/// One model's summary of the item, scored. A model that refuses the conversation (longer than
/// its context, ...) scores as failed: the item is evaluated, the run goes on.
async fn summarize(
    model: EditorClient<GrpcChannel>,
    s: &Scoring<'_>,
) -> Result<ScoredSummary, RunError> {
    let request = summarize_request(&s.item.conversation, s.config);
    let generated =
        s.p.call(s.run_id, s.token, STUDENT, || {
            let (mut model, request) = (model.clone(), request.clone());
            async move { model.generate(request).await.map(|r| r.into_inner()) }
                .instrument(s.span.clone())
        })
        .await?;
    let generated = match generated {
        Ok(g) => g,
        Err(refusal) => {
            tracing::warn!(parent: s.span, code = ?refusal.code(), error = %refusal.message(), "the model refused to summarize");
            return Ok(ScoredSummary {
                failed: true,
                ..Default::default()
            });
        }
    };
    let summary = generated.text.trim().to_string();
    let analysis = s.analyze(&summary).await?;
    let reference_nll = s.reference_nll(&model, &request.messages).await?;
    Ok(ScoredSummary {
        reference_nll,
        categories: categories(analysis.as_ref()),
        failed: analysis.is_none(),
        rouge: s.rouge(&summary),
        judge: s.judge(&summary).await?,
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
        let answer = self
            .p
            .call(self.run_id, self.token, ANALYZER, || {
                self.p
                    .clients
                    .analyzer
                    .analyze(
                        &self.item.conversation,
                        summary,
                        self.config.analyzer.clone(),
                    )
                    .instrument(self.span.clone())
            })
            .await?;
        Ok(answer.ok())
    }

    /// The model's mean per-token NLL of the human references (Editor.Score, all references
    /// at once: the engine batches them), averaged over them. Independent of sampling and of the
    /// analyzer. `None` without references or when the model refuses one.
    async fn reference_nll(
        &self,
        model: &EditorClient<GrpcChannel>,
        messages: &[pb::ChatMessage],
    ) -> Result<Option<f64>, RunError> {
        if self.item.references.is_empty() {
            return Ok(None);
        }
        let scored = futures::future::join_all(self.item.references.iter().map(|reference| {
            let request = pb::ScoreRequest {
                messages: messages.to_vec(),
                reply: reference.clone(),
            };
            self.p.call(self.run_id, self.token, STUDENT, move || {
                let (mut model, request) = (model.clone(), request.clone());
                async move { model.score(request).await.map(|r| r.into_inner()) }
                    .instrument(self.span.clone())
            })
        }))
        .await;
        let mut total = 0.0;
        for answer in scored {
            match answer? {
                Ok(r) => total += r.mean_nll,
                Err(refusal) => {
                    tracing::warn!(parent: self.span, code = ?refusal.code(), error = %refusal.message(), "the model refused to score a reference");
                    return Ok(None);
                }
            }
        }
        Ok(Some(total / self.item.references.len() as f64))
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

    /// The judge's rating, when the run asks for one; a judge that refuses to rate leaves it
    /// missing (reported as such) rather than failing the item.
    async fn judge(&self, summary: &str) -> Result<Option<u8>, RunError> {
        if !self.judge || summary.is_empty() {
            return Ok(None);
        }
        let rating = self
            .p
            .call(self.run_id, self.token, ANALYZER, || {
                self.p
                    .clients
                    .analyzer
                    .rate(&self.item.conversation, summary)
                    .instrument(self.span.clone())
            })
            .await?;
        Ok(rating.unwrap_or_else(|s| {
            tracing::warn!(parent: self.span, code = ?s.code(), error = %s.message(), "no rating");
            None
        }))
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
