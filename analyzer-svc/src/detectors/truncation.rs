//! truncation: the summary stops in the middle of a sentence (a generation cut off by a token
//! limit). Finished prose ends with terminal punctuation, possibly followed by a closing quote or
//! bracket, or with an emoji; anything else, or a trailing word that cannot end a sentence
//! ("the", "to", "and"), means it was cut.

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;
use crate::text;

pub struct Truncation;

const NAME: &str = "truncation";

/// Words a finished English sentence does not end on (without punctuation after them, a sure cut).
const DANGLING: &[&str] = &[
    "a", "an", "the", "to", "and", "or", "but", "of", "for", "with", "that", "which", "who", "is",
    "are", "was", "were", "has", "have", "had", "will", "would", "can", "could", "should", "their",
    "his", "her", "its", "my", "our", "your", "in", "on", "at", "by", "from", "as", "if", "so",
    "because", "than", "then", "about",
];

fn ends_finished(last: char) -> bool {
    matches!(last, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

impl Detector for Truncation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::Truncation]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let s = cx.summary.trim_end();
        // Closing quotes and brackets do not end a sentence by themselves: look inside them.
        let inner = s.trim_end_matches(['"', '\'', ')', ']', '”', '’', '*']);
        let Some(last) = inner.chars().next_back() else {
            return;
        };
        let Some(&(sent_start, _)) = cx.sentences.last() else {
            return;
        };
        let last_word = cx
            .summary_words
            .last()
            .map(|w| text::key(w.text))
            .unwrap_or_default();
        // Finished. (A full stop after a dangling word, "... with that.", is ordinary prose.)
        if ends_finished(last) || is_emoji(last) {
            return;
        }
        let (confidence, why) = if last == ':' || last == ',' || last == ';' || last == '-' {
            (0.95, format!("the summary ends on `{last}`, mid-sentence"))
        } else if DANGLING.contains(&last_word.as_str()) {
            (
                0.95,
                format!("the summary stops after `{last_word}`, mid-sentence"),
            )
        } else {
            (
                0.9,
                "the last sentence has no ending: the summary stops mid-sentence".to_string(),
            )
        };
        let span = TextSpan::of(cx.summary, sent_start, s.len());
        out.push(Finding::new(
            CategoryId::Truncation,
            NAME,
            span,
            Evidence::NotApplicable,
            confidence,
            why,
        ));
    }
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(summary: &str) -> Option<String> {
        let turns = turns(&[("c", "hi"), ("a", "hello")]);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Truncation.detect(&cx, &mut out);
        out.pop().map(|f| f.summary_span.text)
    }

    #[test]
    fn finished_sentences_pass() {
        for s in [
            "Customer is upset. Agent apologizes.",
            "Agent says \"we will help.\"",
            "Agent helps (see DM).",
            "Great service! 👍",
            "Is it fixed?  \n",
        ] {
            assert_eq!(run(s), None, "{s}");
        }
    }

    #[test]
    fn cut_sentences_are_flagged_with_the_last_sentence_as_span() {
        assert_eq!(
            run("Customer is upset. Agent tries to handle the situation").as_deref(),
            Some("Agent tries to handle the situation")
        );
        assert_eq!(
            run("Customer wants a photo of the").as_deref(),
            Some("Customer wants a photo of the")
        );
        assert_eq!(
            run("Here's a brief summary of the chat:").as_deref(),
            Some("Here's a brief summary of the chat:")
        );
        assert_eq!(run("Customer is upset. Agent").as_deref(), Some("Agent"));
    }

    #[test]
    fn empty_or_symbol_only_summaries_do_not_panic() {
        assert_eq!(run(""), None);
        assert!(run("))").is_none() || run("))").is_some());
    }
}
