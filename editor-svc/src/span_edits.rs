//! A revision made of span edits (`revise::span`): one short generation per flagged span, in
//! turn (a span fixed by rule, personal data, takes its fixed text), their replacements spliced
//! into the summary at the end. It streams like a whole
//! rewrite: each generation's text as it comes, then one `Done` with the spliced summary and
//! the generations' usage added up.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use crate::backend::{Backend, TokenStream};
use crate::error::EditorError;
use crate::generation::{Generation, GenerationRequest, StreamEvent};
use crate::revise::{Revision, RevisionEvent, parse_replacement, splice};

/// Where a span's replacement comes from.
pub enum SpanSource {
    /// The model writes it.
    Model(GenerationRequest),
    /// Determined without the model (a PII value's placeholder, or a deletion).
    Fixed(String),
}

pub struct SpanEdits {
    backend: Arc<dyn Backend>,
    /// One in-flight slot for the whole revision: its generations run one after another.
    _permit: OwnedSemaphorePermit,
    summary: String,
    pending: VecDeque<(Range<usize>, SpanSource)>,
    current: Option<(Range<usize>, Box<TokenStream>)>,
    replacements: Vec<(Range<usize>, String)>,
    usage: Option<Generation>,
    finished: bool,
}

impl SpanEdits {
    pub fn new(
        backend: Arc<dyn Backend>,
        permit: OwnedSemaphorePermit,
        summary: String,
        edits: Vec<(Range<usize>, SpanSource)>,
    ) -> Self {
        Self {
            backend,
            _permit: permit,
            summary,
            pending: edits.into(),
            current: None,
            replacements: Vec::new(),
            usage: None,
            finished: false,
        }
    }

    pub async fn next(&mut self) -> Option<Result<RevisionEvent, EditorError>> {
        let event = self.step().await;
        if matches!(event, Some(Err(_)) | Some(Ok(RevisionEvent::Done(_)))) {
            self.finished = true;
        }
        event
    }

    async fn step(&mut self) -> Option<Result<RevisionEvent, EditorError>> {
        loop {
            if self.finished {
                return None;
            }
            let (range, stream) = match &mut self.current {
                Some(current) => (current.0.clone(), &mut current.1),
                None => {
                    let Some((range, source)) = self.pending.pop_front() else {
                        return Some(self.spliced());
                    };
                    let request = match source {
                        SpanSource::Model(request) => request,
                        SpanSource::Fixed(text) => {
                            self.replacements.push((range, text));
                            continue;
                        }
                    };
                    match self.backend.start(request).await {
                        Ok(stream) => self.current = Some((range, Box::new(stream))),
                        Err(e) => return Some(Err(e)),
                    }
                    continue;
                }
            };
            match stream.next().await {
                Some(Ok(StreamEvent::Delta(text))) => return Some(Ok(RevisionEvent::Delta(text))),
                Some(Ok(StreamEvent::Done(generation))) => {
                    self.current = None;
                    match parse_replacement(&generation.text, &generation.finish_reason) {
                        Ok(text) => self.replacements.push((range, text)),
                        Err(e) => return Some(Err(e)),
                    }
                    add_usage(&mut self.usage, generation);
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    return Some(Err(EditorError::Engine(
                        "a span edit ended without a result".into(),
                    )));
                }
            }
        }
    }

    fn spliced(&mut self) -> Result<RevisionEvent, EditorError> {
        let summary = splice(&self.summary, &self.replacements);
        if summary.trim().is_empty() {
            return Err(EditorError::BadOutput(
                "the span edits deleted the whole summary".into(),
            ));
        }
        Ok(RevisionEvent::Done(Revision {
            summary,
            generation: self.usage.take(),
        }))
    }
}

/// The revision's generations as one: texts one per line, tokens and time added up, the first
/// token's time from the first, and "length" if any ran out of tokens.
fn add_usage(total: &mut Option<Generation>, g: Generation) {
    let Some(t) = total else {
        *total = Some(g);
        return;
    };
    t.text.push('\n');
    t.text.push_str(&g.text);
    t.usage.input_tokens += g.usage.input_tokens;
    t.usage.output_tokens += g.usage.output_tokens;
    t.timing.total += g.timing.total;
    if g.finish_reason != "stop" {
        t.finish_reason = g.finish_reason;
    }
}
