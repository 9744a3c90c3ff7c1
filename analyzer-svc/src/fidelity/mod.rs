//! The fidelity guard: is a revision still a faithful summary of the same conversation?
//!
//! The revision gate accepts a revision only when the detectors find fewer or lighter problems in
//! it *and* this guard passes. The guard never looks at what the detectors found in the revision:
//! a summary that says almost nothing has almost nothing to flag, so "fewer findings" alone
//! rewards deleting everything (an accepted revision that read `{{#1}}` is how this was found).
//! It compares the texts themselves, and refuses a candidate that
//! - drops too much of the original's *unflagged* content (flagged spans may go: that is the fix);
//! - adds content neither the original nor the conversation supports (numbers, names, actions,
//!   or too many new words), or fixes a flagged span with a word nothing supports (edits.rs);
//! - leaves a bad join where it edited: glued words, a hanging word, empty brackets (seams.rs);
//! - is degenerate: template or markup tokens, a repeated sentence, far shorter or longer than
//!   the original, another language, a copy of the transcript, or cut off mid-sentence.
//!
//! The thresholds were chosen on TweetSumm (`fidelity-eval`, written down in
//! `analyzer-svc/FIDELITY.md` with the figures that chose them).

mod content;
mod degenerate;
mod edits;
pub mod eval;
mod seams;

use std::fmt;

use arf_common::dataset::Turn;
use serde::Serialize;

use crate::taxonomy::CategoryId;

pub use content::ContentFigures;

/// Which check refused a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Too much of the original's unflagged content is gone.
    ContentDropped,
    /// New numbers, names or actions, or many new words, that nothing supports.
    UnsupportedContent,
    /// Template or markup tokens (`{{#1}}`, `<|im_end|>`, `[INST]`, a JSON wrapper).
    Markup,
    /// The same sentence or phrase over and over.
    Repetition,
    /// Far shorter or far longer than the original.
    Length,
    /// Not the original's language.
    Language,
    /// The conversation pasted in instead of summarized.
    TranscriptCopy,
    /// Stops mid-sentence where the original ended a sentence.
    CutOff,
    /// An edit's join left glued words, a hanging word, empty brackets, a lowercase sentence
    /// start or doubled spaces and punctuation.
    Seam,
}

impl Check {
    pub const ALL: [Check; 9] = [
        Check::ContentDropped,
        Check::UnsupportedContent,
        Check::Markup,
        Check::Repetition,
        Check::Length,
        Check::Language,
        Check::TranscriptCopy,
        Check::CutOff,
        Check::Seam,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::ContentDropped => "content_dropped",
            Check::UnsupportedContent => "unsupported_content",
            Check::Markup => "markup",
            Check::Repetition => "repetition",
            Check::Length => "length",
            Check::Language => "language",
            Check::TranscriptCopy => "transcript_copy",
            Check::CutOff => "cut_off",
            Check::Seam => "seam",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a candidate was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub check: Check,
    pub message: String,
}

/// Where the guard draws its lines. [`Thresholds::default`] holds the values chosen on data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Least share of the original's unflagged content words a candidate must keep.
    pub min_content_kept: f64,
    /// Most share of a candidate's content words that neither the original nor the
    /// conversation has, counted once at least `min_new_words` are new (a short candidate's
    /// share moves a lot with one word).
    pub max_new_word_share: f64,
    pub min_new_words: usize,
    /// Of the content words a candidate inserts (those its original lacks), the most share the
    /// conversation may lack too, counted once at least `min_inserted_unsupported` are
    /// unsupported: an edit brings its words from the conversation, and a small editor that
    /// writes "Send a new card." into a summary about biscuits does not.
    pub max_inserted_unsupported_share: f64,
    pub min_inserted_unsupported: usize,
    /// Candidate words per word of the original's unflagged text: bounds, both ways. The upper
    /// one holds only beyond `max_added_words` more words (fixing a truncation or an omission
    /// of a short original rightly doubles it) and beyond the whole original's length.
    pub min_length_ratio: f64,
    pub max_length_ratio: f64,
    pub max_added_words: usize,
    /// Fewer words than this summarize nothing, whatever the original (when it had more).
    pub min_words: usize,
    /// Most share of a candidate's words in long verbatim runs of the conversation, beyond the
    /// original's own share.
    pub max_copied_share: f64,
    /// A candidate this close to its original (content kept, and new words at most
    /// `close_max_new_word_share`) counts as "close" in the gate's quality figure.
    pub close_min_content_kept: f64,
    pub close_max_new_word_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        // Chosen on TweetSumm's teacher_train (FIDELITY.md): 99% of ideal fixes (the human
        // reference an injected summary was made from) pass at these values (the rest name a
        // number the conversation lacks), and at most 0.6% of each kind of constructed
        // degenerate candidate does.
        Thresholds {
            min_content_kept: 0.6,
            max_new_word_share: 0.35,
            min_new_words: 4,
            max_inserted_unsupported_share: 0.5,
            min_inserted_unsupported: 2,
            min_length_ratio: 0.5,
            max_length_ratio: 2.5,
            max_added_words: 40,
            min_words: 6,
            max_copied_share: 0.5,
            close_min_content_kept: 0.8,
            close_max_new_word_share: 0.15,
        }
    }
}

/// The guard's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Empty: the candidate passed.
    pub refusals: Vec<Refusal>,
    pub figures: ContentFigures,
    /// Passed, and close to its original (see [`Thresholds::close_min_content_kept`]).
    pub close: bool,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// A span of the original that a detector flagged, and the category it flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flagged {
    pub start: usize,
    pub end: usize,
    pub category: CategoryId,
}

/// What the guard compares.
pub struct Revision<'a> {
    pub turns: &'a [Turn],
    pub original: &'a str,
    /// What the detectors flagged in the original: where the fix may change or drop content.
    pub flagged: &'a [Flagged],
    pub candidate: &'a str,
}

/// Checks `revision.candidate` against its original and the conversation.
pub fn check(revision: &Revision<'_>, t: &Thresholds) -> Verdict {
    let figures = content::figures(revision);
    let mut refusals = Vec::new();
    let mut refuse = |check: Check, message: String| refusals.push(Refusal { check, message });

    degenerate::markup(revision, &mut refuse);
    degenerate::repetition(revision, &mut refuse);
    degenerate::language(revision, &mut refuse);
    degenerate::transcript_copy(revision, &figures, t, &mut refuse);
    degenerate::cut_off(revision, &mut refuse);
    degenerate::length(&figures, t, &mut refuse);
    seams::seams(revision, &mut refuse);
    content::dropped(&figures, t, &mut refuse);
    content::unsupported(&figures, t, &mut refuse);
    let free = content::free_spans(revision);
    // An omission's span is the whole summary: its fix adds anywhere, under the share rules.
    let whole = revision.original.trim().len() * 9 / 10;
    let fixed: Vec<&Flagged> = revision
        .flagged
        .iter()
        .filter(|f| f.end.saturating_sub(f.start) < whole)
        .collect();
    let adds_anywhere = fixed.len() < revision.flagged.len();
    let spans = |of: &dyn Fn(&Flagged) -> bool| -> Vec<(usize, usize)> {
        fixed
            .iter()
            .filter(|f| of(f))
            .map(|f| (f.start, f.end))
            .collect()
    };
    edits::fixes(
        revision,
        edits::Spans {
            flagged: &spans(&|_| true),
            speaker: &spans(&|f| f.category == CategoryId::SpeakerAttribution),
            free: &free,
        },
        adds_anywhere,
        content::is_generic,
        &mut refuse,
    );

    let close = refusals.is_empty()
        && figures.content_kept >= t.close_min_content_kept
        && figures.new_word_share <= t.close_max_new_word_share;
    Verdict {
        refusals,
        figures,
        close,
    }
}

#[cfg(test)]
mod tests;
