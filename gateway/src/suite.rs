//! The embedded default: all four services in one process, each on its own loopback port,
//! talking to each other over real gRPC exactly as separate deployments would.

use std::path::PathBuf;
use std::sync::Arc;

use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::{ANALYZER, EDITOR, PIPELINE, TRAINER};
use arf_proto::v1::analyzer_client::AnalyzerClient;
use arf_proto::v1::trainer_client::TrainerClient;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::editors::EditorPool;
use crate::grpc::PipelineService;
use crate::pipeline::{Clients, Pipeline};
use crate::store::Store;

pub struct SuiteConfig {
    pub server: ServerArgs,
    /// SQLite, trainer state, reports and the tiny models live here.
    pub data_dir: PathBuf,
    /// Student base model; the tiny random model when none is given.
    pub student_base: Option<PathBuf>,
}

/// The four servers of a running suite.
pub struct Suite {
    pub analyzer: RunningServer,
    pub editor: RunningServer,
    pub trainer: RunningServer,
    pub gateway: RunningServer,
    pub pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
}

fn endpoint(server: &RunningServer) -> String {
    format!("http://{}", server.local_addr())
}

impl Suite {
    /// Starts every service on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SuiteConfig) -> anyhow::Result<Self> {
        let args = &config.server;
        let limit = args.max_message_bytes;
        let shutdown = CancellationToken::new();

        let analyzer_service = analyzer_svc::grpc::AnalyzerService::new(Default::default(), None, limit, shutdown.clone());
        let analyzer = serve_loopback(args, ANALYZER, true, Routes::new(analyzer_service.into_server(limit))).await?;

        // No model is loaded yet, so the editor honestly reports NOT_SERVING.
        let editor = serve_loopback(args, EDITOR, false, Routes::new(editor_svc::grpc::EditorService.into_server(limit))).await?;

        let jobs = trainer_svc::jobs::JobManager::open(&config.data_dir.join("trainer"), trainer_svc::device())?;
        let trainer_service = trainer_svc::grpc::TrainerService::new(jobs, shutdown.clone());
        let trainer = serve_loopback(args, TRAINER, true, Routes::new(trainer_service.into_server(limit))).await?;

        let options = ClientOptions::default();
        let clients = Clients {
            analyzer: AnalyzerClient::new(connect_lazy(&endpoint(&analyzer), &options)?).max_decoding_message_size(limit),
            editors: EditorPool::connect(&[endpoint(&editor)], &options, limit)?,
            trainer: TrainerClient::new(connect_lazy(&endpoint(&trainer), &options)?).max_decoding_message_size(limit),
        };
        let store = Arc::new(Store::open(&config.data_dir.join("arf.sqlite3"))?);
        let pipeline = Pipeline::new(store, clients, config.data_dir.clone(), config.student_base.clone(), shutdown.clone());
        pipeline.resume_unfinished()?;
        let gateway_service = PipelineService::new(pipeline.clone(), shutdown.clone());
        let gateway = serve_loopback(args, PIPELINE, true, Routes::new(gateway_service.into_server(limit))).await?;
        Ok(Self { analyzer, editor, trainer, gateway, pipeline, shutdown })
    }

    pub fn servers(&self) -> [(&'static str, &RunningServer); 4] {
        [(PIPELINE, &self.gateway), (ANALYZER, &self.analyzer), (EDITOR, &self.editor), (TRAINER, &self.trainer)]
    }

    pub fn gateway_endpoint(&self) -> String {
        endpoint(&self.gateway)
    }

    /// Gateway first, so nothing calls a service that is already gone.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.gateway.shutdown().await?;
        self.analyzer.shutdown().await?;
        self.editor.shutdown().await?;
        self.trainer.shutdown().await
    }
}
