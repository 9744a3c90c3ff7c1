//! Serving a fine-tuned student for evaluation: the trainer's merged model directory, loaded
//! through the editor's own code path (mistral.rs), on a loopback port of this process.

use std::path::Path;
use std::sync::Mutex;

use arf_common::config::ServerArgs;
use arf_common::server::{RunningServer, serve_loopback};
use arf_proto::service_names::EDITOR;
use editor_svc::EditorConfig;
use tonic::service::Routes;

use crate::pipeline::StudentHost;

pub struct LocalStudentHost {
    args: ServerArgs,
    /// Kept alive for the gateway's lifetime; one per model directory.
    servers: Mutex<Vec<(std::path::PathBuf, RunningServer)>>,
}

impl LocalStudentHost {
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
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
    async fn serve(&self, model_dir: &Path) -> anyhow::Result<String> {
        if let Some((_, s)) = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(d, _)| d == model_dir)
        {
            return Ok(format!("http://{}", s.local_addr()));
        }
        tracing::info!(model = %model_dir.display(), "loading the student for evaluation");
        let service = editor_svc::load_editor(&EditorConfig::new(model_dir)).await?;
        let server = serve_loopback(
            &self.args,
            EDITOR,
            true,
            Routes::new(service.into_server(self.args.max_message_bytes)),
        )
        .await?;
        let endpoint = format!("http://{}", server.local_addr());
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((model_dir.to_path_buf(), server));
        Ok(endpoint)
    }
}
