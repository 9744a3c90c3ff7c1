//! Runs: a dataset of conversations taken through Generate (the teacher's summaries, where rows
//! lack them) -> Analyze -> Revise -> Finetune -> Evaluate.
//!
//! | file | reads | writes | one item fails (the run goes on) | the run stops |
//! | --- | --- | --- | --- | --- |
//! | `ingest.rs` | the spec and rows (stream or file) | run, items, bad rows | a bad row (skipped, or fatal by policy) | a bad spec |
//! | `generate.rs` | items without a summary | the teacher's summary, its cost | the teacher refuses it, or writes nothing | the teacher fails |
//! | `analyze.rs` | every summary | its analysis | the analyzer refuses it (a warning) | the analyzer fails |
//! | `revise.rs` | flagged training items | a `RevisionOutcome`, the revision | the editor refuses it (a warning) | the editor fails |
//! | `finetune.rs` | the refined pairs | trainer job ids, merged students | - | the job fails |
//! | `evaluate.rs` | held-out items | an `Evaluation` per item | a model or the analyzer refuses it (scored as failed) | a student cannot be served |
//!
//! "Refuses" and "fails" are decided by one policy (`clients::faults`): a refusal is
//! INVALID_ARGUMENT (or a call that keeps missing its deadline); a failure is a status no retry
//! can mend (a wrong token, a bug there). A service that is down or overloaded neither fails the
//! item nor the run: `waiting.rs` calls it again with backoff, and the run's events say so; a
//! store that blinks is waited out the same way (`outages.rs`).
//!
//! Every step reads what is still pending from the store and commits each item's result as
//! soon as it has it, so a gateway killed at any point resumes where it was: no item lost,
//! none revised twice. An item's result and its event are one commit, made before the event
//! is announced.
//!
//! The gateway's domain *is* the Pipeline API, so configuration and events stay in their
//! `arf.v1` form here (prost messages). The stages call the other services through
//! `crate::clients`, so downstream statuses reach them; `grpc.rs` alone maps this API's own
//! requests and statuses.

mod analyze;
mod evaluate;
mod finetune;
mod generate;
mod ingest;
mod item_trace;
mod leases;
mod outages;
mod repair;
mod revise;
mod waiting;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arf_common::client::GrpcChannel;
use arf_proto::v1 as pb;
use pb::run_event::Kind;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use ingest::{IngestError, RowSource, RowStream};

pub use crate::clients::Clients;
use crate::store::{Store, lock};

pub struct Pipeline {
    store: Arc<Store>,
    clients: Clients,
    /// Per run with watchers, bumped after each of its committed events: its watchers wake and
    /// read the store (a busy run does not wake the watchers of every other run).
    /// (Apart from `here`: a run is watched through any gateway, wherever it is driven.)
    events: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The runs this process drives or ingests, one entry each while it does.
    here: Mutex<HashMap<String, RunHere>>,
    /// Services each run is waiting for, so the events announce each retry level once.
    waits: waiting::Waits,
    shutdown: CancellationToken,
    /// Where reports and exports are written.
    pub data_dir: PathBuf,
    /// Student base model used when a run's configuration names none.
    pub default_student_base: Option<PathBuf>,
    /// Serves a fine-tuned student for evaluation when a run names no student endpoint.
    pub student_host: Option<Arc<dyn StudentHost>>,
    /// Where the files a client names may be.
    pub client_paths: ClientPaths,
}

/// What a client may name: files on the gateway's machine under these folders, and only these
/// student endpoints.
#[derive(Debug, Clone)]
pub struct ClientPaths {
    /// `spec.dataset_path`.
    pub datasets: arf_common::paths::PathRoots,
    /// `config.student_base_model_dir` (read by the trainer, which confines it again).
    pub models: arf_common::paths::PathRoots,
    /// `config.evaluation.student_endpoint`: the gateway calls it with its own token, so a
    /// client must not point it anywhere. `None`: any (the embedded suite).
    pub student_endpoints: Option<Vec<String>>,
}

impl ClientPaths {
    /// Refused unless the operator listed `endpoint` (`--student-endpoint`).
    pub fn allow_student_endpoint(&self, field: &str, endpoint: &str) -> Result<(), ConfigRefused> {
        let Some(allowed) = &self.student_endpoints else {
            return Ok(());
        };
        let norm = |e: &str| e.trim().trim_end_matches('/').to_ascii_lowercase();
        if allowed.iter().any(|a| norm(a) == norm(endpoint)) {
            return Ok(());
        }
        Err(ConfigRefused::NotListed(format!(
            "{field}: this gateway calls only the student endpoints its operator lists \
             (--student-endpoint); {endpoint:?} is not one of them"
        )))
    }
}

/// Why CreateRun refuses a run's configuration before anything is stored (`grpc.rs` gives
/// each its status).
#[derive(Debug)]
pub enum ConfigRefused {
    /// The analyzer could not be asked what it can do: retry when it is up.
    AnalyzerUnreachable(String),
    /// The field asks for what the services cannot do.
    Unsupported { field: String, why: String },
    /// A student endpoint the operator did not list.
    NotListed(String),
}

/// Puts a model (a merged student directory, or a base model) behind an Editor, for Evaluate.
/// The `gateway` binary has none (it links no inference engine); `arf` hosts them in-process.
#[tonic::async_trait]
pub trait StudentHost: Send + Sync {
    /// A channel to an Editor serving the model; the host knows how to reach what it serves.
    /// Each `serve` is matched by one [`StudentHost::release`] when the caller is done.
    async fn serve(&self, model: &std::path::Path) -> anyhow::Result<GrpcChannel>;

    /// The caller no longer needs the model: once nobody does, the host may keep it loaded for
    /// the next `serve` of the same model, but unloads it before it loads any other.
    async fn release(&self, model: &std::path::Path);

    /// Unloads every model nobody uses (at the end of an Evaluate stage).
    async fn unload_idle(&self) {}
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cancelled")]
    Cancelled,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// What every stage works in: the pipeline, the run, its configuration and the token that
/// cancels it; one value handed down instead of four arguments.
#[derive(Clone, Copy)]
pub(crate) struct StageRun<'a> {
    pub p: &'a Pipeline,
    pub run_id: &'a str,
    pub config: &'a pb::RunConfig,
    pub token: &'a CancellationToken,
}

impl<'a> StageRun<'a> {
    /// `(pipeline, run id, configuration, token)`, for a stage to name what it uses.
    pub fn parts(
        self,
    ) -> (
        &'a Pipeline,
        &'a str,
        &'a pb::RunConfig,
        &'a CancellationToken,
    ) {
        (self.p, self.run_id, self.config, self.token)
    }
}

/// What this process holds of a run it drives or ingests: one entry, changed in one place.
#[derive(Default)]
struct RunHere {
    /// Set while the run is driven here; cancelling it stops the drive.
    driving: Option<CancellationToken>,
    /// Its rows are being stored here (CreateRun): its lease is renewed too.
    ingesting: bool,
    /// This process stopped driving it because another gateway took its lease.
    dropped: bool,
    /// Its stage and the items that stage has left (the heartbeat counts them), read by the
    /// `arf.gateway.pending_items` gauge.
    pending: Option<(pb::Stage, u32)>,
}

impl RunHere {
    fn active(&self) -> bool {
        self.driving.is_some() || self.ingesting
    }
}

/// Why a run left INGESTING by a previous process is failed at start-up.
pub const INTERRUPTED_INGEST: &str = "the gateway stopped before the dataset's last row was stored, so the run never started: create it again";

impl Pipeline {
    pub fn new(
        store: Arc<Store>,
        clients: Clients,
        data_dir: PathBuf,
        default_student_base: Option<PathBuf>,
        student_host: Option<Arc<dyn StudentHost>>,
        client_paths: ClientPaths,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            clients,
            events: Mutex::new(HashMap::new()),
            here: Mutex::new(HashMap::new()),
            waits: waiting::Waits::default(),
            shutdown,
            data_dir,
            default_student_base,
            student_host,
            client_paths,
        })
    }

    /// Exports `arf.gateway.pending_items` (attribute `stage`): the items the runs this
    /// gateway drives have left in their current stage, which is what an autoscaler of the
    /// editors (Revise) or the teachers (Generate) reads. The callback holds the pipeline weakly.
    pub fn observe_pending(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let _gauge = opentelemetry::global::meter("arf")
            .i64_observable_gauge("arf.gateway.pending_items")
            .with_unit("{item}")
            .with_description("Items the runs this gateway drives have left in their current stage")
            .with_callback(move |gauge| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let mut per_stage: HashMap<pb::Stage, i64> = HashMap::new();
                for (stage, left) in lock(&pipeline.here).values().filter_map(|r| r.pending) {
                    *per_stage.entry(stage).or_default() += i64::from(left);
                }
                for stage in stages(&pb::RunConfig::default()) {
                    let left = per_stage.get(&stage).copied().unwrap_or(0);
                    let name = stage_name(stage);
                    gauge.observe(left, &[opentelemetry::KeyValue::new("stage", name)]);
                }
            })
            .build();
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A receiver that changes whenever the run gets a new event.
    pub fn subscribe(&self, run_id: &str) -> watch::Receiver<u64> {
        let mut senders = lock(&self.events);
        // Runs nobody watches any more hold no sender.
        senders.retain(|_, s| s.receiver_count() > 0);
        senders
            .entry(run_id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Runs this process drives or ingests: the ones whose leases its heartbeat renews.
    fn active_runs(&self) -> Vec<String> {
        lock(&self.here).keys().cloned().collect()
    }

    fn is_active_here(&self, run_id: &str) -> bool {
        lock(&self.here).contains_key(run_id)
    }

    /// Changes what this process holds of a run; the entry goes once the run is neither
    /// driven nor ingested here.
    fn with_run<R>(&self, run_id: &str, change: impl FnOnce(&mut RunHere) -> R) -> R {
        let mut here = lock(&self.here);
        let entry = here.entry(run_id.to_string()).or_default();
        let out = change(entry);
        if !entry.active() {
            here.remove(run_id);
        }
        out
    }

    /// Stops driving a run whose lease another gateway took, recording nothing: the other
    /// gateway writes its state and events now.
    fn drop_run(&self, run_id: &str) {
        self.with_run(run_id, |run| {
            if let Some(token) = &run.driving {
                run.dropped = true;
                token.cancel();
            }
        });
    }

    /// Whether this process stopped driving the run because another gateway took its lease (or
    /// it ended meanwhile): its token fired, but not for the user's cancel.
    pub(crate) fn dropped_here(&self, run_id: &str) -> bool {
        self.with_run(run_id, |run| run.dropped)
    }

    /// Marks a run as being ingested here until the guard drops.
    fn ingesting(self: &Arc<Self>, run_id: &str) -> IngestingGuard {
        self.with_run(run_id, |run| run.ingesting = true);
        IngestingGuard {
            pipeline: self.clone(),
            run_id: run_id.to_string(),
        }
    }

    /// Wakes the run's watchers after a commit that appended one of its events.
    fn notify(&self, run_id: &str) {
        let senders = lock(&self.events);
        if let Some(sender) = senders.get(run_id) {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// Wakes the watchers when a store call committed an event with its change.
    pub(crate) fn saved(&self, event: Option<pb::RunEvent>) {
        if let Some(event) = event {
            self.notify(&event.run_id);
        }
    }

    pub(crate) async fn emit(&self, run_id: &str, kind: Kind) -> anyhow::Result<pb::RunEvent> {
        let event = self.store.append_event(run_id, kind).await?;
        self.notify(run_id);
        Ok(event)
    }

    pub(crate) async fn set_state(
        &self,
        run_id: &str,
        state: pb::RunState,
        error: &str,
    ) -> anyhow::Result<()> {
        self.store.set_run_state(run_id, state, error).await?;
        self.notify(run_id);
        Ok(())
    }

    /// For CreateRun: what a run asks of the analyzer (detectors and categories by name, its
    /// judge for model-judged detectors or for Evaluate's ratings) must be what it has, or
    /// every item would be refused hours later.
    pub async fn check_analyzer_can(
        &self,
        config: Option<&pb::RunConfig>,
    ) -> Result<(), ConfigRefused> {
        let Some(config) = config else {
            return Ok(());
        };
        let options = config.analyzer.clone().unwrap_or_default();
        let rates = stages(config).contains(&pb::Stage::Evaluate)
            && config.evaluation.as_ref().is_some_and(|e| e.judge);
        if !analyze::needs_taxonomy(&options) && !rates {
            return Ok(());
        }
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.clients.analyzer.taxonomy(),
        )
        .await;
        let taxonomy = match asked {
            Ok(Ok(t)) => t,
            Ok(Err(s)) => {
                return Err(ConfigRefused::AnalyzerUnreachable(format!(
                    "spec.config: the analyzer could not be asked what it can check ({}: {}); \
                     retry when it is up",
                    s.code(),
                    s.message()
                )));
            }
            Err(_) => {
                return Err(ConfigRefused::AnalyzerUnreachable(
                    "spec.config: the analyzer did not say in 10 s what it can check; retry \
                     when it is up"
                        .into(),
                ));
            }
        };
        if let Some((field, why)) = crate::clients::first_unsupported(&options, &taxonomy) {
            return Err(ConfigRefused::Unsupported {
                field: format!("spec.config.analyzer.{field}"),
                why: why.to_string(),
            });
        }
        if rates && !taxonomy.judge_available {
            return Err(ConfigRefused::Unsupported {
                field: "spec.config.evaluation.judge".into(),
                why: "the analyzer has no judge endpoint (its --judge-endpoint) to rate summaries"
                    .into(),
            });
        }
        Ok(())
    }

    /// Whether the trainer would train the run's student base with its hyperparameters (an
    /// architecture it does not know, a missing tokenizer): refused now rather than at
    /// Finetune. A trainer that cannot be asked is not a refusal: Finetune waits for it.
    pub async fn check_trainer_can(
        &self,
        config: Option<&pb::RunConfig>,
    ) -> Result<(), ConfigRefused> {
        let Some(config) = config.filter(|c| stages(c).contains(&pb::Stage::Finetune)) else {
            return Ok(());
        };
        let Ok(base) = finetune::student_base(self, config) else {
            return Ok(());
        };
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.clients
                .trainer
                .validate_job(&base, config.training.clone()),
        )
        .await;
        match asked {
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
                let (field, why) = arf_common::status::field_violations(&s)
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| ("base_model_dir".into(), s.message().into()));
                let field = match field.strip_prefix("hyperparameters.") {
                    Some(rest) => format!("spec.config.training.{rest}"),
                    None => "spec.config.student_base_model_dir".into(),
                };
                Err(ConfigRefused::Unsupported { field, why })
            }
            Ok(Err(s)) => {
                tracing::warn!(code = ?s.code(), error = %s.message(), "the trainer could not check the student base; Finetune will");
                Ok(())
            }
            Err(_) => {
                tracing::warn!("the trainer did not check the student base in 10 s; Finetune will");
                Ok(())
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Asks a running run to stop at its next item. Returns false if it is not running here.
    pub fn cancel(&self, run_id: &str) -> bool {
        self.with_run(run_id, |run| {
            run.driving
                .as_ref()
                .map(CancellationToken::cancel)
                .is_some()
        })
    }

    /// CancelRun for a run another gateway drives, or nobody does.
    pub async fn cancel_elsewhere(&self, run_id: &str) -> anyhow::Result<()> {
        use crate::store::CancelOutcome;
        match self.store.cancel_or_request(run_id).await? {
            CancelOutcome::Cancelled(event) => self.saved(Some(event)),
            CancelOutcome::Requested => {
                tracing::info!(run_id, "asked the gateway driving the run to cancel it");
            }
            CancelOutcome::AlreadyFinal => {}
        }
        Ok(())
    }

    /// Drives a run to its end on a task of its own (once: a run driven here already is left).
    pub fn start(self: &Arc<Self>, run_id: &str) {
        let token = self.shutdown.child_token();
        let started = self.with_run(run_id, |run| {
            if run.driving.is_some() {
                return false;
            }
            (run.driving, run.dropped) = (Some(token.clone()), false);
            true
        });
        if !started {
            return;
        }
        let this = self.clone();
        let run_id = run_id.to_string();
        tokio::spawn(async move {
            let span = tracing::info_span!("arf.run", run_id = %run_id);
            let outcome =
                tracing::Instrument::instrument(this.drive_through_outages(&run_id, &token), span)
                    .await;
            this.finish(&run_id, outcome).await;
            this.waits.forget_run(&run_id);
            this.with_run(&run_id, |run| {
                (run.driving, run.dropped, run.pending) = (None, false, None);
            });
        });
    }

    /// Records how a run driven here ended.
    async fn finish(&self, run_id: &str, outcome: Result<(), RunError>) {
        let lost = self.with_run(run_id, |run| std::mem::take(&mut run.dropped))
            || matches!(&outcome, Err(RunError::Failed(e)) if e.downcast_ref::<crate::store::LeaseLost>().is_some());
        if lost {
            tracing::warn!(run_id = %run_id, "stopped driving the run: another gateway claimed its lease since, or it ended");
            return;
        }
        let recorded = match outcome {
            Ok(()) => self.record_end(run_id, pb::RunState::Succeeded, "").await,
            Err(RunError::Cancelled) => {
                self.record_end(run_id, pb::RunState::Cancelled, "cancelled by request")
                    .await
            }
            // Left RUNNING on purpose, its lease freed: another gateway, or this one's next
            // process, takes it over at once.
            Err(RunError::ShuttingDown) => self.store.release_lease(run_id).await,
            Err(RunError::Failed(e)) => {
                tracing::error!(run_id = %run_id, error = %format!("{e:#}"), "run failed");
                self.record_end(run_id, pb::RunState::Failed, &format!("{e:#}"))
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(run_id = %run_id, error = %e, "cannot record the end of the run");
        }
    }

    async fn drive(&self, run_id: &str, token: &CancellationToken) -> Result<(), RunError> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {run_id} is not in the store"))?;
        if run.state == pb::RunState::Queued {
            self.set_state(run_id, pb::RunState::Running, "").await?;
        }
        for stage in stages(&run.config) {
            self.check(token)?;
            self.store.set_stage(run_id, stage).await?;
            self.emit_stage(run_id, &run.config, stage, true).await?;
            let s = StageRun {
                p: self,
                run_id,
                config: &run.config,
                token,
            };
            match stage {
                pb::Stage::Generate => generate::run(s).await?,
                pb::Stage::Analyze => analyze::run(s).await?,
                pb::Stage::Revise => revise::run(s).await?,
                pb::Stage::Finetune => finetune::run(s).await?,
                pb::Stage::Evaluate => evaluate::run(s).await?,
                pb::Stage::Unspecified => {}
            }
            self.emit_stage(run_id, &run.config, stage, false).await?;
        }
        Ok(())
    }

    async fn emit_stage(
        &self,
        run_id: &str,
        config: &pb::RunConfig,
        stage: pb::Stage,
        started: bool,
    ) -> anyhow::Result<()> {
        let counts = self
            .store
            .counts(run_id, crate::store::Unimproved::of(config))
            .await?;
        let progress = Some(stage_progress(&counts, stage));
        self.emit(
            run_id,
            Kind::Stage(pb::StageChanged {
                stage: stage as i32,
                started,
                progress,
            }),
        )
        .await?;
        Ok(())
    }

    /// Records a warning in the run's events (and the log): something an operator should know
    /// that did not stop the run.
    pub(crate) async fn warn(&self, run_id: &str, warning: String) -> anyhow::Result<()> {
        tracing::warn!(run_id, "{warning}");
        self.emit(run_id, Kind::Warning(warning)).await?;
        Ok(())
    }

    /// Works through the items `fetch` says are pending, a batch at a time, `concurrency()`
    /// items at once (asked again for each batch), until none is left. Each item's work commits its own result, so the next fetch
    /// (and a restarted gateway) never sees it again.
    pub(crate) async fn drain_pending<F, Fut, Fetched>(
        &self,
        token: &CancellationToken,
        concurrency: impl Fn() -> usize,
        fetch: impl Fn() -> Fetched,
        work: F,
    ) -> Result<(), RunError>
    where
        Fetched: std::future::Future<Output = anyhow::Result<Vec<crate::store::ItemRecord>>>,
        F: Fn(crate::store::ItemRecord) -> Fut,
        Fut: std::future::Future<Output = Result<(), RunError>>,
    {
        use futures::TryStreamExt;
        loop {
            self.check(token)?;
            let batch = fetch().await?;
            if batch.is_empty() {
                return Ok(());
            }
            let items = futures::stream::iter(batch.into_iter().map(Ok))
                .try_for_each_concurrent(concurrency(), &work);
            // A cancelled run (or a shutdown) drops the calls in flight at once: their items
            // saved nothing, so a resumed run does them again, and none is done twice.
            tokio::select! {
                done = items => done?,
                _ = token.cancelled() => return self.check(token),
            }
        }
    }

    pub(crate) fn check(&self, token: &CancellationToken) -> Result<(), RunError> {
        if self.shutdown.is_cancelled() {
            Err(RunError::ShuttingDown)
        } else if token.is_cancelled() {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// `generate`, `analyze`, ...: a stage as metrics and logs name it.
pub fn stage_name(stage: pb::Stage) -> String {
    stage
        .as_str_name()
        .trim_start_matches("STAGE_")
        .to_ascii_lowercase()
}

/// A run whose rows this process is storing, until it drops.
pub(crate) struct IngestingGuard {
    pipeline: Arc<Pipeline>,
    run_id: String,
}

impl Drop for IngestingGuard {
    fn drop(&mut self) {
        self.pipeline
            .with_run(&self.run_id, |run| run.ingesting = false);
    }
}

/// The configured stages in pipeline order (all of them when none is named).
pub fn stages(config: &pb::RunConfig) -> Vec<pb::Stage> {
    let all = [
        pb::Stage::Generate,
        pb::Stage::Analyze,
        pb::Stage::Revise,
        pb::Stage::Finetune,
        pb::Stage::Evaluate,
    ];
    if config.stages.is_empty() {
        return all.to_vec();
    }
    all.into_iter()
        .filter(|s| config.stages.contains(&(*s as i32)))
        .collect()
}

/// A stage's items, from the run's counts: for the API, the stage events and the progress
/// bars. Finetune counts steps, not items: its progress comes from the training job's events.
pub fn stage_progress(counts: &pb::RunCounts, stage: pb::Stage) -> pb::StageProgress {
    let (total, done, failed) = match stage {
        pb::Stage::Generate => (
            counts.without_summary,
            counts.generated,
            counts.generation_failed,
        ),
        pb::Stage::Analyze => (counts.rows, counts.analyzed, counts.analysis_failed),
        pb::Stage::Revise => (
            counts.rows - counts.held_out,
            counts.revise_done,
            counts.revisions_failed,
        ),
        pb::Stage::Evaluate => (counts.held_out, counts.evaluated, 0),
        pb::Stage::Finetune | pb::Stage::Unspecified => (0, 0, 0),
    };
    pb::StageProgress {
        stage: stage as i32,
        total,
        done,
        failed,
    }
}

/// The one way a model is asked to summarize a conversation: the teacher in Generate, the
/// students and the base model in Evaluate, exactly as the student was trained (greedy).
pub fn summarize_request(
    conversation: &arf_common::dataset::Conversation,
    config: &pb::RunConfig,
) -> pb::GenerateRequest {
    use arf_common::dataset::{SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
    let max = config
        .evaluation
        .as_ref()
        .map_or(0, |e| e.max_summary_tokens);
    let max_tokens = if max == 0 {
        DEFAULT_SUMMARY_TOKENS
    } else {
        max
    };
    pb::GenerateRequest {
        messages: vec![
            pb::ChatMessage {
                role: "system".into(),
                content: SUMMARIZE_SYSTEM_PROMPT.into(),
            },
            pb::ChatMessage {
                role: "user".into(),
                content: summarize_user_prompt(conversation),
            },
        ],
        params: Some(pb::GenerationParams {
            max_tokens,
            temperature: Some(0.0),
            top_p: None,
            stop: vec![],
        }),
        json_schema: String::new(),
    }
}

/// Tokens of a summary when the run's evaluation config names no budget.
const DEFAULT_SUMMARY_TOKENS: u32 = 160;

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy run wakes only its own watchers.
    #[tokio::test]
    async fn a_watcher_wakes_only_for_its_own_run() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = "http://127.0.0.1:9".to_string();
        let config = crate::config::GatewayConfig::local(
            dir.path().to_path_buf(),
            crate::clients::Endpoints {
                analyzer: nowhere.clone(),
                editors: vec![nowhere.clone()],
                teachers: Vec::new(),
                trainer: nowhere,
            },
        );
        let store = Arc::new(Store::open(&dir.path().join("arf.db")).await.unwrap());
        for id in ["a", "b"] {
            store
                .create_run(id, id, &pb::RunConfig::default())
                .await
                .unwrap();
        }
        let p = Pipeline::new(
            store,
            config.clients(4 << 20).unwrap(),
            dir.path().to_path_buf(),
            None,
            None,
            config.client_paths,
            CancellationToken::new(),
        );
        let mut a = p.subscribe("a");
        p.emit("b", Kind::Warning("b's".into())).await.unwrap();
        assert!(!a.has_changed().unwrap(), "woken by another run's event");
        p.emit("a", Kind::Warning("a's".into())).await.unwrap();
        assert!(a.has_changed().unwrap());
        a.mark_unchanged();
        drop(a);
        let _b = p.subscribe("b");
        assert_eq!(
            p.events.lock().unwrap().len(),
            1,
            "a run nobody watches holds no sender"
        );
    }
}
