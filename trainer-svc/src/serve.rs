//! The trainer as a server process: what `trainer-svc` (`serve`) and `arf trainer` run.

use std::path::PathBuf;

use arf_common::config::ServerArgs;
use arf_proto::service_names::TRAINER;
use tonic::service::Routes;

use crate::jobs::{JobManager, UploadLimits};

/// Serves the Trainer gRPC API.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Where jobs, their events, checkpoints and outputs are kept (survives restarts).
    #[arg(
        long,
        env = "ARF_TRAINER_STATE_DIR",
        default_value = "arf-trainer-state"
    )]
    pub state_dir: PathBuf,
    /// Folders under which a job's `base_model_dir` may be (repeat or comma-separate); outside
    /// them CreateJob answers PERMISSION_DENIED. None: no job can name a model.
    #[arg(long = "model-root", env = "ARF_MODEL_ROOTS", value_delimiter = ',')]
    pub model_roots: Vec<PathBuf>,
    /// Folders under which a job's `jsonl_path` may be. None: jobs send their examples inline.
    #[arg(
        long = "dataset-root",
        env = "ARF_DATASET_ROOTS",
        value_delimiter = ','
    )]
    pub dataset_roots: Vec<PathBuf>,
    /// Bytes one UploadExamples may write (its examples as JSONL); past it RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARF_TRAINER_MAX_UPLOAD_BYTES", default_value_t = UploadLimits::default().per_upload)]
    pub max_upload_bytes: u64,
    /// Bytes that uploads no job has claimed yet may hold on disk together (finished ones expire
    /// after an hour); past it a new upload's writes answer RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARF_TRAINER_MAX_PENDING_UPLOAD_BYTES", default_value_t = UploadLimits::default().pending)]
    pub max_pending_upload_bytes: u64,
}

/// Serves until SIGTERM or SIGINT: the running job halts at its next step and resumes from
/// its last checkpoint at the next start.
pub async fn run(serve: &ServeArgs) -> std::process::ExitCode {
    arf_common::server::run_binary(
        "arf-trainer",
        &[TRAINER],
        arf_proto::default_ports::TRAINER,
        &serve.server,
        serve,
        |health, shutdown| async move {
            let limits = UploadLimits {
                per_upload: serve.max_upload_bytes,
                pending: serve.max_pending_upload_bytes,
            };
            let device = crate::device();
            if device.is_cpu() {
                // Which GEMM path the trainer's figures come from, on whatever CPU it landed.
                tracing::info!(kernels = %arf_common::cpu::kernel_summary(), "CPU kernels");
            }
            let jobs = JobManager::open_with(&serve.state_dir, device, limits)?;
            let service = crate::grpc::TrainerService::new(jobs, shutdown)
                .confined_to(&serve.model_roots, &serve.dataset_roots);
            health.set_serving(TRAINER, true).await;
            Ok(Routes::new(
                service.into_server(serve.server.max_message_bytes),
            ))
        },
    )
    .await
}
