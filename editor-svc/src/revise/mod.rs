//! Targeted revision: a summary, the findings against it and the taxonomy's instructions in; a
//! constrained generation that rewrites exactly what was flagged; the revised summary out.

mod output;
mod prompt;
mod span;

use std::collections::BTreeMap;
use std::ops::Range;

use crate::generation::Generation;

pub use output::{parse_revision, revision_schema};
pub use prompt::{SYSTEM_PROMPT, build_messages};
pub use span::{
    SpanEdit, max_replacement_chars, parse_replacement, plan, replacement_schema, span_messages,
    splice,
};

/// A finished revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub summary: String,
    /// `None` when nothing was flagged and the model was not called.
    pub generation: Option<Generation>,
}

/// What a revision stream yields: raw model output as it comes, then the parsed revision.
#[derive(Debug, Clone, PartialEq)]
pub enum RevisionEvent {
    Delta(String),
    Done(Revision),
}

/// Who spoke a turn of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Customer,
    Agent,
    Bot,
    System,
    Unspecified,
}

impl Speaker {
    pub fn label(self) -> &'static str {
        match self {
            Self::Customer => "Customer",
            Self::Agent => "Agent",
            Self::Bot => "Bot",
            Self::System => "System",
            Self::Unspecified => "Speaker",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub speaker: Speaker,
    pub text: String,
}

/// What in the conversation a finding rests on.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// The detector looked for support and found none (a hallucinated fact, usually).
    NoneFound,
    /// A turn (and optionally the quoted part of it) that supports or contradicts the summary.
    Turn { index: usize, quote: Option<String> },
    /// The detector gave none.
    Unspecified,
}

/// One error to fix, as the prompt needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionFinding {
    pub category_id: String,
    /// "low", "medium", "high", "critical" or "unspecified".
    pub severity: &'static str,
    /// The flagged part of the summary; `None` for the summary as a whole.
    pub summary_excerpt: Option<String>,
    /// Where the excerpt sits in the summary (bytes); `None` when it is the whole summary or
    /// cannot be found in it.
    pub span: Option<Range<usize>>,
    pub evidence: Evidence,
    pub explanation: String,
    /// The replacement of the span that the detector determined (a PII value's typed
    /// placeholder); `None` where fixing takes judgment.
    pub rule_fix: Option<String>,
}

/// A validated revision request.
#[derive(Debug, Clone)]
pub struct RevisionInput {
    pub channel: String,
    pub turns: Vec<Turn>,
    pub summary: String,
    pub findings: Vec<RevisionFinding>,
    /// The taxonomy's instruction per category id.
    pub instructions: BTreeMap<String, String>,
}
