//! The gRPC face of the trainer: the only place that maps between `arf.v1` and the domain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arf_common::dataset::conversation_from_wire;
use arf_common::paths::PathRoots;
use arf_common::server::ResponseStream;
use arf_common::server::watch::{EventLog, watch_log};
use arf_common::status::{internal_error, invalid_field};
use arf_proto::v1 as pb;
use arf_proto::v1::trainer_server::{Trainer, TrainerServer};
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::jobs::{
    ClientPaths, EventKind, Job, JobData, JobError, JobEvent, JobManager, JobSpec, JobState,
    UploadWriter, check_example, validate_base,
};
use crate::lora::LoraSpec;
use crate::lora::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::train::{Event, Example, TrainConfig};

/// Bytes per `FileChunk` (well under the default 4 MiB message limit).
const CHUNK: usize = 1 << 20;

pub struct TrainerService {
    jobs: JobManager,
    /// Cancelled at shutdown: open WatchJob streams end so the server can drain.
    shutdown: CancellationToken,
    /// Where a job's `base_model_dir` and `jsonl_path` may be (the job manager holds the same,
    /// to judge them again when the job trains).
    paths: ClientPaths,
}

impl TrainerService {
    /// A trainer that reads any path a client names (the embedded suite and tests); a served
    /// trainer confines them with [`Self::confined_to`].
    pub fn new(jobs: JobManager, shutdown: CancellationToken) -> Self {
        Self {
            jobs,
            shutdown,
            paths: ClientPaths {
                models: PathRoots::any("--model-root"),
                datasets: PathRoots::any("--dataset-root"),
            },
        }
    }

    /// Client-named models and datasets only under these folders: checked at CreateJob, and
    /// again by the job manager when the job trains (a file may have been swapped meanwhile).
    pub fn confined_to(self, models: &[PathBuf], datasets: &[PathBuf]) -> Self {
        let paths = ClientPaths {
            models: PathRoots::only(models, "--model-root"),
            datasets: PathRoots::only(datasets, "--dataset-root"),
        };
        self.jobs.confine_client_paths(paths.clone());
        Self { paths, ..self }
    }

    pub fn into_server(self, max_message_bytes: usize) -> TrainerServer<Self> {
        TrainerServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

impl From<JobError> for Status {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Invalid { field, message } => invalid_field(&field, message),
            JobError::NotFound(what) => Status::not_found(format!("no job {what}")),
            JobError::NotReady { .. } => Status::failed_precondition(e.to_string()),
            JobError::Exhausted(m) => Status::resource_exhausted(m),
            JobError::Storage(m) => {
                arf_common::status::internal_error("the trainer's job store", &m)
            }
        }
    }
}

fn job_id(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(invalid_field("job_id", "must be set"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl Trainer for TrainerService {
    type WatchJobStream = ResponseStream<pb::JobEvent>;
    type DownloadAdapterStream = ResponseStream<pb::FileChunk>;

    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let request = request.into_inner();
        if request.validate_only {
            let config = self.base_config(&request.base_model_dir, request.hyperparameters)?;
            tokio::task::spawn_blocking(move || validate_base(&config))
                .await
                .map_err(|e| internal_error("validate job", &e))??;
            return Ok(Response::new(pb::Job::default()));
        }
        let spec = self.job_spec(request)?;
        let jobs = self.jobs.clone();
        // Validation reads the model's config and tokenizer: blocking file work.
        let job = tokio::task::spawn_blocking(move || jobs.create(spec))
            .await
            .map_err(|e| internal_error("create job", &e))??;
        tracing::info!(job_id = %job.id, "job queued");
        Ok(Response::new(job_to_pb(&job)))
    }

    async fn upload_examples(
        &self,
        request: Request<tonic::Streaming<pb::UploadExamplesRequest>>,
    ) -> Result<Response<pb::UploadExamplesResponse>, Status> {
        let mut chunks = request.into_inner();
        let mut upload = self.jobs.begin_upload()?;
        // A broken stream or a bad example leaves nothing nameable behind.
        loop {
            let chunk = match chunks.message().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(status) => {
                    upload.abandon();
                    return Err(status);
                }
            };
            // Chunks are at most one message: writing one is short blocking work.
            let written = tokio::task::spawn_blocking(move || {
                match write_chunk(&mut upload, chunk.examples) {
                    Ok(()) => Ok(upload),
                    Err(e) => {
                        upload.abandon();
                        Err(e)
                    }
                }
            })
            .await
            .map_err(|e| internal_error("upload", &e))?;
            upload = written?;
        }
        if upload.examples() == 0 {
            upload.abandon();
            return Err(invalid_field("examples", "at least one example is needed"));
        }
        let examples = upload.examples();
        let upload_id = tokio::task::spawn_blocking(move || upload.finish())
            .await
            .map_err(|e| internal_error("upload", &e))??;
        tracing::info!(%upload_id, examples, "examples uploaded");
        Ok(Response::new(pb::UploadExamplesResponse {
            upload_id,
            examples,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.into_inner();
        Ok(Response::new(job_to_pb(
            &self.jobs.get(job_id(&r.job_id)?)?,
        )))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = request.into_inner();
        let size = arf_common::paging::page_size(r.page_size);
        let (jobs, next_page_token) = self.jobs.list(size, &r.page_token);
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.into_inner();
        Ok(Response::new(job_to_pb(
            &self.jobs.cancel(job_id(&r.job_id)?)?,
        )))
    }

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = request.into_inner();
        let id = job_id(&r.job_id)?.to_string();
        self.jobs.get(&id)?;
        let changes = self.jobs.subscribe();
        let log = JobLog {
            jobs: self.jobs.clone(),
            id,
        };
        Ok(Response::new(watch_log(
            log,
            changes,
            self.shutdown.clone(),
            r.after_sequence,
        )))
    }

    async fn list_checkpoints(
        &self,
        request: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let r = request.into_inner();
        let checkpoints = self
            .jobs
            .checkpoints(job_id(&r.job_id)?)?
            .into_iter()
            .map(|(step, path, ms)| pb::Checkpoint {
                step,
                path: path.display().to_string(),
                create_time: Some(timestamp(ms)),
            })
            .collect();
        Ok(Response::new(pb::ListCheckpointsResponse { checkpoints }))
    }

    async fn download_adapter(
        &self,
        request: Request<pb::DownloadAdapterRequest>,
    ) -> Result<Response<Self::DownloadAdapterStream>, Status> {
        let r = request.into_inner();
        let dir = self
            .jobs
            .adapter_dir(job_id(&r.job_id)?, r.checkpoint_step)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
                if let Err(status) = send_file(&tx, &dir.join(name), name).await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn send_file(
    tx: &tokio::sync::mpsc::Sender<Result<pb::FileChunk, Status>>,
    path: &std::path::Path,
    name: &str,
) -> Result<(), Status> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| internal_error(name, &e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| internal_error(name, &e))?
        .len();
    let mut offset = 0u64;
    loop {
        let mut data = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = file
                .read(&mut data[filled..])
                .await
                .map_err(|e| internal_error(name, &e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        data.truncate(filled);
        let last = offset + filled as u64 >= size;
        let chunk = pb::FileChunk {
            file_name: name.into(),
            offset,
            data,
            last_chunk_of_file: last,
            file_size: size,
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(());
        }
        offset += filled as u64;
        if last {
            return Ok(());
        }
    }
}

// ---- proto -> domain ----

impl TrainerService {
    /// The base (confined to the model roots) and the hyperparameters, as a training config.
    fn base_config(
        &self,
        base: &str,
        hyperparameters: Option<pb::Hyperparameters>,
    ) -> Result<TrainConfig, Status> {
        if base.trim().is_empty() {
            return Err(invalid_field("base_model_dir", "must be set"));
        }
        let base = self.paths.models.confine("base_model_dir", base)?;
        config(&base, hyperparameters.unwrap_or_default())
    }

    fn job_spec(&self, r: pb::CreateJobRequest) -> Result<JobSpec, Status> {
        let mut config = self.base_config(&r.base_model_dir, r.hyperparameters)?;
        let data = match r.data {
            None => {
                return Err(invalid_field(
                    "data",
                    "set inline examples, jsonl_path or upload_id",
                ));
            }
            Some(pb::create_job_request::Data::UploadId(id)) => {
                JobData::Uploaded(self.jobs.finished_upload(&id)?)
            }
            Some(pb::create_job_request::Data::JsonlPath(p)) if p.trim().is_empty() => {
                return Err(invalid_field("jsonl_path", "must not be empty"));
            }
            Some(pb::create_job_request::Data::JsonlPath(p)) => {
                JobData::Jsonl(self.paths.datasets.confine("jsonl_path", &p)?)
            }
            Some(pb::create_job_request::Data::Inline(i)) => JobData::Inline(
                i.examples
                    .into_iter()
                    .enumerate()
                    .map(|(n, e)| example(&format!("inline.examples[{n}]"), e))
                    .collect::<Result<_, _>>()?,
            ),
        };
        config.export_merged = r.export_merged;
        Ok(JobSpec {
            display_name: r.display_name,
            data,
            config,
            labels: r.labels.into_iter().collect(),
            request_id: r.request_id,
            trace_context: current_trace_context(),
        })
    }
}

/// Checks and stores one chunk of an upload; errors name the example by its place in the
/// whole upload (`examples[1234].summary`).
fn write_chunk(
    upload: &mut UploadWriter,
    examples: Vec<pb::TrainingExample>,
) -> Result<(), Status> {
    for e in examples {
        let field = format!("examples[{}]", upload.examples());
        let example = example(&field, e)?;
        check_example(&field, &example)?;
        upload.write(&example)?;
    }
    Ok(())
}

/// `field`: the example's path in the request, for the errors.
fn example(field: &str, e: pb::TrainingExample) -> Result<Example, Status> {
    let conversation = conversation_from_wire(e.conversation, &format!("{field}.conversation"))?;
    Ok(Example {
        conversation,
        summary: e.summary,
    })
}

/// The request's hyperparameters with the server's defaults for zero values.
fn config(base: &std::path::Path, h: pb::Hyperparameters) -> Result<TrainConfig, Status> {
    arf_common::bounds::check_hyperparameters(&h)
        .map_err(|(f, m)| invalid_field(&format!("hyperparameters.{f}"), m))?;
    let mut c = TrainConfig::with_defaults(base, PathBuf::new());
    let lora = h.lora.unwrap_or_default();
    let rank = if lora.rank == 0 {
        crate::lora::DEFAULT_RANK
    } else {
        lora.rank as usize
    };
    let alpha = if lora.alpha == 0.0 {
        LoraSpec::default_alpha(rank)
    } else {
        f64::from(lora.alpha)
    };
    let target_modules = LoraSpec::normalize_modules(&lora.target_modules)
        .map_err(|m| invalid_field("hyperparameters.lora.target_modules", m))?;
    c.lora = LoraSpec {
        rank,
        alpha,
        dropout: lora.dropout,
        target_modules,
    };
    let or = |v: u32, d: usize| if v == 0 { d } else { v as usize };
    if h.learning_rate != 0.0 {
        c.learning_rate = h.learning_rate;
    }
    if h.epochs != 0 {
        c.epochs = h.epochs;
    }
    c.max_steps = u64::from(h.max_steps);
    c.batch_size = or(h.batch_size, c.batch_size);
    c.gradient_accumulation_steps =
        or(h.gradient_accumulation_steps, c.gradient_accumulation_steps);
    c.warmup_steps = u64::from(h.warmup_steps);
    c.weight_decay = h.weight_decay;
    if h.max_grad_norm != 0.0 {
        c.max_grad_norm = h.max_grad_norm;
    }
    c.max_seq_len = or(h.max_seq_len, c.max_seq_len);
    if h.seed != 0 {
        c.seed = h.seed;
    }
    c.eval_every_steps = u64::from(h.eval_every_steps);
    c.checkpoint_every_steps = u64::from(h.checkpoint_every_steps);
    c.eval_fraction = h.eval_fraction;
    if !h.base_dtype.is_empty() {
        c.base_dtype = h.base_dtype;
    }
    c.validate().map_err(|(f, m)| invalid_field(&f, m))?;
    Ok(c)
}

/// The W3C trace context of the current span (the CreateJob call), for the training span's link.
fn current_trace_context() -> BTreeMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    arf_common::telemetry::context_to_map(&tracing::Span::current().context())
}

/// A job's event log, for WatchJob: it ends at the job's `Ended` event.
struct JobLog {
    jobs: JobManager,
    id: String,
}

impl EventLog for JobLog {
    type Event = pb::JobEvent;

    async fn after(&self, after: u64) -> Result<Vec<pb::JobEvent>, Status> {
        Ok(self
            .jobs
            .events_after(&self.id, after)?
            .iter()
            .map(event_to_pb)
            .collect())
    }

    async fn terminal(&self) -> Result<Option<u64>, Status> {
        let last = self.jobs.last_event(&self.id)?;
        Ok(last
            .filter(|e| matches!(e.kind, EventKind::Ended { .. }))
            .map(|e| e.sequence))
    }

    fn sequence(event: &pb::JobEvent) -> u64 {
        event.sequence
    }
}

// ---- domain -> proto ----

fn timestamp(ms: u64) -> prost_types::Timestamp {
    arf_proto::timestamp_from_millis(ms as i64)
}

fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

fn outputs(adapter: &Option<PathBuf>, merged: &Option<PathBuf>) -> Option<pb::JobOutputs> {
    adapter.as_ref().map(|a| pb::JobOutputs {
        adapter_dir: a.display().to_string(),
        merged_model_dir: merged
            .as_ref()
            .map(|m| m.display().to_string())
            .unwrap_or_default(),
    })
}

fn hyperparameters_to_pb(c: &TrainConfig) -> pb::Hyperparameters {
    pb::Hyperparameters {
        lora: Some(pb::LoraConfig {
            rank: c.lora.rank as u32,
            alpha: c.lora.alpha as f32,
            dropout: c.lora.dropout,
            target_modules: c.lora.target_modules.clone(),
        }),
        learning_rate: c.learning_rate,
        epochs: c.epochs,
        max_steps: c.max_steps as u32,
        batch_size: c.batch_size as u32,
        gradient_accumulation_steps: c.gradient_accumulation_steps as u32,
        warmup_steps: c.warmup_steps as u32,
        weight_decay: c.weight_decay,
        max_grad_norm: c.max_grad_norm,
        max_seq_len: c.max_seq_len as u32,
        seed: c.seed,
        eval_every_steps: c.eval_every_steps as u32,
        checkpoint_every_steps: c.checkpoint_every_steps as u32,
        eval_fraction: c.eval_fraction,
        base_dtype: c.base_dtype.clone(),
    }
}

pub fn job_to_pb(j: &Job) -> pb::Job {
    pb::Job {
        id: j.id.clone(),
        display_name: j.display_name.clone(),
        state: state_to_pb(j.state) as i32,
        base_model_dir: j.config.base_model_dir.display().to_string(),
        hyperparameters: Some(hyperparameters_to_pb(&j.config)),
        labels: j.labels.clone().into_iter().collect(),
        step: j.step,
        total_steps: j.total_steps,
        last_loss: j.last_loss,
        last_eval_loss: j.last_eval_loss,
        create_time: Some(timestamp(j.create_time_ms)),
        start_time: j.start_time_ms.map(timestamp),
        end_time: j.end_time_ms.map(timestamp),
        error: j.error.clone(),
        outputs: outputs(&j.adapter_dir, &j.merged_dir),
        last_event_sequence: j.last_event_sequence,
        truncated_examples: j.truncated_examples,
    }
}

fn event_to_pb(e: &JobEvent) -> pb::JobEvent {
    use pb::job_event::Kind;
    let kind = match &e.kind {
        EventKind::Queued => Kind::Queued(pb::JobState::Queued as i32),
        EventKind::Training(Event::Started {
            total_steps,
            resumed,
            from_step,
            train_examples,
            eval_examples,
        }) => Kind::Started(pb::JobStarted {
            total_steps: *total_steps,
            resumed: *resumed,
            from_step: *from_step,
            train_examples: *train_examples,
            eval_examples: *eval_examples,
        }),
        EventKind::Training(Event::Step {
            step,
            total_steps,
            loss,
            learning_rate,
            tokens_per_second,
            grad_norm,
            epoch,
        }) => Kind::Step(pb::StepEvent {
            step: *step,
            total_steps: *total_steps,
            loss: *loss,
            learning_rate: *learning_rate,
            tokens_per_second: *tokens_per_second,
            grad_norm: *grad_norm,
            epoch: *epoch,
        }),
        EventKind::Training(Event::Eval { step, eval_loss }) => Kind::Eval(pb::EvalEvent {
            step: *step,
            eval_loss: *eval_loss,
        }),
        EventKind::Training(Event::Checkpoint { step, path }) => Kind::Checkpoint(pb::Checkpoint {
            step: *step,
            path: path.display().to_string(),
            create_time: Some(timestamp(e.time_ms)),
        }),
        EventKind::Training(Event::Warning(w)) => Kind::Warning(w.clone()),
        EventKind::Ended {
            state,
            error,
            adapter_dir,
            merged_dir,
        } => Kind::Ended(pb::JobEnded {
            state: state_to_pb(*state) as i32,
            error: error.clone(),
            outputs: outputs(adapter_dir, merged_dir),
        }),
    };
    pb::JobEvent {
        sequence: e.sequence,
        job_id: e.job_id.clone(),
        time: Some(timestamp(e.time_ms)),
        kind: Some(kind),
    }
}
