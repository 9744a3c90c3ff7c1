//! One generation's token stream, read straight from the engine's response channel.
//!
//! Dropping a [`TokenStream`] drops the receiver; mistral.rs then fails to send the next chunk
//! and cancels the sequence. A non-streaming request would instead run to completion after its
//! caller left, which is why every generation here, unary ones included, streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mistralrs::{ChatCompletionChunkResponse, Response};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::Receiver;

use super::probe::SequenceStats;
use crate::error::EditorError;
use crate::generation::{Generation, StreamEvent, Timing, Usage};
use crate::telemetry::{self, GenAiMetrics};

/// How a stream reports itself: its span, the metrics, and whether content may be recorded.
pub(crate) struct StreamTelemetry {
    pub span: tracing::Span,
    pub model: Arc<str>,
    pub metrics: GenAiMetrics,
    pub capture_content: bool,
}

/// What the stream knows of its request: to classify errors and to finish without a final chunk.
pub(crate) struct Expected {
    pub has_schema: bool,
    pub max_tokens: usize,
    pub stats: Arc<SequenceStats>,
}

pub struct TokenStream {
    rx: Receiver<Response>,
    started: Instant,
    first_token: Option<Duration>,
    text: String,
    chunks: u32,
    pending: VecDeque<StreamEvent>,
    state: State,
    expected: Expected,
    telemetry: StreamTelemetry,
    /// The in-flight slot this generation holds, released when the stream is dropped.
    permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Generating,
    Finished,
    Failed,
}

impl TokenStream {
    pub(crate) fn new(
        rx: Receiver<Response>,
        started: Instant,
        expected: Expected,
        telemetry: StreamTelemetry,
    ) -> Self {
        Self {
            rx,
            started,
            first_token: None,
            text: String::new(),
            chunks: 0,
            pending: VecDeque::new(),
            state: State::Generating,
            expected,
            telemetry,
            permit: None,
        }
    }

    /// Keeps `permit` until this stream ends or is dropped.
    pub fn hold(mut self, permit: OwnedSemaphorePermit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// The next event: deltas, then exactly one `Done`; `None` after it (or after an error).
    pub async fn next(&mut self) -> Option<Result<StreamEvent, EditorError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.state != State::Generating {
                return None;
            }
            let Some(response) = self.rx.recv().await else {
                if let Err(e) = self.finish_without_final_chunk() {
                    return Some(Err(e));
                }
                continue;
            };
            if let Err(e) = self.absorb(response) {
                return Some(Err(e));
            }
        }
    }

    /// Reads the stream to its end: the finished generation.
    pub async fn collect(mut self) -> Result<Generation, EditorError> {
        while let Some(event) = self.next().await {
            if let StreamEvent::Done(generation) = event? {
                return Ok(generation);
            }
        }
        Err(EditorError::Engine(
            "the stream ended without a result".into(),
        ))
    }

    fn absorb(&mut self, response: Response) -> Result<(), EditorError> {
        match response {
            Response::Chunk(chunk) => {
                self.on_chunk(chunk);
                Ok(())
            }
            Response::Done(done) => {
                // Not sent to streaming requests; handled in case a version does.
                let choice = done.choices.into_iter().next();
                let (text, reason) = choice
                    .map(|c| (c.message.content.unwrap_or_default(), c.finish_reason))
                    .unwrap_or_default();
                self.on_text(text);
                self.finish(
                    reason,
                    Some((done.usage.prompt_tokens, done.usage.completion_tokens)),
                );
                Ok(())
            }
            Response::ValidationError(e) => {
                let message = e.to_string();
                let error = if self.expected.has_schema && message.contains("grammar") {
                    EditorError::invalid("json_schema", message)
                } else {
                    EditorError::Engine(message)
                };
                Err(self.fail(error, "validation"))
            }
            Response::InternalError(e) => {
                Err(self.fail(EditorError::Engine(e.to_string()), "engine"))
            }
            Response::ModelError(message, _) => {
                Err(self.fail(EditorError::Engine(message), "model"))
            }
            _ => Err(self.fail(
                EditorError::Engine("unexpected response kind from the engine".into()),
                "engine",
            )),
        }
    }

    /// mistral.rs 0.8.1 sometimes ends a streaming sequence without its final chunk (seen with
    /// stop sequences; one path: `Sequence::get_delta` yields nothing when the pending bytes end
    /// inside a UTF-8 character, and the finish reason rides on that chunk): the channel just
    /// closes. If the probe saw the sequence
    /// sample tokens, it finished; the usage comes from the probe, the reason from the budget.
    fn finish_without_final_chunk(&mut self) -> Result<(), EditorError> {
        let stats = &self.expected.stats;
        let (prompt, sampled) = (stats.prompt_tokens(), stats.sampled_tokens());
        if sampled == 0 {
            return Err(self.fail(
                EditorError::Engine("the engine closed the stream without generating".into()),
                "engine",
            ));
        }
        tracing::debug!(sampled, "the engine ended the stream without a final chunk");
        let reason = if sampled >= self.expected.max_tokens {
            "length"
        } else {
            "stop"
        };
        self.finish(reason.to_string(), Some((prompt, sampled)));
        Ok(())
    }

    fn on_chunk(&mut self, chunk: ChatCompletionChunkResponse) {
        let usage = chunk.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
        for choice in chunk.choices {
            self.chunks += 1;
            if let Some(content) = choice.delta.content {
                self.on_text(content);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish(reason, usage);
            }
        }
    }

    fn on_text(&mut self, text: String) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        if !text.is_empty() {
            self.text.push_str(&text);
            self.pending.push_back(StreamEvent::Delta(text));
        }
    }

    fn finish(&mut self, finish_reason: String, usage: Option<(usize, usize)>) {
        let total = self.started.elapsed();
        let (input, output) = usage.unwrap_or((0, self.chunks as usize));
        let generation = Generation {
            // The stream ends here: the text is moved out, not copied.
            text: std::mem::take(&mut self.text),
            usage: Usage {
                input_tokens: saturate(input),
                output_tokens: saturate(output),
            },
            timing: Timing {
                time_to_first_token: self.first_token.unwrap_or(total),
                total,
            },
            finish_reason,
        };
        let t = &self.telemetry;
        t.metrics.record(&t.model, &generation);
        telemetry::record_response(&t.span, &t.model, &generation, t.capture_content);
        self.state = State::Finished;
        self.permit = None;
        self.pending.push_back(StreamEvent::Done(generation));
    }

    fn fail(&mut self, error: EditorError, error_type: &'static str) -> EditorError {
        self.state = State::Failed;
        self.permit = None;
        let t = &self.telemetry;
        t.metrics
            .record_failure(&t.model, self.started.elapsed(), error_type);
        telemetry::record_error(&t.span, error_type);
        tracing::warn!(parent: &t.span, error = %error, "generation failed");
        error
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if self.state == State::Generating {
            // The caller went away (cancelled, deadline passed): the engine drops the sequence
            // at its next token, when it finds the receiver gone.
            let t = &self.telemetry;
            t.metrics
                .record_failure(&t.model, self.started.elapsed(), "cancelled");
            telemetry::record_error(&t.span, "cancelled");
        }
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
