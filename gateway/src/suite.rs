//! The embedded default: all four services in one process, each on its own loopback port,
//! talking to each other over real gRPC exactly as separate deployments would.

use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::{ANALYZER, EDITOR, PIPELINE, TRAINER};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The four servers of a running suite.
pub struct Suite {
    pub analyzer: RunningServer,
    pub editor: RunningServer,
    pub trainer: RunningServer,
    pub gateway: RunningServer,
}

impl Suite {
    /// Starts every service on 127.0.0.1 with an OS-chosen port.
    pub async fn start(args: &ServerArgs) -> anyhow::Result<Self> {
        let limit = args.max_message_bytes;
        let analyzer_service = analyzer_svc::grpc::AnalyzerService::new(Default::default(), None, limit, CancellationToken::new());
        let analyzer = serve_loopback(args, ANALYZER, true, Routes::new(analyzer_service.into_server(limit))).await?;
        // No model is loaded yet, so the editor honestly reports NOT_SERVING.
        let editor = serve_loopback(args, EDITOR, false, Routes::new(editor_svc::grpc::EditorService.into_server(limit))).await?;
        let trainer = serve_loopback(args, TRAINER, true, Routes::new(trainer_svc::grpc::TrainerService.into_server(limit))).await?;
        let gateway = serve_loopback(args, PIPELINE, true, Routes::new(crate::grpc::PipelineService.into_server(limit))).await?;
        Ok(Self { analyzer, editor, trainer, gateway })
    }

    pub fn servers(&self) -> [(&'static str, &RunningServer); 4] {
        [(PIPELINE, &self.gateway), (ANALYZER, &self.analyzer), (EDITOR, &self.editor), (TRAINER, &self.trainer)]
    }

    /// Gateway first, so nothing calls a service that is already gone.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.gateway.shutdown().await?;
        self.analyzer.shutdown().await?;
        self.editor.shutdown().await?;
        self.trainer.shutdown().await
    }
}
