//! Serving a fine-tuned student for evaluation: the trainer's merged model directory, loaded
//! through the editor's own code path (mistral.rs), on a loopback port of this process. A model
//! is loaded once however many runs evaluate with it at a time. Once the last of them releases
//! it, it stays loaded only until another model is asked for (Evaluate takes the models in turn,
//! the last of one pass first in the next, so a pass loads one model less) or Evaluate ends:
//! memory holds the models in use and nothing else, however many arms a comparison has.
//!
//! Each hosted engine is sized for what Evaluate asks of it: a batch of 16 short summaries
//! (and the scoring of their references), not the editor's 32 sequences.

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
    /// One per model directory, with how many callers use it.
    servers: Mutex<Vec<Served>>,
    peak: std::sync::atomic::AtomicUsize,
}

struct Served {
    model: std::path::PathBuf,
    server: RunningServer,
    users: usize,
}

/// Sequences a hosted engine decodes together: Evaluate's batch.
const HOSTED_MAX_SEQS: usize = 16;

/// Finished sequences whose KV caches a hosted engine keeps: Evaluate scores each human
/// reference (~3 a conversation) right after generating its summary from the same prompt:
/// kept, the summary's cache spares each reference a whole prefill (it computes only its own
/// tokens). Twice the batch, so that the scorings' own entries (oldest out first) do not push
/// a summary's out before its references come. Whole-prompt hits only (patches/README.md): the
/// summaries generated are the same as without the cache. An entry holds its tokens' K and V
/// (~46 KB a token for SmolLM2 in f32: ~0.8 GB at 32 entries of ~550 tokens).
const HOSTED_PREFIX_CACHE_SEQS: usize = 2 * HOSTED_MAX_SEQS;

/// Time for an unloaded engine's threads to end and drop what they hold.
const ENGINE_WIND_DOWN: std::time::Duration = std::time::Duration::from_millis(200);

impl LocalStudentHost {
    pub fn new(max_message_bytes: usize, data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            args: ServerArgs {
                max_message_bytes,
                ..ServerArgs::local()
            },
            servers: Mutex::new(Vec::new()),
            peak: Default::default(),
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

    async fn release(&self, model_dir: &Path) {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = servers.iter_mut().find(|s| s.model == model_dir) {
            s.users = s.users.saturating_sub(1);
        }
    }

    async fn unload_idle(&self) {
        self.unload_unused().await;
    }
}

impl LocalStudentHost {
    /// Stops every server nobody uses.
    async fn unload_unused(&self) {
        let unused: Vec<Served> = {
            let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
            let (idle, used) = std::mem::take(&mut *servers)
                .into_iter()
                .partition(|s| s.users == 0);
            *servers = used;
            idle
        };
        let any = !unused.is_empty();
        for served in unused {
            tracing::info!(model = %served.model.display(), "unloading the student");
            if let Err(e) = served.server.shutdown().await {
                tracing::warn!(model = %served.model.display(), error = %e, "stopping the student's server");
            }
        }
        if any {
            // The engine's threads drop the model as they end: let them, then give its memory
            // back (arf_common::process::release_free_memory says why it is not by itself).
            tokio::time::sleep(ENGINE_WIND_DOWN).await;
            arf_common::process::release_free_memory();
        }
    }
}

impl LocalStudentHost {
    /// How many models are loaded now.
    pub fn loaded(&self) -> usize {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The most models that were loaded at once.
    pub fn peak_loaded(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl LocalStudentHost {
    /// The loopback endpoint serving the model, loaded on first use; one more user of it,
    /// until [`StudentHost::release`].
    pub async fn endpoint(&self, model_dir: &Path) -> anyhow::Result<String> {
        if let Some(s) = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
            .find(|s| s.model == model_dir)
        {
            s.users += 1;
            return Ok(s.server.endpoint());
        }
        // Another model is wanted: the ones nobody uses go first, so memory holds only models
        // in use.
        self.unload_unused().await;
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
        let config = EditorConfig {
            max_seqs: HOSTED_MAX_SEQS,
            prefix_cache_seqs: HOSTED_PREFIX_CACHE_SEQS,
            ..EditorConfig::new(&served)
        };
        let service = editor_svc::load_editor(&config).await?;
        let server = serve_loopback(
            &self.args,
            EDITOR,
            true,
            Routes::new(service.into_server(self.args.max_message_bytes)),
        )
        .await?;
        let endpoint = server.endpoint();
        // Two callers may have loaded it at once: keep the first, stop this one.
        let first = {
            let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
            match servers.iter_mut().find(|s| s.model == model_dir) {
                Some(s) => {
                    s.users += 1;
                    s.server.endpoint()
                }
                None => {
                    servers.push(Served {
                        model: model_dir.to_path_buf(),
                        server,
                        users: 1,
                    });
                    self.peak
                        .fetch_max(servers.len(), std::sync::atomic::Ordering::Relaxed);
                    return Ok(endpoint);
                }
            }
        };
        let _ = server.shutdown().await;
        Ok(first)
    }
}
