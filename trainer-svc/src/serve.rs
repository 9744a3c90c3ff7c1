//! The trainer as a server process: what `trainer-svc` (`serve`) and `arf trainer` run.

use std::path::PathBuf;

use arf_common::config::ServerArgs;
use arf_proto::service_names::TRAINER;
use tonic::service::Routes;

use crate::jobs::JobManager;

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
}

/// Serves until SIGTERM or SIGINT: the running job halts at its next step and resumes from
/// its last checkpoint at the next start.
pub async fn run(serve: &ServeArgs) -> std::process::ExitCode {
    arf_common::server::run_binary(
        "arf-trainer",
        &[TRAINER],
        50053,
        &serve.server,
        serve,
        |health, shutdown| async move {
            let jobs = JobManager::open(&serve.state_dir, crate::device())?;
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
