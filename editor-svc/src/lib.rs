//! The editor service: a model hosted through mistral.rs (or an OpenAI-compatible server it
//! forwards to), targeted revision, generic generation, over gRPC and the OpenAI HTTP API.
//!
//! Start it with [`start_editor`] (the model loads in the background while health says
//! NOT_SERVING) or [`load_editor`] (loads in the foreground), then serve
//! `EditorService::into_server`.

pub mod backend;
pub mod config;
pub mod editor;
pub mod error;
pub mod generation;
pub mod grpc;
pub mod http;
pub mod openai_wire;
pub mod revise;
pub mod serve;
mod span_edits;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context as _;
use arf_common::server::Health;
use arf_proto::service_names::EDITOR;
use tokio::task::JoinHandle;

pub use backend::{Backend, EngineLoad, MistralBackend, ModelDescription, ModelSource};
pub use config::{EditorArgs, EditorConfig};
pub use editor::{Editor, EditorLoad};
pub use grpc::EditorService;

/// A model load running in the background; see [`EditorLoading::then_serving`].
pub struct EditorLoading(JoinHandle<anyhow::Result<()>>);

impl EditorLoading {
    /// Waits for the model to load and answer its warm-up, then marks the editor SERVING on
    /// `health`. On failure health stays NOT_SERVING and the error is returned.
    pub async fn then_serving(self, health: &Health) -> anyhow::Result<()> {
        self.wait().await?;
        health.set_serving(EDITOR, true).await;
        Ok(())
    }

    /// Waits for the model to load and answer its warm-up.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.0.await.context("the model loading task panicked")?
    }
}

/// Builds the service and starts loading the model in the background. The service answers
/// UNAVAILABLE until the model has loaded and answered a warm-up generation. A model path that is
/// not a local model directory or GGUF file is refused at once (nothing is ever downloaded).
pub fn start_editor(config: EditorConfig) -> anyhow::Result<(EditorService, EditorLoading)> {
    if config.upstream.is_none() {
        ModelSource::resolve(&config.model_path)?;
    }
    let service = EditorService::loading();
    let slot = service.clone();
    let task = tokio::spawn(async move {
        let editor = Editor::load(&config).await?;
        slot.install(Arc::new(editor));
        Ok(())
    });
    Ok((service, EditorLoading(task)))
}

/// Loads the model, warms it up, and returns the ready service (tests, the benchmark).
pub async fn load_editor(config: &EditorConfig) -> anyhow::Result<EditorService> {
    Ok(EditorService::ready(Arc::new(Editor::load(config).await?)))
}
