//! Stage 4: the student summarizes the held-out conversations (asked exactly as it was trained)
//! and is scored beside the teacher: the analyzer's error categories, ROUGE-1/2/L against human
//! references where the data has them (rougers matches Google's rouge-score bit for bit), and
//! optionally a judge's 1-5 rating (the analyzer's Rate, beside its model-judged detectors), and
//! each model's likelihood of the human references (Editor.Score). With `compare_unrevised`,
//! the student trained on unrevised data and the base model (zero-shot), and the filter-only
//! and oracle students where the run trained them, are asked and scored the same way.

use std::path::PathBuf;
use std::sync::Mutex;

use arf_common::client::GrpcChannel;
use arf_proto::v1 as pb;
use arf_proto::v1::editor_client::EditorClient;
use pb::run_event::Kind;
use rougers::{RougeScorer, RougeType};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::waiting::{ANALYZER, STUDENT};
use super::{Pipeline, RunError, StageRun, finetune, item_trace, summarize_request};
use crate::store::Pending;
use crate::store::evaluation::{Evaluation, Model, Rouge, ScoredSummary, rule};
use crate::store::{ItemRecord, Student};

/// Held-out conversations per pass. Within a pass the models take turns: every conversation
/// goes to one model at once, so its engine decodes them together (one batch, each weight
/// read once per step for all of them), then to the next. A model this gateway hosts is
/// loaded for its turn and released after it, so memory holds one model however many arms
/// the comparison has; the passes alternate their order, so the last model of one pass is the
/// first of the next and stays loaded across the two.
const BATCH: usize = 16;

/// Where a model of the comparison is reached.
enum Source {
    /// An Editor endpoint the operator runs (the student endpoint of the run's config).
    Endpoint(EditorClient<GrpcChannel>),
    /// A model directory or file the gateway's student host serves while it is used.
    Hosted(PathBuf),
}

/// A model that summarizes the held-out conversations: the ARF student (`None`) or one of the
/// comparison's others, in the report's order.
struct Summarizer {
    model: Option<Model>,
    source: Source,
}

pub async fn run(s: StageRun<'_>) -> Result<(), RunError> {
    let (p, run_id, config, _) = s.parts();
    let evaluation = config.evaluation.clone().unwrap_or_default();
    if p.store()
        .pending(run_id, Pending::Evaluation, 1)
        .await?
        .is_empty()
    {
        return Ok(()); // nothing held out, or all done
    }
    let run = p
        .store()
        .run(run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {run_id} vanished"))?;
    // The models this gateway serves now, released when the stage ends however it ends (a
    // cancelled pass is dropped mid-turn).
    let hosted = Mutex::new(Vec::new());
    let evaluated = evaluate_all(s, &evaluation, &run, &hosted).await;
    if let Some(host) = &p.student_host {
        let held = std::mem::take(&mut *hosted.lock().unwrap_or_else(|e| e.into_inner()));
        for model in &held {
            host.release(model).await;
        }
        host.unload_idle().await;
    }
    evaluated
}

async fn evaluate_all(
    s: StageRun<'_>,
    evaluation: &pb::EvaluationConfig,
    run: &crate::store::RunRecord,
    hosted: &Mutex<Vec<PathBuf>>,
) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
    let summarizers = summarizers(p, config, evaluation, run)?;
    let scorer = RougeScorer::new(["rouge1", "rouge2", "rougeL"], true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut order: Vec<usize> = (0..summarizers.len()).collect();
    loop {
        p.check(token)?;
        let batch = p
            .store()
            .pending(run_id, Pending::Evaluation, BATCH)
            .await?;
        if batch.is_empty() {
            return Ok(());
        }
        let pass = evaluate_batch(
            s,
            evaluation,
            (summarizers.as_slice(), order.as_slice()),
            hosted,
            &scorer,
            &batch,
        );
        // A cancelled run (or a shutdown) drops the calls in flight: nothing of the pass is
        // saved, so a resumed run evaluates it again, and no item twice.
        tokio::select! {
            done = pass => done?,
            _ = token.cancelled() => return p.check(token),
        }
        order.reverse();
    }
}

/// The comparison's models, checked before any is loaded: the ARF student first, then the base
/// model (with `compare_unrevised`) and the other students the run trained.
fn summarizers(
    p: &Pipeline,
    config: &pb::RunConfig,
    evaluation: &pb::EvaluationConfig,
    run: &crate::store::RunRecord,
) -> Result<Vec<Summarizer>, RunError> {
    let hosted = |path: &str, missing: &str| -> Result<Source, RunError> {
        if p.student_host.is_none() {
            return Err(anyhow::anyhow!(
                "no student endpoint configured and this gateway hosts no students"
            )
            .into());
        }
        if path.is_empty() {
            return Err(anyhow::anyhow!("{missing}").into());
        }
        Ok(Source::Hosted(PathBuf::from(path)))
    };
    let student = if evaluation.student_endpoint.is_empty() {
        hosted(
            run.model_dir(Student::Refined),
            "the fine-tuning stage left no merged student model to evaluate",
        )?
    } else {
        Source::Endpoint(p.clients.student(&evaluation.student_endpoint)?)
    };
    let mut all = vec![Summarizer {
        model: None,
        source: student,
    }];
    if config.compare_unrevised {
        let base = finetune::student_base(p, config)?;
        all.push(Summarizer {
            model: Some(Model::Base),
            source: hosted(&base, "no student base model")?,
        });
    }
    for arm in Student::of_run(config).into_iter().skip(1) {
        let missing = format!("no merged {} to compare against", arm.model().title());
        all.push(Summarizer {
            model: Some(arm.model()),
            source: hosted(run.model_dir(arm), &missing)?,
        });
    }
    Ok(all)
}

/// Every item's summary by one model, all at once; a hosted model is served for the turn and
/// released after it.
async fn summarize_all(
    p: &Pipeline,
    summarizer: &Summarizer,
    hosted: &Mutex<Vec<PathBuf>>,
    scorings: &[Scoring<'_>],
) -> Result<Vec<ScoredSummary>, RunError> {
    let by = async |model: EditorClient<GrpcChannel>| -> Result<Vec<ScoredSummary>, RunError> {
        futures::future::join_all(scorings.iter().map(|s| summarize(model.clone(), s)))
            .await
            .into_iter()
            .collect()
    };
    let path = match &summarizer.source {
        Source::Endpoint(client) => return by(client.clone()).await,
        Source::Hosted(path) => path,
    };
    let host = p
        .student_host
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("this gateway hosts no students"))?;
    let channel = host.serve(path).await?;
    hosted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.clone());
    let summaries = by(p.clients.student_over(channel)).await;
    {
        let mut held = hosted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|h| h == path) {
            held.remove(i);
        }
    }
    host.release(path).await;
    summaries
}

/// One pass over a batch of held-out items: each model in turn summarizes all of them at
/// once (see [`BATCH`]); then each item's evaluation is saved with its event.
async fn evaluate_batch(
    s: StageRun<'_>,
    evaluation: &pb::EvaluationConfig,
    (summarizers, order): (&[Summarizer], &[usize]),
    hosted: &Mutex<Vec<PathBuf>>,
    scorer: &RougeScorer,
    items: &[ItemRecord],
) -> Result<(), RunError> {
    let (p, run_id, config, token) = s.parts();
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
    // Every item's summary by one model, all at once, the models in turn.
    let mut by_model: Vec<Option<Vec<ScoredSummary>>> = summarizers.iter().map(|_| None).collect();
    for &i in order {
        by_model[i] = Some(summarize_all(p, &summarizers[i], hosted, &scorings).await?);
    }
    let mut by_model = by_model.into_iter().map(Option::unwrap_or_default);
    let students = by_model.next().unwrap_or_default();
    let mut others: Vec<(Model, std::vec::IntoIter<ScoredSummary>)> = summarizers[1..]
        .iter()
        .zip(by_model)
        .filter_map(|(s, scored)| Some((s.model?, scored.into_iter())))
        .collect();
    for ((scoring, student), item) in scorings.iter().zip(students).zip(items) {
        let teacher_summary = item.teacher_summary.clone();
        let teacher = ScoredSummary {
            categories: categories(item.analysis.as_ref()),
            rules: rules(item.analysis.as_ref()),
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
        rules: rules(analysis.as_ref()),
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
    /// analyzer. `None` without references, when the model refuses one, or when its editor
    /// cannot score at all (UNIMPLEMENTED: an OpenAI-compatible upstream shows no logprobs of a
    /// given reply), which is "not available", not a failed run.
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
                async move {
                    match model.score(request).await {
                        Ok(r) => Ok(Some(r.into_inner().mean_nll)),
                        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(None),
                        Err(s) => Err(s),
                    }
                }
                .instrument(self.span.clone())
            })
        }))
        .await;
        let mut total = 0.0;
        for answer in scored {
            match answer? {
                Ok(Some(nll)) => total += nll,
                Ok(None) => {
                    tracing::debug!(parent: self.span, "the model's editor cannot score: reference NLL not available");
                    return Ok(None);
                }
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
    sorted_once(analysis, |f| f.category_id.clone())
}

/// Each category with the rule that found it (`category/detector`).
fn rules(analysis: Option<&pb::AnalyzeResponse>) -> Vec<String> {
    sorted_once(analysis, |f| rule(&f.category_id, &f.detector))
}

/// `key` of every finding, sorted, each once.
fn sorted_once(
    analysis: Option<&pb::AnalyzeResponse>,
    key: impl Fn(&pb::Finding) -> String,
) -> Vec<String> {
    let mut c: Vec<String> = analysis
        .map(|a| a.findings.iter().map(key).collect())
        .unwrap_or_default();
    c.sort();
    c.dedup();
    c
}
