//! `POST /v1/completions`, the legacy text API (what `lm-evaluation-harness`, older clients and
//! raw-prompt tools call): the prompt is continued as it is, without the chat template. One
//! choice, non-streaming or streamed; the prompt's logprobs, `echo`, `suffix` and `best_of` are
//! refused by name rather than ignored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::Api;
use super::completion::{self, Kind, Streaming};
use super::errors::ApiError;
use crate::editor::Editor;
use crate::generation::Prompt;
use crate::openai_wire::CompletionRequest;

pub async fn completions(State(api): State<Api>, body: Bytes) -> Response {
    completion::respond(api, body, "a completion request", answer).await
}

async fn answer(
    editor: Arc<Editor>,
    request: CompletionRequest,
    deadline: tokio::time::Instant,
) -> Result<Response, ApiError> {
    let params = completion::generation_params(&editor, &request.params, None)?;
    refuse_unserved(&request)?;
    let prompt = prompt(&request.prompt)?;
    let generation = editor.generation_request(Prompt::Text(prompt), &params, "")?;
    let streaming = Streaming::asked(&request.params, deadline);
    completion::answer(&editor, Kind::Text, generation, streaming).await
}

/// A string, or a list holding one string (the API allows batches; one prompt is served).
fn prompt(prompt: &Value) -> Result<String, ApiError> {
    match prompt {
        Value::String(text) => Ok(text.clone()),
        Value::Array(list) => match list.as_slice() {
            [Value::String(text)] => Ok(text.clone()),
            _ => Err(ApiError::invalid(
                "prompt",
                "one prompt is served: a string, or a list of one string",
            )),
        },
        _ => Err(ApiError::invalid(
            "prompt",
            "a string, or a list of one string (token ids are not served)",
        )),
    }
}

fn refuse_unserved(request: &CompletionRequest) -> Result<(), ApiError> {
    if request.logprobs.is_some() {
        return Err(ApiError::invalid("logprobs", "logprobs are not served"));
    }
    if request.echo == Some(true) {
        return Err(ApiError::invalid("echo", "echo is not served"));
    }
    if request.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("suffix", "suffix is not served"));
    }
    if request.best_of.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("best_of", "only best_of = 1 is served"));
    }
    Ok(())
}
