//! The gRPC face of the editor: the only place that maps between `arf.v1` and the domain.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arf_common::server::ResponseStream;
use arf_common::status::{invalid_field, overloaded};
use arf_proto::v1::editor_server::{Editor as EditorRpc, EditorServer};
use arf_proto::v1::{
    self as pb, GenerateRequest, GenerateResponse, GenerationTiming, GetModelInfoRequest,
    ModelInfo, ReviseEvent, ReviseRequest, ReviseResponse, ScoreRequest, ScoreResponse,
    TokenLogprob, TokenUsage, revise_event,
};
use tonic::{Request, Response, Status};

use crate::editor::{Editor, GenerationParams, RevisionStream};
use crate::error::EditorError;
use crate::generation::{ChatMessage, ChatRole, Generation};
use crate::revise::{
    Evidence, Revision, RevisionEvent, RevisionFinding, RevisionInput, Speaker, Turn,
};

/// The Editor service. Cheap to clone; answers UNAVAILABLE until its model is installed.
#[derive(Clone, Default)]
pub struct EditorService {
    editor: Arc<OnceLock<Arc<Editor>>>,
}

impl EditorService {
    /// A service whose model is still loading (see [`crate::start_editor`]).
    pub fn loading() -> Self {
        Self::default()
    }

    /// A service over a loaded editor.
    pub fn ready(editor: Arc<Editor>) -> Self {
        let service = Self::default();
        service.install(editor);
        service
    }

    /// Makes the loaded editor answer; later calls are ignored (one model per process).
    /// From then on its load is exported for autoscalers (`Editor::observe_load`).
    pub fn install(&self, editor: Arc<Editor>) {
        if self.editor.set(editor.clone()).is_ok() {
            editor.observe_load();
        }
    }

    /// The editor, once loaded: for in-process callers and tests (its load, its model).
    pub fn editor(&self) -> Option<Arc<Editor>> {
        self.editor.get().cloned()
    }

    pub fn into_server(self, max_message_bytes: usize) -> EditorServer<Self> {
        EditorServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    fn loaded(&self) -> Result<Arc<Editor>, Status> {
        self.editor()
            .ok_or_else(|| to_status(EditorError::NotReady))
    }
}

#[tonic::async_trait]
impl EditorRpc for EditorService {
    type ReviseStreamStream = ResponseStream<ReviseEvent>;

    async fn revise(
        &self,
        request: Request<ReviseRequest>,
    ) -> Result<Response<ReviseResponse>, Status> {
        let editor = self.loaded()?;
        let (input, params) = revision_input(request.into_inner())?;
        let revision = editor.revise(input, &params).await.map_err(to_status)?;
        Ok(Response::new(revise_response(
            revision,
            &editor.model().model_id,
        )))
    }

    async fn revise_stream(
        &self,
        request: Request<ReviseRequest>,
    ) -> Result<Response<Self::ReviseStreamStream>, Status> {
        let editor = self.loaded()?;
        let (input, params) = revision_input(request.into_inner())?;
        let stream = editor
            .revise_stream(input, &params)
            .await
            .map_err(to_status)?;
        let model_id = editor.model().model_id.clone();
        // Dropping this stream (the client cancelled) drops the token stream inside it, and with
        // it the engine's sequence.
        let events = futures::stream::unfold(Some(stream), move |state| {
            let model_id = model_id.clone();
            async move {
                let mut stream: RevisionStream = state?;
                match stream.next().await? {
                    Ok(RevisionEvent::Delta(text)) => Some((
                        Ok(ReviseEvent {
                            event: Some(revise_event::Event::Delta(text)),
                        }),
                        Some(stream),
                    )),
                    Ok(RevisionEvent::Done(revision)) => {
                        let done = revise_response(revision, &model_id);
                        Some((
                            Ok(ReviseEvent {
                                event: Some(revise_event::Event::Done(done)),
                            }),
                            None,
                        ))
                    }
                    Err(e) => Some((Err(to_status(e)), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateResponse>, Status> {
        let editor = self.loaded()?;
        let request = request.into_inner();
        let messages = chat_messages(request.messages)?;
        let params = generation_params(request.params);
        let generation_request = editor
            .generation_request(messages.into(), &params, &request.json_schema)
            .map_err(to_status)?;
        let generation = editor
            .generate(generation_request)
            .await
            .map_err(to_status)?;
        Ok(Response::new(GenerateResponse {
            usage: Some(usage(&generation)),
            timing: Some(timing(&generation)),
            finish_reason: generation.finish_reason,
            text: generation.text,
            model_id: editor.model().model_id.clone(),
        }))
    }

    async fn score(
        &self,
        request: Request<ScoreRequest>,
    ) -> Result<Response<ScoreResponse>, Status> {
        let editor = self.loaded()?;
        let request = request.into_inner();
        let messages = chat_messages(request.messages)?;
        let scored = editor
            .score(messages, &request.reply)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ScoreResponse {
            mean_nll: scored.mean_nll(),
            tokens: scored
                .tokens
                .iter()
                .map(|&(token_id, logprob)| TokenLogprob { token_id, logprob })
                .collect(),
            usage: Some(usage(&scored.generation)),
            timing: Some(timing(&scored.generation)),
            model_id: editor.model().model_id.clone(),
        }))
    }

    async fn get_model_info(
        &self,
        _: Request<GetModelInfoRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        let editor = self.loaded()?;
        let m = editor.model();
        Ok(Response::new(ModelInfo {
            model_id: m.model_id.clone(),
            architecture: m.architecture.clone(),
            quantization: m.quantization.clone(),
            dtype: m.dtype.clone(),
            device: m.device.clone(),
            max_context_tokens: u32::try_from(m.max_context_tokens).unwrap_or(u32::MAX),
            max_concurrent_sequences: u32::try_from(m.max_concurrent_sequences).unwrap_or(u32::MAX),
            random_weights: m.random_weights,
        }))
    }
}

/// Every domain error has exactly one status (no catch-all arm: a new error must be mapped).
fn to_status(error: EditorError) -> Status {
    match error {
        EditorError::InvalidField { field, message } => invalid_field(&field, message),
        EditorError::Overloaded { limit, retry_after } => overloaded(
            format!(
                "the editor is at its limit of {limit} generations in flight; retry later or on another replica"
            ),
            retry_after,
        ),
        EditorError::NotReady => Status::unavailable(
            "the editor's model is still loading; health says SERVING once it is ready",
        ),
        EditorError::BadOutput(message) => arf_common::status::unusable_output(message),
        EditorError::Engine(message) => arf_common::status::internal_error("generation", &message),
        EditorError::Unsupported(message) => Status::unimplemented(message),
        e @ EditorError::UpstreamBusy { retry_after, .. } => overloaded(e.to_string(), retry_after),
        e @ EditorError::UpstreamUnreachable(_) => Status::unavailable(e.to_string()),
        e @ EditorError::UpstreamDenied(_) => Status::permission_denied(e.to_string()),
    }
}

fn generation_params(params: Option<pb::GenerationParams>) -> GenerationParams {
    let p = params.unwrap_or_default();
    GenerationParams {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        stop: p.stop,
    }
}

fn chat_messages(messages: Vec<pb::ChatMessage>) -> Result<Vec<ChatMessage>, Status> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = ChatRole::parse(&m.role).ok_or_else(|| {
                invalid_field(
                    &format!("messages[{i}].role"),
                    format!("unknown role {:?}: use system, user or assistant", m.role),
                )
            })?;
            Ok(ChatMessage {
                role,
                content: m.content,
            })
        })
        .collect()
}

fn revision_input(request: ReviseRequest) -> Result<(RevisionInput, GenerationParams), Status> {
    let conversation = request.conversation.unwrap_or_default();
    if conversation.turns.is_empty() {
        // Checked before the findings, whose spans point into the turns and the summary.
        return Err(invalid_field(
            "conversation.turns",
            "the conversation has no turns",
        ));
    }
    if request.summary.trim().is_empty() {
        return Err(invalid_field("summary", "the summary is empty"));
    }
    let turns: Vec<Turn> = conversation
        .turns
        .into_iter()
        .map(|t| Turn {
            speaker: speaker(t.role),
            text: t.text,
        })
        .collect();
    let findings = request
        .findings
        .into_iter()
        .enumerate()
        .map(|(i, f)| revision_finding(i, f, &request.summary, &turns))
        .collect::<Result<Vec<_>, Status>>()?;
    let instructions: BTreeMap<String, String> = request
        .instructions
        .into_iter()
        .map(|r| (r.category_id, r.instruction))
        .collect();
    let input = RevisionInput {
        channel: conversation.channel,
        turns,
        summary: request.summary,
        findings,
        instructions,
    };
    Ok((input, generation_params(request.params)))
}

fn revision_finding(
    i: usize,
    f: pb::Finding,
    summary: &str,
    turns: &[Turn],
) -> Result<RevisionFinding, Status> {
    if f.category_id.trim().is_empty() {
        return Err(invalid_field(
            &format!("findings[{i}].category_id"),
            "must not be empty",
        ));
    }
    let summary_excerpt = match &f.summary_span {
        Some(span) if span.start != span.end || !span.text.is_empty() => {
            Some(excerpt(span, summary).ok_or_else(|| {
                invalid_field(
                    &format!("findings[{i}].summary_span"),
                    "outside the summary",
                )
            })?)
        }
        _ => None,
    };
    let evidence = match f.evidence {
        None => Evidence::Unspecified,
        Some(e) if e.none_found => Evidence::NoneFound,
        Some(e) => match e.turn_index {
            None => Evidence::Unspecified,
            Some(index) => {
                let index = index as usize;
                let turn = turns.get(index).ok_or_else(|| {
                    invalid_field(
                        &format!("findings[{i}].evidence.turn_index"),
                        format!("the conversation has {} turns", turns.len()),
                    )
                })?;
                Evidence::Turn {
                    index,
                    quote: e.span.and_then(|s| excerpt(&s, &turn.text)),
                }
            }
        },
    };
    let span = match (&summary_excerpt, &f.summary_span) {
        (Some(text), Some(s)) => locate(s, text, summary),
        _ => None,
    };
    Ok(RevisionFinding {
        category_id: f.category_id,
        severity: severity(f.severity),
        summary_excerpt,
        span,
        evidence,
        explanation: f.explanation,
        rule_fix: f.rule_fix,
    })
}

/// Where `text` sits in `summary`: the span's byte range when it holds that text, else the
/// text's first occurrence.
fn locate(span: &pb::TextSpan, text: &str, summary: &str) -> Option<std::ops::Range<usize>> {
    let range = span.start as usize..span.end as usize;
    if !text.is_empty() && summary.get(range.clone()) == Some(text) {
        return Some(range);
    }
    let start = summary.find(text).filter(|_| !text.is_empty())?;
    Some(start..start + text.len())
}

/// The text a span names: its own text if given, else the byte range of `within` (when valid).
fn excerpt(span: &pb::TextSpan, within: &str) -> Option<String> {
    if !span.text.is_empty() {
        return Some(span.text.clone());
    }
    within
        .get(span.start as usize..span.end as usize)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn speaker(role: i32) -> Speaker {
    match pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Customer => Speaker::Customer,
        pb::Role::Agent => Speaker::Agent,
        pb::Role::Bot => Speaker::Bot,
        pb::Role::System => Speaker::System,
        pb::Role::Unspecified => Speaker::Unspecified,
    }
}

fn severity(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity).unwrap_or(pb::Severity::Unspecified) {
        pb::Severity::Low => "low",
        pb::Severity::Medium => "medium",
        pb::Severity::High => "high",
        pb::Severity::Critical => "critical",
        pb::Severity::Unspecified => "unspecified",
    }
}

/// A summary with no findings comes back without a model call: zero usage and timing.
fn revise_response(revision: Revision, model_id: &str) -> ReviseResponse {
    let generation = revision.generation;
    ReviseResponse {
        revised_summary: revision.summary,
        model_called: generation.is_some(),
        usage: Some(generation.as_ref().map(usage).unwrap_or_default()),
        timing: Some(generation.as_ref().map(timing).unwrap_or_default()),
        finish_reason: generation.map(|g| g.finish_reason).unwrap_or_default(),
        model_id: model_id.to_string(),
    }
}

fn usage(generation: &Generation) -> TokenUsage {
    TokenUsage {
        input_tokens: generation.usage.input_tokens,
        output_tokens: generation.usage.output_tokens,
    }
}

fn timing(generation: &Generation) -> GenerationTiming {
    GenerationTiming {
        time_to_first_token_seconds: generation.timing.time_to_first_token.as_secs_f64(),
        total_seconds: generation.timing.total.as_secs_f64(),
    }
}
