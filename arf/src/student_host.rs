//! Serving a fine-tuned student for evaluation: the trainer's merged model directory, loaded
//! through the editor's own code path (mistral.rs), on a loopback port of this process.

use std::path::Path;
use std::sync::Mutex;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::EDITOR;
use editor_svc::EditorConfig;
use tonic::service::Routes;

use gateway::pipeline::StudentHost;
use trainer_svc::model::BaseModel;

pub struct LocalStudentHost {
    args: ServerArgs,
    /// Where a GGUF base model's dequantized copy is written (once) before it is served.
    data_dir: std::path::PathBuf,
    /// Kept alive for the gateway's lifetime; one per model directory.
    servers: Mutex<Vec<(std::path::PathBuf, RunningServer)>>,
}

impl LocalStudentHost {
    pub fn new(max_message_bytes: usize, data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            args: ServerArgs {
                max_message_bytes,
                ..ServerArgs::local()
            },
            servers: Mutex::new(Vec::new()),
        }
    }
}

#[tonic::async_trait]
impl StudentHost for LocalStudentHost {
    async fn serve(&self, model_dir: &Path) -> anyhow::Result<GrpcChannel> {
        let endpoint = self.endpoint(model_dir).await?;
        // Loopback, in this process: no TLS, no token.
        connect_lazy(&endpoint, &ClientOptions::default())
    }
}

impl LocalStudentHost {
    /// The loopback endpoint serving the model, loaded on first use.
    pub async fn endpoint(&self, model_dir: &Path) -> anyhow::Result<String> {
        if let Some((_, s)) = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(d, _)| d == model_dir)
        {
            return Ok(s.endpoint());
        }
        tracing::info!(model = %model_dir.display(), "loading the student for evaluation");
        // A GGUF base (the zero-shot comparison) is served from its f32 copy: the same numbers
        // the students were merged in, and several times faster on a CPU than Q4 kernels.
        let is_gguf = matches!(BaseModel::resolve(model_dir), Ok(BaseModel::Gguf(_)));
        let served = if is_gguf {
            let (gguf, data_dir) = (model_dir.to_path_buf(), self.data_dir.clone());
            tokio::task::spawn_blocking(move || {
                crate::cli::models::dequantized_copy(&gguf, &data_dir)
            })
            .await??
        } else {
            model_dir.to_path_buf()
        };
        let service = editor_svc::load_editor(&EditorConfig::new(&served)).await?;
        let server = serve_loopback(
            &self.args,
            EDITOR,
            true,
            Routes::new(service.into_server(self.args.max_message_bytes)),
        )
        .await?;
        let endpoint = server.endpoint();
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((model_dir.to_path_buf(), server));
        Ok(endpoint)
    }
}
