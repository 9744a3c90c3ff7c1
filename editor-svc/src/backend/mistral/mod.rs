//! The default backend: one model per process, hosted by mistral.rs. mistral.rs runs its own
//! engine thread and batches the sequences of concurrent requests; this type turns a
//! [`GenerationRequest`] into an engine request and hands back its [`TokenStream`].

mod load;
mod model_dir;
mod score;
mod stream;

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use either::Either;
use mistralrs::core::RequestMessage;
use mistralrs::{
    Constraint, CustomLogitsProcessor, Model, NormalRequest, Request, RequestBuilder,
    RequestLike as _, StopTokens, Tensor, TextMessageRole, TextMessages,
};

pub use load::{ModelSource, load_model};
use stream::Expected;

use super::{
    Backend, EngineLoad, EngineProbe, ModelDescription, Scored, SequenceGauges, SequenceStats,
    StreamTelemetry, TokenStream,
};
use crate::config::EditorConfig;
use crate::error::EditorError;
use crate::generation::{ChatMessage, ChatRole, GenerationRequest, Prompt, Sampling};
use crate::telemetry::{self, GenAiMetrics};
use score::ForcedReply;

/// Bytes a chat template may add around the messages, plus per message (headers, a default
/// system prompt): with them, prompt bytes bound prompt tokens from above (a token is at least
/// one byte), so most requests need no tokenizer round-trip to check the context.
const TEMPLATE_SLACK_BYTES: usize = 512;
const PER_MESSAGE_SLACK_BYTES: usize = 64;

pub struct MistralBackend {
    model: Model,
    description: ModelDescription,
    model_id: Arc<str>,
    gauges: Arc<SequenceGauges>,
    metrics: GenAiMetrics,
    capture_content: bool,
}

impl MistralBackend {
    /// Loads the model (see [`load_model`]); no warm-up yet.
    pub async fn load(config: &EditorConfig) -> anyhow::Result<Self> {
        let (model, description) = load_model(config).await?;
        Ok(Self::from_model(model, description, config.log_content))
    }

    pub fn from_model(model: Model, description: ModelDescription, capture_content: bool) -> Self {
        Self {
            model_id: description.model_id.as_str().into(),
            model,
            description,
            gauges: Arc::default(),
            metrics: GenAiMetrics::new(telemetry::PROVIDER_MISTRAL_RS),
            capture_content,
        }
    }

    /// The backend of an editor, when it is this one (benchmarks compare against the engine).
    pub fn of(backend: &dyn Backend) -> Option<&Self> {
        backend.as_any().downcast_ref()
    }

    /// The mistral.rs model, for callers that compare against it directly (the benchmark).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// [`Self::start`], with one more logits processor after the probe.
    async fn start_with(
        &self,
        request: GenerationRequest,
        processor: Option<Arc<dyn CustomLogitsProcessor>>,
    ) -> Result<TokenStream, EditorError> {
        self.check_context(&request).await?;
        let started = Instant::now();
        let span = telemetry::generation_span(
            telemetry::PROVIDER_MISTRAL_RS,
            &self.model_id,
            &request,
            self.capture_content,
        );
        let has_schema = request.json_schema.is_some();
        let max_tokens = request.max_tokens;
        let text_prompt = match &request.prompt {
            Prompt::Text(text) => Some(text.clone()),
            Prompt::Chat(_) => None,
        };
        let mut builder = engine_request(request);
        let stats = Arc::new(SequenceStats::default());
        builder = builder.add_logits_processor(Arc::new(EngineProbe::new(
            self.gauges.clone(),
            stats.clone(),
            self.metrics.clone(),
        )));
        if let Some(processor) = processor {
            builder = builder.add_logits_processor(processor);
        }

        // Room for every chunk the sequence can send: the engine awaits each send, so a slow
        // reader with a small buffer would stall every sequence in the batch, not just its own.
        let (tx, rx) = tokio::sync::mpsc::channel(max_tokens + 8);
        let normal = NormalRequest {
            messages: match text_prompt {
                // Tokenized as it is (with the tokenizer's BOS), no chat template.
                Some(text) => RequestMessage::Completion {
                    text,
                    echo_prompt: false,
                    best_of: None,
                },
                None => builder.take_messages(),
            },
            sampling_params: builder.take_sampling_params(),
            response: tx,
            return_logprobs: false,
            is_streaming: true,
            id: 0,
            constraint: builder.take_constraint(),
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: builder.take_logits_processors(),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        };
        let sender = self
            .model
            .inner()
            .get_sender(None)
            .map_err(|e| EditorError::Engine(e.to_string()))?;
        sender
            .send(Request::Normal(Box::new(normal)))
            .await
            .map_err(|_| EditorError::Engine("the engine has stopped".into()))?;
        let telemetry = StreamTelemetry {
            span,
            model: self.model_id.clone(),
            metrics: self.metrics.clone(),
            capture_content: self.capture_content,
        };
        let expected = Expected {
            has_schema,
            max_tokens,
            stats,
        };
        Ok(TokenStream::new(
            stream::chunks(rx, expected),
            started,
            telemetry,
        ))
    }

    /// The logprob of each token of `reply` as the assistant's answer to `messages` (see
    /// `score.rs`): the tokens the chat template renders for it, up to the end-of-turn token
    /// that stops the sequence.
    async fn score_reply(
        &self,
        messages: Vec<ChatMessage>,
        reply: &str,
    ) -> Result<Scored, EditorError> {
        let prompt = self.tokenize_chat(&messages, true).await?;
        let mut chat = messages.clone();
        chat.push(ChatMessage::new(ChatRole::Assistant, reply));
        let full = self.tokenize_chat(&chat, false).await?;
        let targets = full.strip_prefix(prompt.as_slice()).ok_or_else(|| {
            EditorError::Engine(
                "the chat template's generation prompt is not a prefix of the chat with the reply"
                    .into(),
            )
        })?;
        if targets.is_empty() {
            return Err(EditorError::invalid(
                "reply",
                "the reply renders to no token",
            ));
        }
        let forced = Arc::new(ForcedReply::new(prompt.len(), targets.to_vec()));
        let request = GenerationRequest {
            prompt: Prompt::Chat(messages),
            max_tokens: targets.len(),
            sampling: Sampling::default(),
            stop: Vec::new(),
            json_schema: None,
        };
        let generation = self
            .start_with(request, Some(forced.clone()))
            .await?
            .collect()
            .await?;
        let tokens: Vec<(u32, f32)> = targets.iter().copied().zip(forced.logprobs()).collect();
        if tokens.is_empty() {
            return Err(EditorError::Engine(
                "the engine scored no token of the reply".into(),
            ));
        }
        Ok(Scored { tokens, generation })
    }

    /// A prompt's tokens, as the engine will see them.
    async fn tokenize(&self, prompt: &Prompt) -> Result<Vec<u32>, EditorError> {
        match prompt {
            Prompt::Chat(messages) => self.tokenize_chat(messages, true).await,
            Prompt::Text(text) => self
                .model
                .tokenize(Either::Right(text.clone()), None, true, false, None)
                .await
                .map_err(|e| EditorError::Engine(format!("tokenizing the prompt: {e}"))),
        }
    }

    async fn tokenize_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, EditorError> {
        let messages = messages.iter().fold(TextMessages::new(), |m, msg| {
            m.add_message(role(msg.role), &msg.content)
        });
        self.model
            .tokenize(
                Either::Left(messages),
                None,
                true,
                add_generation_prompt,
                None,
            )
            .await
            .map_err(|e| EditorError::Engine(format!("tokenizing the chat: {e}")))
    }

    /// Refuses a request whose prompt plus `max_tokens` would run past the model's context
    /// (mistral.rs bounds the generated tokens only, and fails with an index error past it).
    async fn check_context(&self, request: &GenerationRequest) -> Result<(), EditorError> {
        // mistral.rs grows its KV cache in steps of 512 positions and fails when a step would
        // pass the model's maximum (seen: "requested capacity (2560) above max seq len (2048)"),
        // so the last step is not usable.
        let context = self
            .description
            .max_context_tokens
            .saturating_sub(KV_CACHE_GROWTH);
        if request.max_tokens > context {
            return Err(EditorError::invalid(
                "params.max_tokens",
                format!(
                    "{} is more than the model's context of {context} tokens",
                    request.max_tokens
                ),
            ));
        }
        let bytes: usize = match &request.prompt {
            Prompt::Chat(messages) => messages
                .iter()
                .map(|m| m.content.len() + PER_MESSAGE_SLACK_BYTES)
                .sum(),
            Prompt::Text(text) => text.len(),
        };
        if bytes + TEMPLATE_SLACK_BYTES + request.max_tokens <= context {
            return Ok(());
        }
        let prompt = self.tokenize(&request.prompt).await?;
        if prompt.len() + request.max_tokens > context {
            return Err(EditorError::invalid(
                "params.max_tokens",
                format!(
                    "the prompt takes {} tokens; with max_tokens {} it runs past the model's context of {context} tokens",
                    prompt.len(),
                    request.max_tokens
                ),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Backend for MistralBackend {
    fn description(&self) -> &ModelDescription {
        &self.description
    }

    /// Sequences the engine holds right now.
    fn engine_load(&self) -> EngineLoad {
        self.gauges.snapshot()
    }

    async fn start(&self, request: GenerationRequest) -> Result<TokenStream, EditorError> {
        self.start_with(request, None).await
    }

    async fn score(&self, messages: Vec<ChatMessage>, reply: &str) -> Result<Scored, EditorError> {
        self.score_reply(messages, reply).await
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The probe rides along as a logits processor that changes nothing (`backend::probe`).
impl CustomLogitsProcessor for EngineProbe {
    fn apply(&self, logits: &Tensor, context: &[u32]) -> mistralrs::Result<Tensor> {
        // Before the first token, the context is the prompt.
        self.on_token(context.len());
        // A tensor clone shares its storage: no copy of the logits.
        Ok(logits.clone())
    }
}

/// mistral.rs's KV-cache growth step, in positions.
const KV_CACHE_GROWTH: usize = 512;

fn role(role: ChatRole) -> TextMessageRole {
    match role {
        ChatRole::System => TextMessageRole::System,
        ChatRole::User => TextMessageRole::User,
        ChatRole::Assistant => TextMessageRole::Assistant,
    }
}

/// The mistral.rs request for a generation (without the probe). A raw-text prompt adds no
/// message here: the caller sends it as a completion (`start_with`).
pub fn engine_request(request: GenerationRequest) -> RequestBuilder {
    let mut builder = RequestBuilder::new();
    if let Prompt::Chat(messages) = &request.prompt {
        for message in messages {
            builder = builder.add_message(role(message.role), &message.content);
        }
    }
    // Resets every sampling parameter, max length included: must come before the others.
    builder = builder
        .set_deterministic_sampler()
        .set_sampler_max_len(request.max_tokens);
    if !request.sampling.is_greedy() {
        if let Some(t) = request.sampling.temperature {
            builder = builder.set_sampler_temperature(t);
        }
        if let Some(p) = request.sampling.top_p {
            builder = builder.set_sampler_topp(p);
        }
    }
    if !request.stop.is_empty() {
        builder = builder.set_sampler_stop_toks(StopTokens::Seqs(request.stop));
    }
    if let Some(schema) = request.json_schema {
        builder = builder.set_constraint(Constraint::JsonSchema(schema));
    }
    builder
}
