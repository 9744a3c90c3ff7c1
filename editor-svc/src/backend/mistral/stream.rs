//! The engine's response channel as a backend's chunks (`backend::stream`).
//!
//! Every generation here, unary ones included, streams: a non-streaming request would run to
//! completion after its caller left, where a dropped receiver makes mistral.rs cancel the
//! sequence at its next token.

use std::sync::Arc;

use futures::StreamExt as _;
use mistralrs::Response;
use tokio::sync::mpsc::Receiver;

use crate::backend::{Chunk, ChunkStream, SequenceStats};
use crate::error::EditorError;

/// What the stream knows of its request: to classify errors and to finish without a final chunk.
pub(super) struct Expected {
    pub has_schema: bool,
    pub max_tokens: usize,
    pub stats: Arc<SequenceStats>,
}

/// The chunks of one engine sequence, ending after its end or its failure.
pub(super) fn chunks(rx: Receiver<Response>, expected: Expected) -> ChunkStream {
    let state = Some((rx, expected));
    futures::stream::unfold(state, |state| async move {
        let (mut rx, expected) = state?;
        let (chunks, ended) = match rx.recv().await {
            Some(response) => absorb(response, &expected),
            None => (vec![finish_without_final_chunk(&expected)], true),
        };
        Some((
            futures::stream::iter(chunks),
            (!ended).then_some((rx, expected)),
        ))
    })
    .flatten()
    .boxed()
}

/// A response's chunks, and whether it ended the sequence.
fn absorb(response: Response, expected: &Expected) -> (Vec<Chunk>, bool) {
    let failed = |error, error_type| (vec![Chunk::Failed { error, error_type }], true);
    match response {
        Response::Chunk(chunk) => {
            let usage = chunk.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
            let mut out = Vec::new();
            let mut ended = false;
            for choice in chunk.choices {
                out.push(Chunk::Text(choice.delta.content.unwrap_or_default()));
                if let Some(finish_reason) = choice.finish_reason {
                    out.push(Chunk::End {
                        finish_reason,
                        usage,
                    });
                    ended = true;
                }
            }
            (out, ended)
        }
        // A raw-text prompt's chunks: the same, without usage (the probe counted it).
        Response::CompletionChunk(chunk) => {
            let mut out = Vec::new();
            let mut ended = false;
            for choice in chunk.choices {
                out.push(Chunk::Text(choice.text));
                if let Some(finish_reason) = choice.finish_reason {
                    out.push(Chunk::End {
                        finish_reason,
                        usage: Some(probe_usage(expected)),
                    });
                    ended = true;
                }
            }
            (out, ended)
        }
        Response::Done(done) => {
            // Not sent to streaming requests; handled in case a version does.
            let choice = done.choices.into_iter().next();
            let (text, finish_reason) = choice
                .map(|c| (c.message.content.unwrap_or_default(), c.finish_reason))
                .unwrap_or_default();
            let usage = Some((done.usage.prompt_tokens, done.usage.completion_tokens));
            (
                vec![
                    Chunk::Text(text),
                    Chunk::End {
                        finish_reason,
                        usage,
                    },
                ],
                true,
            )
        }
        Response::ValidationError(e) => {
            let message = e.to_string();
            let error = if expected.has_schema && message.contains("grammar") {
                EditorError::invalid("json_schema", message)
            } else {
                EditorError::Engine(message)
            };
            failed(error, "validation")
        }
        Response::InternalError(e) => failed(EditorError::Engine(e.to_string()), "engine"),
        Response::ModelError(message, _) | Response::CompletionModelError(message, _) => {
            failed(EditorError::Engine(message), "model")
        }
        _ => failed(
            EditorError::Engine("unexpected response kind from the engine".into()),
            "engine",
        ),
    }
}

/// mistral.rs 0.8.1 sometimes ends a streaming sequence without its final chunk (seen with
/// stop sequences; one path: `Sequence::get_delta` yields nothing when the pending bytes end
/// inside a UTF-8 character, and the finish reason rides on that chunk): the channel just
/// closes. If the probe saw the sequence sample tokens, it finished; the usage comes from the
/// probe, the reason from the budget.
fn finish_without_final_chunk(expected: &Expected) -> Chunk {
    let (prompt, sampled) = probe_usage(expected);
    if sampled == 0 {
        return Chunk::Failed {
            error: EditorError::Engine("the engine closed the stream without generating".into()),
            error_type: "engine",
        };
    }
    tracing::debug!(sampled, "the engine ended the stream without a final chunk");
    let finish_reason = if sampled >= expected.max_tokens {
        "length"
    } else {
        "stop"
    };
    Chunk::End {
        finish_reason: finish_reason.to_string(),
        usage: Some((prompt, sampled)),
    }
}

/// Prompt and sampled tokens as the probe counted them.
fn probe_usage(expected: &Expected) -> (usize, usize) {
    (
        expected.stats.prompt_tokens(),
        expected.stats.sampled_tokens(),
    )
}
