//! One generation's token stream, whatever serves it: a backend hands over its chunks (text,
//! then an end or a failure) and this type turns them into [`StreamEvent`]s, the finished
//! [`Generation`], its span attributes and its metrics, the same for every backend.
//!
//! Dropping a [`TokenStream`] drops the backend's chunk stream: mistral.rs then fails to send
//! the next chunk and cancels the sequence; an upstream server sees its connection close.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::EditorError;
use crate::generation::{Generation, StreamEvent, Timing, Usage};
use crate::telemetry::{self, GenAiMetrics};

/// What a backend's generation yields.
pub(crate) enum Chunk {
    /// Text as it is produced (about a token).
    Text(String),
    /// The generation finished: why ("stop", "length"), and (prompt, completion) tokens when
    /// the backend knows them (otherwise the text chunks are counted).
    End {
        finish_reason: String,
        usage: Option<(usize, usize)>,
    },
    /// It failed; `error_type` goes on the span and the metrics.
    Failed {
        error: EditorError,
        error_type: &'static str,
    },
}

pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Chunk> + Send>>;

/// How a stream reports itself: its span, the metrics, and whether content may be recorded.
pub(crate) struct StreamTelemetry {
    pub span: tracing::Span,
    pub model: Arc<str>,
    pub metrics: GenAiMetrics,
    pub capture_content: bool,
}

pub struct TokenStream {
    chunks: ChunkStream,
    started: Instant,
    first_token: Option<Duration>,
    text: String,
    text_chunks: usize,
    pending: VecDeque<StreamEvent>,
    state: State,
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
    pub(crate) fn new(chunks: ChunkStream, started: Instant, telemetry: StreamTelemetry) -> Self {
        Self {
            chunks,
            started,
            first_token: None,
            text: String::new(),
            text_chunks: 0,
            pending: VecDeque::new(),
            state: State::Generating,
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
            match self.chunks.next().await {
                Some(Chunk::Text(text)) => self.on_text(text),
                Some(Chunk::End {
                    finish_reason,
                    usage,
                }) => self.finish(finish_reason, usage),
                Some(Chunk::Failed { error, error_type }) => {
                    return Some(Err(self.fail(error, error_type)));
                }
                None => {
                    let error = EditorError::Engine("the stream ended without a result".into());
                    return Some(Err(self.fail(error, "engine")));
                }
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

    fn on_text(&mut self, text: String) {
        if self.first_token.is_none() {
            self.first_token = Some(self.started.elapsed());
        }
        self.text_chunks += 1;
        if !text.is_empty() {
            self.text.push_str(&text);
            self.pending.push_back(StreamEvent::Delta(text));
        }
    }

    fn finish(&mut self, finish_reason: String, usage: Option<(usize, usize)>) {
        let total = self.started.elapsed();
        let (input, output) = usage.unwrap_or((0, self.text_chunks));
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
            // The caller went away (cancelled, deadline passed): the backend drops the sequence
            // when it finds the receiver gone.
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
