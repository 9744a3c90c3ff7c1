//! `POST /v1/chat/completions`: one choice, non-streaming or streamed as server-sent events
//! (`stream: true`), through the same editor as gRPC's Generate (its validation, in-flight
//! limit and telemetry).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};

use super::Api;
use super::errors::ApiError;
use crate::editor::GenerationParams;
use crate::generation::{ChatMessage, ChatRole, Generation, StreamEvent};
use crate::openai_wire::ChatCompletionRequest;

pub async fn chat_completions(State(api): State<Api>, body: Bytes) -> Response {
    // The deadline covers a whole answer, and a stream to its end (it is cut there, and the
    // generation with it).
    let deadline = tokio::time::Instant::now() + api.request_timeout;
    match tokio::time::timeout_at(deadline, answer(api, &body, deadline)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::timed_out().into_response(),
    }
}

async fn answer(
    api: Api,
    body: &[u8],
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let editor = api.editor()?;
    let request: ChatCompletionRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("not a chat completion request: {e}")))?;
    let model = editor.model().model_id.clone();
    if !request.model.is_empty() && request.model != model {
        return Err(ApiError::not_found(format!(
            "this server serves model {model:?}, not {:?}",
            request.model
        )));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only n = 1 is served"));
    }
    let messages = messages(&request)?;
    let params = GenerationParams {
        max_tokens: request
            .max_completion_tokens
            .or(request.max_tokens)
            .unwrap_or(0),
        temperature: request.temperature,
        top_p: request.top_p,
        stop: stop(request.stop.as_ref())?,
    };
    let schema = schema(request.response_format.as_ref())?;
    let generation = editor.generation_request(messages, &params, &schema)?;
    let id = completion_id();
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let stream = editor.generate_stream(generation).await?;
        return Ok(streamed(
            stream,
            Chunker { id, model },
            include_usage,
            deadline,
        ));
    }
    let generation = editor.generate(generation).await?;
    Ok(axum::Json(json!({
        "id": id, "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": generation.text},
                     "finish_reason": generation.finish_reason}],
        "usage": usage(&generation),
    }))
    .into_response())
}

fn messages(request: &ChatCompletionRequest) -> Result<Vec<ChatMessage>, ApiError> {
    request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // "developer" is the newer name of the system role.
            let role = match m.role.as_str() {
                "developer" => Some(ChatRole::System),
                other => ChatRole::parse(other),
            }
            .ok_or_else(|| {
                ApiError::invalid(
                    &format!("messages[{i}].role"),
                    format!("unknown role {:?}: system, user or assistant", m.role),
                )
            })?;
            let content = m.content_text().ok_or_else(|| {
                ApiError::invalid(
                    &format!("messages[{i}].content"),
                    "only text content is served",
                )
            })?;
            Ok(ChatMessage::new(role, content))
        })
        .collect()
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

/// The JSON schema a `response_format` asks for, as the editor's `json_schema` text.
fn schema(format: Option<&Value>) -> Result<String, ApiError> {
    let Some(format) = format else {
        return Ok(String::new());
    };
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(String::new()),
        Some("json_object") => Ok(r#"{"type": "object"}"#.into()),
        Some("json_schema") => format
            .pointer("/json_schema/schema")
            .map(Value::to_string)
            .ok_or_else(|| ApiError::invalid("response_format", "json_schema.schema is missing")),
        Some(other) => Err(ApiError::invalid(
            "response_format",
            format!("unknown type {other:?}: text, json_object or json_schema"),
        )),
    }
}

/// What every chunk of one stream shares.
struct Chunker {
    id: String,
    model: String,
}

impl Chunker {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Event {
        self.event(json!({
            "id": self.id, "object": "chat.completion.chunk", "created": now(), "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    }

    fn event(&self, value: Value) -> Event {
        Event::default().data(value.to_string())
    }
}

/// The token stream as server-sent events: the role, the deltas, the finish reason, the usage
/// when asked for, then `[DONE]`. A failure midway is sent as an `error` event (what OpenAI's
/// clients raise), and the stream ends. A client that disconnects drops the token stream, and
/// with it the generation; so does the deadline.
fn streamed(
    stream: crate::backend::TokenStream,
    chunker: Chunker,
    include_usage: bool,
    deadline: tokio::time::Instant,
) -> Response {
    let first = chunker.chunk(json!({"role": "assistant", "content": ""}), None);
    let chunker = Arc::new(chunker);
    let events = futures::stream::unfold(Some(stream), move |state| {
        let chunker = chunker.clone();
        async move {
            let mut stream = state?;
            let events = match stream.next().await {
                Some(Ok(StreamEvent::Delta(text))) => {
                    return Some((
                        vec![chunker.chunk(json!({"content": text}), None)],
                        Some(stream),
                    ));
                }
                Some(Ok(StreamEvent::Done(generation))) => {
                    let mut events =
                        vec![chunker.chunk(json!({}), Some(&generation.finish_reason))];
                    if include_usage {
                        events.push(chunker.event(json!({
                            "id": chunker.id, "object": "chat.completion.chunk", "created": now(),
                            "model": chunker.model, "choices": [], "usage": usage(&generation),
                        })));
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
    let events = futures::stream::once(async move { vec![first] })
        .chain(events)
        .flat_map(futures::stream::iter)
        .take_until(tokio::time::sleep_until(deadline))
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
fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "chatcmpl-{nanos:x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
