//! `POST /v1/chat/completions`: one choice, non-streaming or streamed as server-sent events
//! (`stream: true`), through the same editor as gRPC's Generate (its validation, in-flight
//! limit and telemetry).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

use super::Api;
use super::completion::{self, Kind, Streaming};
use super::errors::ApiError;
use crate::editor::Editor;
use crate::generation::{ChatMessage, ChatRole};
use crate::openai_wire::ChatCompletionRequest;

pub async fn chat_completions(State(api): State<Api>, body: Bytes) -> Response {
    completion::respond(api, body, "a chat completion request", answer).await
}

async fn answer(
    editor: Arc<Editor>,
    request: ChatCompletionRequest,
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let params =
        completion::generation_params(&editor, &request.params, request.max_completion_tokens)?;
    let messages = messages(&request)?;
    if request.prompt_logprobs.is_some() {
        return prompt_logprobs(&editor, messages).await;
    }
    let schema = schema(request.response_format.as_ref())?;
    let generation = editor.generation_request(messages.into(), &params, &schema)?;
    let streaming = Streaming::asked(&request.params, deadline);
    completion::answer(&editor, Kind::Chat, generation, streaming).await
}

/// vLLM's `prompt_logprobs`, served for what clients use it for: scoring a reply, the chat's
/// last message (the upstream backend's Score). The reply's tokens get their logprobs (the
/// editor's Score); the prompt's tokens before it are `null` (not computed); nothing is
/// generated.
async fn prompt_logprobs(
    editor: &Editor,
    mut messages: Vec<ChatMessage>,
) -> Result<Response, ApiError> {
    let reply = match messages.pop() {
        Some(m) if m.role == ChatRole::Assistant => m.content,
        _ => {
            return Err(ApiError::invalid(
                "prompt_logprobs",
                "served to score a reply: the last message must be the assistant's",
            ));
        }
    };
    let scored = editor.score(messages, &reply).await?;
    let before = scored.generation.usage.input_tokens as usize;
    let entries: Vec<Value> = std::iter::repeat_n(Value::Null, before)
        .chain(scored.tokens.iter().map(|&(id, logprob)| {
            let mut entry = serde_json::Map::new();
            entry.insert(id.to_string(), json!({"logprob": logprob}));
            Value::Object(entry)
        }))
        .collect();
    let total = entries.len();
    let mut answer = completion::whole(
        editor,
        Kind::Chat,
        "",
        "length",
        json!({"prompt_tokens": total, "completion_tokens": 0, "total_tokens": total}),
    );
    answer["prompt_logprobs"] = Value::Array(entries);
    Ok(axum::Json(answer).into_response())
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
