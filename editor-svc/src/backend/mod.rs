//! What serves the model: one [`Backend`] trait, two implementations. [`mistral`] hosts the
//! weights in this process (the default); [`openai`] forwards to a remote OpenAI-compatible
//! server (vLLM, TGI, llama.cpp's server, Ollama, a hosted API). The editor's domain code
//! (validation, limits, revision) sees only the trait.

pub mod mistral;
pub mod openai;
mod probe;
mod stream;

use std::any::Any;

pub use mistral::{MistralBackend, ModelSource, engine_request, load_model};
pub use openai::{OpenAiBackend, UpstreamConfig};
pub use probe::{EngineLoad, EngineProbe, SequenceGauges, SequenceStats};
pub use stream::TokenStream;
pub(crate) use stream::{Chunk, ChunkStream, StreamTelemetry};

use crate::error::EditorError;
use crate::generation::{ChatMessage, ChatRole, GenerationRequest, Prompt, Sampling};

/// A model that generates, and perhaps scores, chat replies.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// What the model is (GetModelInfo, telemetry).
    fn description(&self) -> &ModelDescription;

    /// Sequences this backend holds right now (an autoscaler's signal).
    fn engine_load(&self) -> EngineLoad;

    /// Starts a generation. The returned stream must be read for the generation to make
    /// progress past its buffer; dropping it cancels the generation.
    async fn start(&self, request: GenerationRequest) -> Result<TokenStream, EditorError>;

    /// The logprob of each token of `reply` as the assistant's answer to `messages`.
    /// `EditorError::Unsupported` where the backend cannot see a prompt's logprobs.
    async fn score(&self, messages: Vec<ChatMessage>, reply: &str) -> Result<Scored, EditorError>;

    /// For callers that need the concrete backend (benchmarks compare against the engine).
    fn as_any(&self) -> &dyn Any;
}

/// A short greedy generation: proves the model answers before health says SERVING.
pub async fn warm_up(backend: &dyn Backend) -> anyhow::Result<()> {
    let request = GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(ChatRole::User, "Hello")]),
        max_tokens: 4,
        sampling: Sampling::default(),
        stop: Vec::new(),
        json_schema: None,
    };
    let generation = backend.start(request).await?.collect().await?;
    anyhow::ensure!(
        generation.usage.output_tokens > 0 || !generation.text.is_empty(),
        "the warm-up generated no token"
    );
    Ok(())
}

/// What a served model is, for GetModelInfo and telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDescription {
    pub model_id: String,
    pub architecture: String,
    pub quantization: String,
    pub dtype: String,
    pub device: String,
    pub max_context_tokens: usize,
    pub max_concurrent_sequences: usize,
    pub random_weights: bool,
}

/// A scored reply: each token with its logprob, and the forced generation's usage and timing.
#[derive(Debug, Clone)]
pub struct Scored {
    pub tokens: Vec<(u32, f32)>,
    pub generation: crate::generation::Generation,
}

impl Scored {
    /// The reply's mean per-token negative log-likelihood.
    pub fn mean_nll(&self) -> f64 {
        -self.tokens.iter().map(|&(_, l)| f64::from(l)).sum::<f64>() / self.tokens.len() as f64
    }
}
