//! The upstream backend: the model is served elsewhere, by any OpenAI-compatible server (vLLM,
//! TGI, llama.cpp's `llama-server`, Ollama, a hosted API, another editor's `--http-listen`),
//! and reached over its chat-completions API (a raw-text prompt over its text completions).
//! Every generation streams (server-sent events), so a caller that leaves closes the connection
//! and the upstream can stop; token usage comes from the stream's usage chunk where the server
//! sends one.
//!
//! JSON-constrained output goes as `response_format: json_schema`. A server that refuses it
//! (HTTP 400 naming `response_format`) is asked without it from then on: the editor validates
//! what comes back (`revise::parse_revision`), and an unusable answer fails that candidate, as
//! a judge's does.
//!
//! Scoring a given reply needs the prompt's logprobs, which OpenAI's chat API does not return;
//! vLLM's `prompt_logprobs` extension (and this editor's own HTTP API) does. Score uses it where
//! the upstream answers it, and is UNIMPLEMENTED elsewhere (Evaluate then reports reference NLL
//! as not available).

mod errors;

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::{
    Backend, Chunk, ChunkStream, EngineLoad, EngineProbe, ModelDescription, Scored, SequenceGauges,
    StreamTelemetry, TokenStream,
};
use crate::config::EditorConfig;
pub use crate::config::{ApiKey, UpstreamConfig};
use crate::error::EditorError;
use crate::generation::{ChatMessage, Generation, GenerationRequest, Prompt, Timing, Usage};
use crate::openai_wire::{
    ChatCompletionOut, ChatCompletionRequest, ChunkIn, CompletionParams, CompletionRequest,
    SseReader, StreamOptions, WireMessage,
};
use crate::telemetry::{self, GenAiMetrics, PROVIDER_OPENAI};

/// How long connecting to the upstream may take; a generation itself has no overall timeout
/// (the caller's deadline ends it, by dropping the stream).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of an error answer is read.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub struct OpenAiBackend {
    client: reqwest::Client,
    chat_url: String,
    completions_url: String,
    api_key: Option<ApiKey>,
    description: ModelDescription,
    model_id: Arc<str>,
    gauges: Arc<SequenceGauges>,
    metrics: GenAiMetrics,
    capture_content: bool,
    /// The upstream refused `response_format` once: later requests go without it.
    schema_refused: AtomicBool,
}

impl OpenAiBackend {
    /// Builds the client and asks the upstream for its models: the configured one must be among
    /// them (a server without `GET /models` is taken at its word).
    pub async fn connect(upstream: &UpstreamConfig, config: &EditorConfig) -> anyhow::Result<Self> {
        let base = upstream.base_url.trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "--upstream {base}: an http:// or https:// URL, the API's base (http://host:8000/v1)"
        );
        anyhow::ensure!(
            !upstream.model.trim().is_empty(),
            "--upstream-model is required with --backend openai"
        );
        let mut client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("arf-editor/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &upstream.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading --upstream-ca-file {}", ca.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not a PEM certificate bundle", ca.display()))?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "{}: no certificate in it",
                ca.display()
            );
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().context("building the HTTP client")?;
        let context = listed_context(&client, &base, upstream).await?;
        let description = ModelDescription {
            model_id: upstream.model.clone(),
            architecture: "openai-compatible upstream".into(),
            quantization: "unknown".into(),
            dtype: "unknown".into(),
            device: base.clone(),
            // 0: the upstream did not say (its own checks then refuse an over-long prompt).
            max_context_tokens: context.unwrap_or(0),
            max_concurrent_sequences: config.max_in_flight,
            random_weights: false,
        };
        tracing::info!(upstream = %base, model = %upstream.model, context, "upstream model reached");
        Ok(Self {
            client,
            chat_url: format!("{base}/chat/completions"),
            completions_url: format!("{base}/completions"),
            api_key: upstream.api_key.clone(),
            model_id: upstream.model.as_str().into(),
            description,
            gauges: Arc::default(),
            metrics: GenAiMetrics::new(PROVIDER_OPENAI),
            capture_content: config.log_content,
            schema_refused: AtomicBool::new(false),
        })
    }

    /// The request's URL and body: a chat goes to chat completions, a raw-text prompt to the
    /// legacy text completions.
    fn body(&self, request: &GenerationRequest, with_schema: bool) -> (&str, Value) {
        let greedy = request.sampling.is_greedy();
        let params = CompletionParams {
            model: self.model_id.to_string(),
            max_tokens: Some(u32::try_from(request.max_tokens).unwrap_or(u32::MAX)),
            // The API's default temperature is 1: greedy has to be asked for.
            temperature: Some(if greedy {
                0.0
            } else {
                request.sampling.temperature.unwrap_or(1.0) as f32
            }),
            top_p: (!greedy)
                .then_some(request.sampling.top_p)
                .flatten()
                .map(|p| p as f32),
            stop: (!request.stop.is_empty()).then(|| json!(request.stop)),
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
            n: None,
        };
        match &request.prompt {
            Prompt::Chat(messages) => (
                &self.chat_url,
                json!(ChatCompletionRequest {
                    messages: messages
                        .iter()
                        .map(|m| WireMessage::text(m.role.as_str(), &m.content))
                        .collect(),
                    response_format: request
                        .json_schema
                        .as_ref()
                        .filter(|_| with_schema)
                        .map(response_format),
                    params,
                    ..Default::default()
                }),
            ),
            Prompt::Text(text) => (
                &self.completions_url,
                json!(CompletionRequest {
                    prompt: Value::String(text.clone()),
                    params,
                    ..Default::default()
                }),
            ),
        }
    }

    /// A POST to the upstream, with its key.
    fn post(&self, url: &str) -> reqwest::RequestBuilder {
        let call = self.client.post(url);
        match &self.api_key {
            Some(key) => call.bearer_auth(key.expose()),
            None => call,
        }
    }

    /// One chat completion, not streamed (scoring's calls). A 400 that names
    /// `prompt_logprobs` is a server without the extension: `Unsupported`.
    async fn complete_once(
        &self,
        body: &ChatCompletionRequest,
    ) -> Result<ChatCompletionOut, EditorError> {
        let response = self
            .post(&self.chat_url)
            .json(body)
            .send()
            .await
            .map_err(|e| errors::from_transport(&e))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let text = read_bounded(response).await;
            if status == reqwest::StatusCode::BAD_REQUEST && text.contains("prompt_logprobs") {
                return Err(EditorError::Unsupported(format!(
                    "the upstream refuses prompt_logprobs, which scoring needs: {}",
                    errors::message_of(&text)
                )));
            }
            return Err(errors::from_status(status, &headers, &text));
        }
        response.json().await.map_err(|e| {
            EditorError::Engine(format!("an unreadable answer from the upstream: {e}"))
        })
    }

    /// Sends the request; a 400 that refuses `response_format` is asked again without it.
    async fn send(&self, request: &GenerationRequest) -> Result<reqwest::Response, EditorError> {
        let wants_schema = request.json_schema.is_some();
        let mut with_schema = wants_schema && !self.schema_refused.load(Ordering::Relaxed);
        loop {
            let (url, body) = self.body(request, with_schema);
            let response = self
                .post(url)
                .json(&body)
                .send()
                .await
                .map_err(|e| errors::from_transport(&e))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let headers = response.headers().clone();
            let body = read_bounded(response).await;
            if status == reqwest::StatusCode::BAD_REQUEST
                && with_schema
                && (body.contains("response_format") || body.contains("json_schema"))
            {
                tracing::warn!(upstream = %self.chat_url, "the upstream refuses response_format: asking without it, and validating what comes back");
                self.schema_refused.store(true, Ordering::Relaxed);
                with_schema = false;
                continue;
            }
            return Err(errors::from_status(status, &headers, &body));
        }
    }
}

#[tonic::async_trait]
impl Backend for OpenAiBackend {
    fn description(&self) -> &ModelDescription {
        &self.description
    }

    fn engine_load(&self) -> EngineLoad {
        self.gauges.snapshot()
    }

    async fn start(&self, request: GenerationRequest) -> Result<TokenStream, EditorError> {
        let started = Instant::now();
        let span = telemetry::generation_span(
            PROVIDER_OPENAI,
            &self.model_id,
            &request,
            self.capture_content,
        );
        let probe = EngineProbe::new(self.gauges.clone(), Arc::default(), self.metrics.clone());
        let response = match self.send(&request).await {
            Ok(response) => response,
            Err(error) => {
                let kind = error_type(&error);
                self.metrics
                    .record_failure(&self.model_id, started.elapsed(), kind);
                telemetry::record_error(&span, kind);
                tracing::warn!(parent: &span, error = %error, "the upstream refused the generation");
                return Err(error);
            }
        };
        let telemetry = StreamTelemetry {
            span,
            model: self.model_id.clone(),
            metrics: self.metrics.clone(),
            capture_content: self.capture_content,
        };
        Ok(TokenStream::new(
            chunks(response, probe),
            started,
            telemetry,
        ))
    }

    /// Over vLLM's `prompt_logprobs`: the chat with the reply as its last message, scored as a
    /// prompt; the tokens past the generation prompt's (counted by a second, one-token call) are
    /// the reply's, its end-of-turn marker included. A server without the extension is
    /// UNIMPLEMENTED here.
    async fn score(&self, messages: Vec<ChatMessage>, reply: &str) -> Result<Scored, EditorError> {
        let started = Instant::now();
        let prompt: Vec<WireMessage> = messages
            .iter()
            .map(|m| WireMessage::text(m.role.as_str(), &m.content))
            .collect();
        let mut chat = prompt.clone();
        chat.push(WireMessage::text("assistant", reply));
        let one_token = CompletionParams {
            model: self.model_id.to_string(),
            max_tokens: Some(1),
            temperature: Some(0.0),
            ..Default::default()
        };
        let scored = self
            .complete_once(&ChatCompletionRequest {
                messages: chat,
                prompt_logprobs: Some(0),
                add_generation_prompt: Some(false),
                params: one_token.clone(),
                ..Default::default()
            })
            .await?;
        let Some(entries) = scored.prompt_logprobs else {
            return Err(EditorError::Unsupported(
                "scoring a reply needs the prompt's logprobs (vLLM's `prompt_logprobs`), which \
                 this editor's upstream does not return (--backend openai)"
                    .into(),
            ));
        };
        let generation_prompt = self
            .complete_once(&ChatCompletionRequest {
                messages: prompt,
                params: one_token,
                ..Default::default()
            })
            .await?
            .usage
            .map(|u| u.prompt_tokens)
            .ok_or_else(|| {
                EditorError::Engine("the upstream reported no usage for the prompt".into())
            })?;
        let mut tokens = Vec::new();
        for entry in entries.into_iter().skip(generation_prompt).flatten() {
            // One entry per position: the prompt's own token (with 0 asked, nothing else).
            let Some((id, logprob)) = entry.into_iter().next() else {
                continue;
            };
            let id = id.parse().map_err(|_| {
                EditorError::Engine(format!("the upstream's prompt_logprobs name token {id:?}"))
            })?;
            tokens.push((id, logprob.logprob));
        }
        if tokens.is_empty() {
            return Err(EditorError::Engine(
                "the upstream's prompt_logprobs cover no token of the reply".into(),
            ));
        }
        let elapsed = started.elapsed();
        let generation = Generation {
            text: String::new(),
            usage: Usage {
                input_tokens: generation_prompt as u32,
                output_tokens: tokens.len() as u32,
            },
            timing: Timing {
                time_to_first_token: elapsed,
                total: elapsed,
            },
            finish_reason: "length".into(),
        };
        Ok(Scored { tokens, generation })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The `response_format` for a schema, without the llguidance hints only mistral.rs reads.
fn response_format(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(object) = schema.as_object_mut() {
        object.remove("x-guidance");
    }
    json!({"type": "json_schema", "json_schema": {"name": "arf_output", "strict": true, "schema": schema}})
}

fn error_type(error: &EditorError) -> &'static str {
    match error {
        EditorError::UpstreamBusy { .. } => "upstream_busy",
        EditorError::UpstreamUnreachable(_) => "upstream_unreachable",
        EditorError::UpstreamDenied(_) => "upstream_denied",
        EditorError::InvalidField { .. } => "upstream_refused",
        _ => "upstream",
    }
}

/// The upstream's context length for the model, if its model list says (vLLM:
/// `max_model_len`, llama.cpp: `meta.n_ctx_train`); an error if the list lacks the model.
async fn listed_context(
    client: &reqwest::Client,
    base: &str,
    upstream: &UpstreamConfig,
) -> anyhow::Result<Option<usize>> {
    let mut call = client.get(format!("{base}/models"));
    if let Some(key) = &upstream.api_key {
        call = call.bearer_auth(key.expose());
    }
    let response = call
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", errors::from_transport(&e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        tracing::warn!(upstream = %base, "the upstream lists no models (GET /models: 404); taking --upstream-model at its word");
        return Ok(None);
    }
    if !status.is_success() {
        let headers = response.headers().clone();
        let body = read_bounded(response).await;
        anyhow::bail!(
            "asking {base}/models: {}",
            errors::from_status(status, &headers, &body)
        );
    }
    let list: Value = response
        .json()
        .await
        .with_context(|| format!("{base}/models: not an OpenAI model list"))?;
    let models = list["data"].as_array().cloned().unwrap_or_default();
    let Some(entry) = models
        .iter()
        .find(|m| m["id"].as_str() == Some(upstream.model.as_str()))
    else {
        let ids: Vec<&str> = models.iter().filter_map(|m| m["id"].as_str()).collect();
        anyhow::bail!(
            "{base} does not serve model {:?}; it lists {ids:?} (--upstream-model)",
            upstream.model
        );
    };
    Ok(["/max_model_len", "/meta/n_ctx_train", "/context_length"]
        .iter()
        .find_map(|p| entry.pointer(p).and_then(Value::as_u64))
        .map(|n| n as usize))
}

async fn read_bounded(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(bytes)) = stream.next().await {
        body.extend_from_slice(&bytes);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            body.truncate(MAX_ERROR_BODY_BYTES);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The response's server-sent events as chunks. The probe counts the sequence as queued until
/// its first text, running after, and leaves with the stream.
fn chunks(response: reqwest::Response, probe: EngineProbe) -> ChunkStream {
    let state = Upstream {
        bytes: response.bytes_stream().boxed(),
        sse: SseReader::default(),
        finish_reason: None,
        usage: None,
        probe,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        let mut out = Vec::new();
        let ended = match s.bytes.next().await {
            Some(Ok(bytes)) => s
                .sse
                .push(&bytes)
                .into_iter()
                .any(|data| s.read_event(&data, &mut out)),
            Some(Err(e)) => {
                out.push(Chunk::Failed {
                    error: errors::from_transport(&e),
                    error_type: "upstream",
                });
                true
            }
            // Closed without [DONE]: finished if the upstream said why, cut off otherwise.
            None => {
                out.push(if s.finish_reason.is_some() {
                    s.end()
                } else {
                    failed("the upstream closed the stream before the generation ended".into())
                });
                true
            }
        };
        Some((futures::stream::iter(out), (!ended).then_some(s)))
    })
    .flatten()
    .boxed()
}

/// One upstream response being read: its bytes, the events they make, and what the events
/// said so far.
struct Upstream {
    bytes: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    sse: SseReader,
    finish_reason: Option<String>,
    usage: Option<(usize, usize)>,
    probe: EngineProbe,
}

impl Upstream {
    /// Adds one event's chunks to `out`; true when the event ends the generation.
    fn read_event(&mut self, data: &str, out: &mut Vec<Chunk>) -> bool {
        if data.trim() == "[DONE]" {
            out.push(self.end());
            return true;
        }
        let chunk = match serde_json::from_str::<ChunkIn>(data) {
            Ok(chunk) => chunk,
            Err(e) => {
                out.push(failed(format!(
                    "an unreadable chunk from the upstream: {e}"
                )));
                return true;
            }
        };
        if let Some(error) = chunk.error {
            out.push(failed(format!(
                "the upstream failed mid-stream: {}",
                errors::message_of(&json!({ "error": error }).to_string())
            )));
            return true;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some((u.prompt_tokens, u.completion_tokens));
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.or(choice.text) {
                self.probe.on_token(0);
                out.push(Chunk::Text(text));
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        false
    }

    fn end(&mut self) -> Chunk {
        Chunk::End {
            finish_reason: self.finish_reason.take().unwrap_or_else(|| "stop".into()),
            usage: self.usage,
        }
    }
}

fn failed(message: String) -> Chunk {
    Chunk::Failed {
        error: EditorError::Engine(message),
        error_type: "upstream",
    }
}
