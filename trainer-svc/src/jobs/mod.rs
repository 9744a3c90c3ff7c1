//! Training jobs: a durable queue (one job trains at a time per device), their events, and
//! their outputs. Nothing here knows about gRPC.

mod manager;
mod store;
mod uploads;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use manager::{ClientPaths, JobManager, MAX_ATTEMPTS};
pub use uploads::{UploadLimits, UploadWriter};
pub use validate::{check_example, validate_base, validate_spec};

use crate::train::{Example, TrainConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// Where a job's examples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum JobData {
    Inline(Vec<Example>),
    /// A JSONL file on the trainer's machine.
    Jsonl(PathBuf),
    /// A finished upload (its file): the job takes it over.
    Uploaded(PathBuf),
}

/// What a client asks for. `config.output_dir` is chosen by the manager.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub display_name: String,
    pub data: JobData,
    pub config: TrainConfig,
    pub labels: BTreeMap<String, String>,
    /// The client's idempotency key (empty: none).
    pub request_id: String,
    /// W3C trace context (`traceparent`, ...) of the call that created the job: the training
    /// span links to it.
    pub trace_context: BTreeMap<String, String>,
}

/// A job as stored and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub display_name: String,
    pub state: JobState,
    pub config: TrainConfig,
    pub labels: BTreeMap<String, String>,
    /// The idempotency key it was created with (jobs stored before keys existed have none).
    #[serde(default)]
    pub request_id: String,
    /// Times a worker started training it; a job that keeps killing the trainer is failed
    /// after [`MAX_ATTEMPTS`](manager::MAX_ATTEMPTS).
    #[serde(default)]
    pub attempts: u32,
    /// Where the examples were read from (the inline ones are saved beside the job).
    pub data_path: PathBuf,
    pub step: u64,
    pub total_steps: u64,
    pub last_loss: f64,
    pub last_eval_loss: f64,
    /// Unix milliseconds.
    pub create_time_ms: u64,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
    pub error: String,
    pub adapter_dir: Option<PathBuf>,
    pub merged_dir: Option<PathBuf>,
    pub last_event_sequence: u64,
    pub truncated_examples: u32,
    pub trace_context: BTreeMap<String, String>,
}

impl Job {
    /// A job just made: QUEUED, nothing trained, no labels or key.
    pub fn queued(
        id: String,
        display_name: String,
        config: TrainConfig,
        data_path: PathBuf,
    ) -> Self {
        Self {
            id,
            display_name,
            state: JobState::Queued,
            config,
            labels: BTreeMap::new(),
            request_id: String::new(),
            attempts: 0,
            data_path,
            step: 0,
            total_steps: 0,
            last_loss: 0.0,
            last_eval_loss: 0.0,
            create_time_ms: now_ms(),
            start_time_ms: None,
            end_time_ms: None,
            error: String::new(),
            adapter_dir: None,
            merged_dir: None,
            last_event_sequence: 0,
            truncated_examples: 0,
            trace_context: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Queued,
    Ended {
        state: JobState,
        error: String,
        adapter_dir: Option<PathBuf>,
        merged_dir: Option<PathBuf>,
    },
    /// What the training run reported, written as it always was (`{"step": {..}}`, untagged
    /// here), so the event logs of earlier versions read back.
    #[serde(untagged)]
    Training(crate::train::Event),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// From 1, one more per event of the job.
    pub sequence: u64,
    pub job_id: String,
    pub time_ms: u64,
    pub kind: EventKind,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no job {0}")]
    NotFound(String),
    #[error("job {id}: {message}")]
    NotReady { id: String, message: String },
    #[error("{0}")]
    Storage(String),
    /// A configured limit reached (RESOURCE_EXHAUSTED); the message names it and its flag.
    #[error("{0}")]
    Exhausted(String),
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
