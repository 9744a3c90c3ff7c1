//! repetition: the same sentence, or a long run of the same words, appears twice in the summary
//! (a decoding loop, or a model restating itself).

use std::collections::HashMap;

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Repetition;

const NAME: &str = "repetition";

/// Repeated runs shorter than this are ordinary ("the customer is").
const MIN_RUN_WORDS: usize = 8;

impl Detector for Repetition {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::Repetition]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if cx.summary_words.len() < 2 * MIN_RUN_WORDS {
            return;
        }
        let keys = cx.summary_keys();
        // First occurrence of every MIN_RUN_WORDS-gram; a second, non-overlapping occurrence is a repeat.
        let mut seen: HashMap<&[String], usize> = HashMap::new();
        let mut i = 0;
        while i + MIN_RUN_WORDS <= keys.len() {
            let gram = &keys[i..i + MIN_RUN_WORDS];
            match seen.get(gram) {
                Some(&first) if first + MIN_RUN_WORDS <= i => {
                    // Extend the repeat as far as it goes.
                    let mut n = MIN_RUN_WORDS;
                    while i + n < keys.len() && first + n < i && keys[first + n] == keys[i + n] {
                        n += 1;
                    }
                    let span = TextSpan::of(
                        cx.summary,
                        cx.summary_words[i].start,
                        cx.summary_words[i + n - 1].end,
                    );
                    let explanation = format!(
                        "repeats, word for word, what the summary already said at byte {}",
                        cx.summary_words[first].start
                    );
                    out.push(Finding::new(
                        CategoryId::Repetition,
                        NAME,
                        span,
                        Evidence::NotApplicable,
                        0.9,
                        explanation,
                    ));
                    i += n;
                }
                Some(_) => i += 1,
                None => {
                    seen.insert(gram, i);
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(summary: &str) -> Vec<String> {
        let turns = turns(&[("c", "hi"), ("a", "hello")]);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Repetition.detect(&cx, &mut out);
        out.into_iter().map(|f| f.summary_span.text).collect()
    }

    #[test]
    fn flags_a_repeated_sentence_once() {
        let s = "Customer cannot log in to the app since the update. Agent asks for a DM. Customer cannot log in to the app since the update.";
        assert_eq!(
            run(s),
            ["Customer cannot log in to the app since the update"]
        );
    }

    #[test]
    fn ordinary_reuse_of_short_phrases_passes() {
        let s = "The customer is upset about the delay. The agent is sorry about the delay and the customer is told to wait.";
        assert!(run(s).is_empty());
        // A run of one word repeated is a loop, and is flagged once.
        assert_eq!(run(&"very ".repeat(20)).len(), 1);
    }
}
