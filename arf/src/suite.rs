//! The embedded default: all four services in one process, each on its own loopback port,
//! talking to each other over real gRPC exactly as separate deployments would.

use std::path::PathBuf;
use std::sync::Arc;

use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::{EDITOR, PIPELINE, TRAINER};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use gateway::clients::Endpoints;
use gateway::config::GatewayConfig;
use gateway::pipeline::Pipeline;

use crate::student_host::LocalStudentHost;

pub struct SuiteConfig {
    pub server: ServerArgs,
    /// SQLite, trainer state, reports and the tiny models live here.
    pub data_dir: PathBuf,
    /// The editor's model (HF directory or GGUF file); the tiny random model when none is given.
    pub editor_model: Option<PathBuf>,
    /// Student base model (directory or GGUF file); the tiny random model when none is given.
    pub student_base: Option<PathBuf>,
    /// Editor replicas to start (each loads the model); revision calls spread over them by load.
    pub editor_replicas: usize,
}

/// Prompts each editor keeps prefilled: Revise sends a round's other candidates after its first,
/// with the same prompt (one per flagged span), for ~4 items in flight per replica; room for
/// those, and the judge's prompts between them.
const EDITOR_PREFIX_CACHE_SEQS: usize = 32;

/// The tiny random-weight Llama under `data_dir`, written on first use.
pub fn tiny_model(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("tiny-llama");
    if !arf_tiny_llama::is_tiny_model(&dir) {
        arf_tiny_llama::write_tiny_llama(&dir, &arf_tiny_llama::TinyLlamaSpec::default())?;
    }
    tracing::warn!(
        model = %dir.display(),
        "using a tiny RANDOM-WEIGHT model: every code path is real, but its revisions and summaries are meaningless"
    );
    Ok(dir)
}

pub use analyzer_svc::serve::serve_on as serve_analyzer;

/// The four servers of a running suite.
pub struct Suite {
    pub analyzer: RunningServer,
    pub editors: Vec<RunningServer>,
    pub trainer: RunningServer,
    pub gateway: RunningServer,
    pub pipeline: Arc<Pipeline>,
    /// Serves the students that runs evaluate.
    pub student_host: Arc<LocalStudentHost>,
    shutdown: CancellationToken,
}

impl Suite {
    /// Starts every service on 127.0.0.1 with an OS-chosen port.
    pub async fn start(config: SuiteConfig) -> anyhow::Result<Self> {
        let args = &config.server;
        let limit = args.max_message_bytes;
        let shutdown = CancellationToken::new();

        let needs_tiny = config.editor_model.is_none() || config.student_base.is_none();
        let tiny = if needs_tiny {
            Some(tiny_model(&config.data_dir)?)
        } else {
            None
        };
        let editor_model = config
            .editor_model
            .clone()
            .or_else(|| tiny.clone())
            .unwrap_or_default();
        let student_base = config.student_base.clone().or(tiny);
        let mut editors = Vec::new();
        for _ in 0..config.editor_replicas.max(1) {
            let (editor_service, loading) = editor_svc::start_editor(editor_svc::EditorConfig {
                prefix_cache_seqs: EDITOR_PREFIX_CACHE_SEQS,
                ..editor_svc::EditorConfig::new(&editor_model)
            })?;
            // NOT_SERVING until the model has loaded and answered a warm-up.
            let editor = serve_loopback(
                args,
                EDITOR,
                false,
                Routes::new(editor_service.into_server(limit)),
            )
            .await?;
            loading.then_serving(editor.health()).await?;
            editors.push(editor);
        }

        // The model-judged detectors ask the first editor, as a deployment's --judge-endpoint would.
        let analyzer = serve_analyzer(
            args,
            &editors[0].endpoint(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            shutdown.clone(),
        )
        .await?;

        let jobs = trainer_svc::jobs::JobManager::open(
            &config.data_dir.join("trainer"),
            trainer_svc::device(),
        )?;
        let trainer_service = trainer_svc::grpc::TrainerService::new(jobs, shutdown.clone());
        let trainer = serve_loopback(
            args,
            TRAINER,
            true,
            Routes::new(trainer_service.into_server(limit)),
        )
        .await?;

        let gateway_config = GatewayConfig {
            student_base,
            ..GatewayConfig::local(
                config.data_dir.clone(),
                Endpoints {
                    analyzer: analyzer.endpoint(),
                    editors: editors.iter().map(RunningServer::endpoint).collect(),
                    teachers: Vec::new(),
                    trainer: trainer.endpoint(),
                },
            )
        };
        let student_host = Arc::new(LocalStudentHost::new(limit, &config.data_dir));
        let (pipeline, routes) = gateway::server::build(
            &gateway_config,
            limit,
            Some(student_host.clone()),
            shutdown.clone(),
        )
        .await?;
        let gateway = serve_loopback(args, PIPELINE, true, routes).await?;
        Ok(Self {
            analyzer,
            editors,
            trainer,
            gateway,
            pipeline,
            student_host,
            shutdown,
        })
    }

    pub fn gateway_endpoint(&self) -> String {
        self.gateway.endpoint()
    }

    pub fn analyzer_endpoint(&self) -> String {
        self.analyzer.endpoint()
    }

    pub fn trainer_endpoint(&self) -> String {
        self.trainer.endpoint()
    }

    pub fn editor_endpoints(&self) -> Vec<String> {
        self.editors.iter().map(RunningServer::endpoint).collect()
    }

    /// Gateway first, so nothing calls a service that is already gone.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.gateway.shutdown().await?;
        self.analyzer.shutdown().await?;
        for editor in self.editors {
            editor.shutdown().await?;
        }
        self.trainer.shutdown().await
    }
}
