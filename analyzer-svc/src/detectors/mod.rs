//! Rule detectors: fast, deterministic, no model. Each file has one job and implements [`Detector`].
//!
//! A detector reads a [`Context`] (the conversation and summary, pre-split once per analysis so
//! ten detectors do not re-tokenize the same text ten times) and appends findings. Merging and
//! de-duplication across detectors is the analyzer's job, not theirs.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;

use arf_common::dataset::{Role, Turn};

use crate::finding::Finding;
use crate::taxonomy::CategoryId;
use crate::text::{self, Word};

pub mod action;
pub mod attribution;
pub mod format;
pub mod grounding;
pub mod language;
pub mod omission;
pub mod pii;
pub mod polarity;
pub mod repetition;
pub mod truncation;

/// A rule detector.
pub trait Detector: Send + Sync {
    /// Stable name, used in options (`detectors: ["pii"]`) and on every finding it raises.
    fn name(&self) -> &'static str;
    /// The categories it can raise.
    fn categories(&self) -> &'static [CategoryId];
    /// Appends its findings for this summary. Must not panic on any input.
    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>);
}

/// Every rule detector, in the order they run.
pub fn rule_detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(grounding::Grounding),
        Box::new(pii::Pii),
        Box::new(format::Format),
        Box::new(truncation::Truncation),
        Box::new(repetition::Repetition),
        Box::new(action::UnsupportedAction),
        Box::new(omission::Omission),
        Box::new(attribution::Attribution),
        Box::new(polarity::Polarity),
        Box::new(language::Language),
    ]
}

/// What detectors read. The conversation index is built lazily, on first use.
pub struct Context<'a> {
    pub turns: &'a [Turn],
    pub summary: &'a str,
    /// Byte ranges of the summary's sentences.
    pub sentences: Vec<(usize, usize)>,
    pub summary_words: Vec<Word<'a>>,
    conversation: OnceCell<ConversationIndex<'a>>,
    summary_keys: OnceCell<Vec<String>>,
}

impl<'a> Context<'a> {
    pub fn new(turns: &'a [Turn], summary: &'a str) -> Context<'a> {
        Context {
            turns,
            summary,
            sentences: text::sentences(summary),
            summary_words: text::words(summary),
            conversation: OnceCell::new(),
            summary_keys: OnceCell::new(),
        }
    }

    pub fn conversation(&self) -> &ConversationIndex<'a> {
        self.conversation
            .get_or_init(|| ConversationIndex::new(self.turns))
    }

    /// The lowercase keys of the summary words (same indexes as `summary_words`).
    pub fn summary_keys(&self) -> &[String] {
        self.summary_keys.get_or_init(|| {
            self.summary_words
                .iter()
                .map(|w| text::key(w.text))
                .collect()
        })
    }

    /// The summary words inside `start..end`.
    pub fn words_in(&self, start: usize, end: usize) -> &[Word<'a>] {
        &self.summary_words[self.word_indexes(start, end)]
    }

    /// The lowercase keys of the summary words inside `start..end`.
    pub fn keys_in(&self, start: usize, end: usize) -> &[String] {
        &self.summary_keys()[self.word_indexes(start, end)]
    }

    /// The indexes of the summary words inside the byte range `start..end`.
    fn word_indexes(&self, start: usize, end: usize) -> std::ops::Range<usize> {
        let from = self.summary_words.partition_point(|w| w.start < start);
        let to = self.summary_words.partition_point(|w| w.end <= end);
        from..to.max(from)
    }
}

/// A word of the conversation, with its turn.
#[derive(Debug, Clone)]
pub struct ConvWord<'a> {
    pub turn: usize,
    pub word: Word<'a>,
    /// The lowercase key; borrowed when the word already is one (most are), so indexing a
    /// conversation allocates little.
    pub key: Cow<'a, str>,
}

/// The conversation, tokenized once: every word with its turn, and (built on first use)
/// vocabularies for "does the conversation say X" checks, in all turns and in agent turns.
pub struct ConversationIndex<'a> {
    pub words: Vec<ConvWord<'a>>,
    turns: &'a [Turn],
    vocab: OnceCell<(HashSet<String>, HashSet<String>)>,
}

impl<'a> ConversationIndex<'a> {
    fn new(turns: &'a [Turn]) -> ConversationIndex<'a> {
        let mut words = Vec::with_capacity(turns.iter().map(|t| t.text.len() / 5).sum());
        for (i, t) in turns.iter().enumerate() {
            for w in text::words(&t.text) {
                let key = if w.text.bytes().any(|b| b.is_ascii_uppercase())
                    || w.text.contains('\u{2019}')
                {
                    Cow::Owned(text::key(w.text))
                } else {
                    Cow::Borrowed(w.text)
                };
                words.push(ConvWord {
                    turn: i,
                    word: w,
                    key,
                });
            }
        }
        ConversationIndex {
            words,
            turns,
            vocab: OnceCell::new(),
        }
    }

    fn vocab(&self) -> &(HashSet<String>, HashSet<String>) {
        self.vocab.get_or_init(|| {
            let mut all = HashSet::new();
            let mut agent = HashSet::new();
            for w in &self.words {
                let st = text::stem(&w.key);
                if self
                    .turns
                    .get(w.turn)
                    .is_some_and(|t| is_agent_role(t.role))
                {
                    agent.insert(w.key.to_string());
                    agent.insert(st.to_string());
                }
                all.insert(w.key.to_string());
                all.insert(st.to_string());
            }
            (all, agent)
        })
    }

    /// Whether any turn has this word (lowercase key) or a word with the same stem.
    pub fn has(&self, key: &str) -> bool {
        let all = &self.vocab().0;
        all.contains(key) || all.contains(text::stem(key))
    }

    /// Whether an agent (or bot) turn has this word or its stem.
    pub fn agent_has(&self, key: &str) -> bool {
        let agent = &self.vocab().1;
        agent.contains(key) || agent.contains(text::stem(key))
    }

    /// The first conversation word starting with `prefix` (for stems like "replac", "escalat"),
    /// optionally in agent turns only.
    pub fn has_prefix(&self, prefix: &str, agent_only: bool) -> Option<&ConvWord<'a>> {
        self.words.iter().find(|w| {
            w.key.starts_with(prefix)
                && (!agent_only
                    || self
                        .turns
                        .get(w.turn)
                        .is_some_and(|t| is_agent_role(t.role)))
        })
    }
}

/// Agents and bots both speak for the company.
pub fn is_agent_role(role: Role) -> bool {
    matches!(role, Role::Agent | Role::Bot)
}

#[cfg(test)]
pub(crate) mod testing {
    use arf_common::dataset::{Role, Turn};

    use super::{Context, Detector, Finding};

    /// What `detector` finds in `summary` of the conversation `conv` (see [`turns`]).
    pub fn detect(detector: &dyn Detector, conv: &[(&str, &str)], summary: &str) -> Vec<Finding> {
        let turns = turns(conv);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        detector.detect(&cx, &mut out);
        out
    }

    /// The summary text of each finding of `detector`.
    pub fn flagged_spans(
        detector: &dyn Detector,
        conv: &[(&str, &str)],
        summary: &str,
    ) -> Vec<String> {
        detect(detector, conv, summary)
            .into_iter()
            .map(|f| f.summary_span.text)
            .collect()
    }

    /// Turns from `("c"|"a", text)` pairs.
    pub fn turns(pairs: &[(&str, &str)]) -> Vec<Turn> {
        pairs
            .iter()
            .map(|(r, t)| Turn {
                role: if *r == "c" {
                    Role::Customer
                } else {
                    Role::Agent
                },
                text: t.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_words_stems_and_agent_words() {
        let turns = testing::turns(&[
            ("c", "I want a Refund now"),
            ("a", "We've escalated it to our team"),
        ]);
        let cx = Context::new(&turns, "x");
        let ix = cx.conversation();
        assert!(ix.has("refunds") && ix.has("refund"));
        assert!(!ix.agent_has("refund"));
        assert!(ix.agent_has("escalated") && ix.agent_has("escalate"));
        assert!(ix.has_prefix("escalat", true).is_some());
        assert!(ix.has_prefix("refund", true).is_none());
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<_> = rule_detectors().iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), rule_detectors().len());
    }
}
