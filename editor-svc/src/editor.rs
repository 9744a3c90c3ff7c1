//! The editor's domain logic over the backend: validation, the in-flight limit, revision and
//! generation. Knows nothing of gRPC.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::{
    Backend, EngineLoad, MistralBackend, ModelDescription, OpenAiBackend, Scored, TokenStream,
};
use crate::config::EditorConfig;
use crate::error::EditorError;
use crate::generation::{
    ChatMessage, ChatRole, Generation, GenerationRequest, Prompt, Sampling, StreamEvent,
};
use crate::revise::{
    Revision, RevisionEvent, RevisionInput, build_messages, max_replacement_chars, parse_revision,
    plan, replacement_schema, revision_schema, span_messages,
};
use crate::span_edits::{SpanEdits, SpanSource};
use crate::telemetry::GEN_AI_REQUEST_MODEL;

/// How long a refused call is told to wait: about one short generation.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// At most this many stop sequences per request.
const MAX_STOP_SEQUENCES: usize = 16;

/// Generation parameters as a client gives them (before defaults and validation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationParams {
    /// 0: the server's default.
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
}

/// A moment's view of an editor's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EditorLoad {
    /// The engine's sequences.
    pub engine: EngineLoad,
    /// Generations this editor has accepted and not finished (waiting for the engine or in it).
    pub in_flight: usize,
}

pub struct Editor {
    backend: Arc<dyn Backend>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    default_max_tokens: u32,
}

impl Editor {
    /// Loads the model (or connects to the upstream that serves it) and checks it answers (a
    /// short warm-up generation).
    pub async fn load(config: &EditorConfig) -> anyhow::Result<Self> {
        let backend: Arc<dyn Backend> = match &config.upstream {
            None => Arc::new(MistralBackend::load(config).await?),
            Some(upstream) => Arc::new(OpenAiBackend::connect(upstream, config).await?),
        };
        crate::backend::warm_up(backend.as_ref()).await?;
        Ok(Self::new(backend, config))
    }

    pub fn new(backend: Arc<dyn Backend>, config: &EditorConfig) -> Self {
        Self {
            backend,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: config.max_in_flight,
            default_max_tokens: config.default_max_tokens,
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn model(&self) -> &ModelDescription {
        self.backend.description()
    }

    /// Sequences in the engine, and generations this editor has accepted.
    pub fn load_snapshot(&self) -> EditorLoad {
        EditorLoad {
            engine: self.backend.engine_load(),
            in_flight: self.max_in_flight - self.in_flight.available_permits(),
        }
    }

    /// What an autoscaler reads (deploy/README.md): `arf.editor.queue_depth`, the generations
    /// this replica has accepted, waiting for the engine or running (what more replicas would
    /// share), and `arf.editor.running_sequences`, the sequences its engine is decoding.
    /// Observed at each export; the callbacks hold the editor weakly, so an unloaded one
    /// reports nothing.
    pub fn observe_load(self: &Arc<Self>) {
        let meter = opentelemetry::global::meter("arf");
        let model = KeyValue::new(GEN_AI_REQUEST_MODEL, self.model().model_id.clone());
        let (weak, attrs) = (Arc::downgrade(self), [model.clone()]);
        let _queue = meter
            .i64_observable_gauge("arf.editor.queue_depth")
            .with_unit("{request}")
            .with_description(
                "Generations this editor accepted that have not ended: waiting plus running",
            )
            .with_callback(move |gauge| {
                if let Some(editor) = weak.upgrade() {
                    gauge.observe(editor.load_snapshot().in_flight as i64, &attrs);
                }
            })
            .build();
        let (weak, attrs) = (Arc::downgrade(self), [model]);
        let _running = meter
            .i64_observable_gauge("arf.editor.running_sequences")
            .with_unit("{sequence}")
            .with_description("Sequences this editor's engine is decoding")
            .with_callback(move |gauge| {
                if let Some(editor) = weak.upgrade() {
                    gauge.observe(editor.load_snapshot().engine.running, &attrs);
                }
            })
            .build();
    }

    /// Validates a generation and applies the defaults.
    pub fn generation_request(
        &self,
        prompt: Prompt,
        params: &GenerationParams,
        json_schema: &str,
    ) -> Result<GenerationRequest, EditorError> {
        match &prompt {
            Prompt::Chat(messages) if messages.is_empty() => {
                return Err(EditorError::invalid(
                    "messages",
                    "at least one message is required",
                ));
            }
            Prompt::Text(text) if text.is_empty() => {
                return Err(EditorError::invalid("prompt", "the prompt is empty"));
            }
            _ => {}
        }
        Ok(GenerationRequest {
            prompt,
            max_tokens: self.max_tokens(params),
            sampling: sampling(params)?,
            stop: stop_sequences(params)?,
            json_schema: parse_schema(json_schema)?,
        })
    }

    /// Starts a generation, holding one in-flight slot until the stream ends or is dropped.
    pub async fn generate_stream(
        &self,
        request: GenerationRequest,
    ) -> Result<TokenStream, EditorError> {
        let permit = self.permit()?;
        Ok(self.backend.start(request).await?.hold(permit))
    }

    /// One in-flight slot, or `Overloaded` at once (callers retry elsewhere).
    fn permit(&self) -> Result<OwnedSemaphorePermit, EditorError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| EditorError::Overloaded {
                limit: self.max_in_flight,
                retry_after: RETRY_AFTER,
            })
    }

    pub async fn generate(&self, request: GenerationRequest) -> Result<Generation, EditorError> {
        self.generate_stream(request).await?.collect().await
    }

    /// The logprob of each token of `reply` as the assistant's answer to `messages`; holds one
    /// in-flight slot, as a generation of the reply would.
    pub async fn score(
        &self,
        messages: Vec<ChatMessage>,
        reply: &str,
    ) -> Result<Scored, EditorError> {
        match messages.last() {
            None => {
                return Err(EditorError::invalid(
                    "messages",
                    "at least one message is required",
                ));
            }
            Some(m) if m.role == ChatRole::Assistant => {
                return Err(EditorError::invalid(
                    "messages",
                    "the last message is the assistant's: the reply to score goes in `reply`",
                ));
            }
            Some(_) => {}
        }
        if reply.trim().is_empty() {
            return Err(EditorError::invalid("reply", "the reply to score is empty"));
        }
        let _permit = self.permit()?;
        self.backend.score(messages, reply).await
    }

    /// Revises a summary; with no findings, returns it unchanged without calling the model.
    pub async fn revise(
        &self,
        input: RevisionInput,
        params: &GenerationParams,
    ) -> Result<Revision, EditorError> {
        let mut stream = self.revise_stream(input, params).await?;
        while let Some(event) = stream.next().await {
            if let RevisionEvent::Done(revision) = event? {
                return Ok(revision);
            }
        }
        Err(EditorError::Engine(
            "the revision ended without a result".into(),
        ))
    }

    pub async fn revise_stream(
        &self,
        input: RevisionInput,
        params: &GenerationParams,
    ) -> Result<RevisionStream, EditorError> {
        if input.turns.is_empty() {
            return Err(EditorError::invalid(
                "conversation.turns",
                "the conversation has no turns",
            ));
        }
        if input.summary.trim().is_empty() {
            return Err(EditorError::invalid("summary", "the summary is empty"));
        }
        if input.findings.is_empty() {
            return Ok(RevisionStream::Unchanged(Some(input.summary)));
        }
        if let Some(edits) = plan(&input) {
            let sampling = sampling(params)?;
            let stop = stop_sequences(params)?;
            let requests = edits
                .iter()
                .map(|edit| {
                    if let Some(text) = &edit.fixed {
                        return (edit.range.clone(), SpanSource::Fixed(text.clone()));
                    }
                    // The grammar ends the replacement at `max_chars`; kept within the token
                    // budget even at one character per token (a random tiny model's rate), so
                    // the JSON always closes.
                    let budget = self.max_tokens(params);
                    let max_chars =
                        max_replacement_chars(input.summary[edit.range.clone()].chars().count())
                            .min(budget.saturating_sub(16).max(16));
                    let request = GenerationRequest {
                        prompt: Prompt::Chat(span_messages(&input, edit)),
                        max_tokens: budget,
                        sampling,
                        stop: stop.clone(),
                        json_schema: Some(replacement_schema(max_chars)),
                    };
                    (edit.range.clone(), SpanSource::Model(request))
                })
                .collect();
            return Ok(RevisionStream::Spans(Box::new(SpanEdits::new(
                self.backend.clone(),
                self.permit()?,
                input.summary,
                requests,
            ))));
        }
        // Room to grow (an omission adds text) without letting a weak model ramble forever.
        let max_chars = (input.summary.chars().count() * 2).clamp(256, 4096);
        let request = GenerationRequest {
            prompt: Prompt::Chat(build_messages(&input)),
            max_tokens: self.max_tokens(params),
            sampling: sampling(params)?,
            stop: stop_sequences(params)?,
            json_schema: Some(revision_schema(max_chars)),
        };
        Ok(RevisionStream::Generating(Box::new(
            self.generate_stream(request).await?,
        )))
    }

    fn max_tokens(&self, params: &GenerationParams) -> usize {
        let n = if params.max_tokens == 0 {
            self.default_max_tokens
        } else {
            params.max_tokens
        };
        n as usize
    }
}

/// A revision in progress (or one that needed no model).
pub enum RevisionStream {
    Unchanged(Option<String>),
    /// A whole-summary rewrite.
    Generating(Box<TokenStream>),
    /// One replacement per flagged span, spliced in.
    Spans(Box<SpanEdits>),
}

impl RevisionStream {
    pub async fn next(&mut self) -> Option<Result<RevisionEvent, EditorError>> {
        match self {
            Self::Unchanged(summary) => summary.take().map(|summary| {
                Ok(RevisionEvent::Done(Revision {
                    summary,
                    generation: None,
                }))
            }),
            Self::Generating(stream) => match stream.next().await? {
                Ok(StreamEvent::Delta(text)) => Some(Ok(RevisionEvent::Delta(text))),
                Ok(StreamEvent::Done(generation)) => Some(
                    parse_revision(&generation.text, &generation.finish_reason).map(|summary| {
                        RevisionEvent::Done(Revision {
                            summary,
                            generation: Some(generation),
                        })
                    }),
                ),
                Err(e) => Some(Err(e)),
            },
            Self::Spans(edits) => edits.next().await,
        }
    }
}

fn sampling(params: &GenerationParams) -> Result<Sampling, EditorError> {
    if let Some(t) = params.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(EditorError::invalid(
            "params.temperature",
            "must be between 0 and 2",
        ));
    }
    if let Some(p) = params.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(EditorError::invalid("params.top_p", "must be in (0, 1]"));
    }
    Ok(Sampling {
        temperature: params.temperature.map(f64::from),
        top_p: params.top_p.map(f64::from),
    })
}

fn stop_sequences(params: &GenerationParams) -> Result<Vec<String>, EditorError> {
    if params.stop.len() > MAX_STOP_SEQUENCES {
        return Err(EditorError::invalid(
            "params.stop",
            format!("at most {MAX_STOP_SEQUENCES} stop sequences"),
        ));
    }
    if params.stop.iter().any(String::is_empty) {
        return Err(EditorError::invalid(
            "params.stop",
            "a stop sequence is empty",
        ));
    }
    Ok(params.stop.clone())
}

/// The client's JSON schema, with fixed whitespace unless it says otherwise (see `revise::output`).
fn parse_schema(text: &str) -> Result<Option<Value>, EditorError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut schema: Value = serde_json::from_str(text)
        .map_err(|e| EditorError::invalid("json_schema", format!("not valid JSON: {e}")))?;
    let Some(object) = schema.as_object_mut() else {
        return Err(EditorError::invalid(
            "json_schema",
            "a JSON schema must be an object",
        ));
    };
    object
        .entry("x-guidance")
        .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    Ok(Some(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_name_their_field() {
        fn field<T: std::fmt::Debug>(r: Result<T, EditorError>) -> String {
            match r {
                Err(EditorError::InvalidField { field, .. }) => field,
                other => panic!("expected InvalidField, got {other:?}"),
            }
        }
        let p = |t: Option<f32>, top: Option<f32>| GenerationParams {
            temperature: t,
            top_p: top,
            ..Default::default()
        };
        assert_eq!(field(sampling(&p(Some(-1.0), None))), "params.temperature");
        assert_eq!(
            field(sampling(&p(Some(f32::NAN), None))),
            "params.temperature"
        );
        assert_eq!(field(sampling(&p(None, Some(0.0)))), "params.top_p");
        assert!(sampling(&p(Some(0.7), Some(0.9))).is_ok());
        let stops = GenerationParams {
            stop: vec![String::new()],
            ..Default::default()
        };
        assert_eq!(field(stop_sequences(&stops)), "params.stop");
        assert_eq!(field(parse_schema("{not json")), "json_schema");
        assert_eq!(field(parse_schema("[1, 2]")), "json_schema");
    }

    #[test]
    fn schemas_get_fixed_whitespace_unless_they_choose() {
        let s = parse_schema(r#"{"type": "object"}"#).unwrap().unwrap();
        assert_eq!(s["x-guidance"]["whitespace_flexible"], false);
        let s = parse_schema(r#"{"type": "object", "x-guidance": {"whitespace_flexible": true}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(s["x-guidance"]["whitespace_flexible"], true);
        assert_eq!(parse_schema("  ").unwrap(), None);
    }
}
