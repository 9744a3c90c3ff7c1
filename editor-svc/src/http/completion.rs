//! What chat and text completions share: the call's deadline, the common parameters, and the
//! answer, whole or streamed as server-sent events. Each API differs only in how a choice is
//! written ([`Kind`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Api;
use super::errors::ApiError;
use crate::editor::{Editor, GenerationParams};
use crate::generation::{Generation, GenerationRequest, StreamEvent};
use crate::openai_wire::CompletionParams;

/// Reads the body as `R` (`what` names it in the 400) and runs `answer` on it under the
/// server's request timeout: it covers a whole answer, and a stream to its end (it is cut
/// there, and the generation with it).
pub async fn respond<R, F, Fut>(api: Api, body: Bytes, what: &str, answer: F) -> Response
where
    R: DeserializeOwned,
    F: FnOnce(Arc<Editor>, R, tokio::time::Instant) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let deadline = tokio::time::Instant::now() + api.request_timeout;
    let answered = async {
        let editor = api.editor()?;
        let request: R = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("body", format!("not {what}: {e}")))?;
        answer(editor, request, deadline).await
    };
    match tokio::time::timeout_at(deadline, answered).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::timed_out().into_response(),
    }
}

/// The editor's parameters for a request's common fields, once its model and `n` are checked.
pub fn generation_params(
    editor: &Editor,
    params: &CompletionParams,
    max_tokens: Option<u32>,
) -> Result<GenerationParams, ApiError> {
    let model = &editor.model().model_id;
    if !params.model.is_empty() && &params.model != model {
        return Err(ApiError::not_found(format!(
            "this server serves model {model:?}, not {:?}",
            params.model
        )));
    }
    if params.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is served"));
    }
    Ok(GenerationParams {
        max_tokens: max_tokens.or(params.max_tokens).unwrap_or(0),
        temperature: params.temperature,
        top_p: params.top_p,
        stop: stop(params.stop.as_ref())?,
    })
}

fn stop(stop: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match stop {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("stop", "a string or a list of strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid("stop", "a string or a list of strings")),
    }
}

/// Which API answers: they differ in object names and in how a choice carries its text.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn id_prefix(self) -> &'static str {
        match self {
            Self::Chat => "chatcmpl",
            Self::Text => "cmpl",
        }
    }

    fn whole_object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion",
            Self::Text => "text_completion",
        }
    }

    fn chunk_object(self) -> &'static str {
        match self {
            Self::Chat => "chat.completion.chunk",
            Self::Text => "text_completion",
        }
    }

    /// A whole answer's choice.
    fn choice(self, text: &str, finish_reason: &str) -> Value {
        match self {
            Self::Chat => json!({"index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason}),
            Self::Text => json!({"index": 0, "text": text, "logprobs": null,
                "finish_reason": finish_reason}),
        }
    }

    /// A streamed chunk's choice: some text, or the finish reason.
    fn chunk_choice(self, text: Option<&str>, finish_reason: Option<&str>) -> Value {
        match self {
            Self::Chat => json!({"index": 0,
                "delta": text.map_or_else(|| json!({}), |t| json!({"content": t})),
                "finish_reason": finish_reason}),
            Self::Text => json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null,
                "finish_reason": finish_reason}),
        }
    }
}

/// Generates `request` and answers it whole, or as server-sent events when `stream`.
pub async fn answer(
    editor: &Editor,
    kind: Kind,
    request: GenerationRequest,
    stream: Option<Streaming>,
) -> Result<Response, ApiError> {
    if let Some(streaming) = stream {
        let chunker = Chunker {
            id: completion_id(kind),
            model: editor.model().model_id.clone(),
            kind,
        };
        let tokens = editor.generate_stream(request).await?;
        return Ok(streamed(tokens, chunker, streaming));
    }
    let generation = editor.generate(request).await?;
    Ok(axum::Json(whole(
        editor,
        kind,
        &generation.text,
        &generation.finish_reason,
        usage(&generation),
    ))
    .into_response())
}

/// A whole (non-streamed) answer.
pub fn whole(editor: &Editor, kind: Kind, text: &str, finish_reason: &str, usage: Value) -> Value {
    json!({
        "id": completion_id(kind), "object": kind.whole_object(), "created": now(),
        "model": editor.model().model_id,
        "choices": [kind.choice(text, finish_reason)],
        "usage": usage,
    })
}

/// How a stream is asked for.
pub struct Streaming {
    include_usage: bool,
    deadline: tokio::time::Instant,
}

impl Streaming {
    /// What `params` ask for: a stream (`stream: true`), cut at `deadline`, or none.
    pub fn asked(params: &CompletionParams, deadline: tokio::time::Instant) -> Option<Self> {
        params.stream.then(|| Self {
            include_usage: params
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            deadline,
        })
    }
}

/// What every chunk of one stream shares.
struct Chunker {
    id: String,
    model: String,
    kind: Kind,
}

impl Chunker {
    fn chunk(&self, text: Option<&str>, finish_reason: Option<&str>) -> Event {
        self.event(json!({
            "id": self.id, "object": self.kind.chunk_object(), "created": now(),
            "model": self.model, "choices": [self.kind.chunk_choice(text, finish_reason)],
        }))
    }

    fn usage(&self, generation: &Generation) -> Event {
        self.event(json!({
            "id": self.id, "object": self.kind.chunk_object(), "created": now(),
            "model": self.model, "choices": [], "usage": usage(generation),
        }))
    }

    fn event(&self, value: Value) -> Event {
        Event::default().data(value.to_string())
    }
}

/// The token stream as server-sent events: (for chat, the role first) the text, the finish
/// reason, the usage when asked for, then `[DONE]`. A failure midway is sent as an `error`
/// event (what OpenAI's clients raise), and the stream ends. A client that disconnects drops
/// the token stream, and with it the generation; so does the deadline.
fn streamed(stream: crate::backend::TokenStream, chunker: Chunker, how: Streaming) -> Response {
    let first = match chunker.kind {
        Kind::Chat => vec![chunker.event(json!({
            "id": chunker.id, "object": chunker.kind.chunk_object(), "created": now(),
            "model": chunker.model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": null}],
        }))],
        Kind::Text => Vec::new(),
    };
    let chunker = Arc::new(chunker);
    let include_usage = how.include_usage;
    let events = futures::stream::unfold(Some(stream), move |state| {
        let chunker = chunker.clone();
        async move {
            let mut stream = state?;
            let events = match stream.next().await {
                Some(Ok(StreamEvent::Delta(text))) => {
                    return Some((vec![chunker.chunk(Some(&text), None)], Some(stream)));
                }
                Some(Ok(StreamEvent::Done(generation))) => {
                    let mut events = vec![chunker.chunk(None, Some(&generation.finish_reason))];
                    if include_usage {
                        events.push(chunker.usage(&generation));
                    }
                    events.push(Event::default().data("[DONE]"));
                    events
                }
                Some(Err(error)) => vec![chunker.event(ApiError::from(error).body())],
                None => return None,
            };
            Some((events, None))
        }
    });
    let events = futures::stream::once(async move { first })
        .chain(events)
        .flat_map(futures::stream::iter)
        .take_until(tokio::time::sleep_until(how.deadline))
        .map(Ok::<_, Infallible>);
    Sse::new(events).into_response()
}

fn usage(generation: &Generation) -> Value {
    let (input, output) = (
        generation.usage.input_tokens,
        generation.usage.output_tokens,
    );
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unique id per completion in this process.
fn completion_id(kind: Kind) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{}-{nanos:x}{:04x}",
        kind.id_prefix(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
