//! Candidates that are not summaries at all: markup, loops, another language, a pasted
//! transcript. Each check compares with the original, so an original that already had the trait
//! (a summary quoting a `#` order number) does not make every revision of it fail.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::content::ContentFigures;
use super::{Check, Revision, Thresholds};
use crate::text;

/// Template and chat-markup tokens a small model leaks ("{{#1}}", "<|im_end|>", "[INST]",
/// "</s>"), and a JSON wrapper left around the text.
static MARKUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?x)\{\{ | \}\} | \{\# | <\|[^|>\n]{0,40}\|> | </?s> | \[/?INST\] | <<SYS>> | </?(?:think|summary|assistant|user|system)> | ^\s*\{\s*"\w+"\s*: | \{\{?\s*\#?\d+\s*\}"#,
    )
    .unwrap()
});
/// A phrase this long said three times is a loop (twice happens in good summaries: "from the
/// purchase date before the ...").
const REPEATED_PHRASE_WORDS: usize = 6;
const REPEATED_PHRASE_TIMES: usize = 3;
/// Fewer words than this say too little to tell a language by its function words.
const LANGUAGE_MIN_WORDS: usize = 8;

pub(super) fn markup(r: &Revision<'_>, refuse: &mut impl FnMut(Check, String)) {
    if let Some(m) = MARKUP.find(r.candidate)
        && !MARKUP.is_match(r.original)
    {
        refuse(
            Check::Markup,
            format!("template or markup token `{}`", m.as_str().trim()),
        );
    }
}

/// Word keys of each sentence of `s`, for sentences of three words or more.
fn sentence_keys(s: &str) -> Vec<String> {
    text::sentences(s)
        .into_iter()
        .map(|(a, b)| {
            text::words(&s[a..b])
                .iter()
                .map(|w| text::key(w.text))
                .collect::<Vec<_>>()
        })
        .filter(|k| k.len() >= 3)
        .map(|k| k.join(" "))
        .collect()
}

/// The most times one phrase of [`REPEATED_PHRASE_WORDS`] words occurs in `s`.
fn max_phrase_count(s: &str) -> usize {
    let keys: Vec<String> = text::words(s).iter().map(|w| text::key(w.text)).collect();
    let mut counts: HashMap<&[String], usize> = HashMap::new();
    for w in keys.windows(REPEATED_PHRASE_WORDS) {
        *counts.entry(w).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

pub(super) fn repetition(r: &Revision<'_>, refuse: &mut impl FnMut(Check, String)) {
    let sentences = sentence_keys(r.candidate);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for s in &sentences {
        *seen.entry(s).or_default() += 1;
    }
    if let Some((s, n)) = seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .max_by_key(|(_, n)| *n)
    {
        let original_has = sentence_keys(r.original).iter().filter(|o| *o == s).count();
        if n > original_has.max(1) {
            let words = s.split(' ').count();
            refuse(
                Check::Repetition,
                format!("one sentence of {words} words appears {n} times"),
            );
            return;
        }
    }
    let phrase = max_phrase_count(r.candidate);
    if phrase >= REPEATED_PHRASE_TIMES && phrase > max_phrase_count(r.original) {
        refuse(
            Check::Repetition,
            format!("a phrase of {REPEATED_PHRASE_WORDS} words appears {phrase} times"),
        );
    }
}

/// (letters outside the Latin script, letters) in `s`.
fn non_latin(s: &str) -> (usize, usize) {
    let mut other = 0;
    let mut all = 0;
    for c in s.chars().filter(|c| c.is_alphabetic()) {
        all += 1;
        // Basic Latin, Latin-1 and Latin Extended-A/B.
        if !(c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c)) {
            other += 1;
        }
    }
    (other, all)
}

/// Share of the words of `s` that are English function words.
fn function_share(s: &str) -> (f64, usize) {
    let words = text::words(s);
    let hits = words
        .iter()
        .filter(|w| text::is_function_word(&text::key(w.text)))
        .count();
    (hits as f64 / words.len().max(1) as f64, words.len())
}

pub(super) fn language(r: &Revision<'_>, refuse: &mut impl FnMut(Check, String)) {
    let (cand_other, cand_all) = non_latin(r.candidate);
    let (orig_other, orig_all) = non_latin(r.original);
    if cand_other * 10 > cand_all * 3 && orig_other * 10 <= orig_all {
        refuse(
            Check::Language,
            format!("{cand_other} of its {cand_all} letters are not Latin; the original's are"),
        );
        return;
    }
    let (cand_share, cand_words) = function_share(r.candidate);
    let (orig_share, _) = function_share(r.original);
    // English prose is a third or more function words; other Latin-script languages share few.
    if cand_words >= LANGUAGE_MIN_WORDS && orig_share >= 0.2 && cand_share < 0.08 {
        refuse(
            Check::Language,
            format!(
                "{:.0}% of its words are English function words, against {:.0}% in the original",
                cand_share * 100.0,
                orig_share * 100.0
            ),
        );
    }
}

pub(super) fn transcript_copy(
    r: &Revision<'_>,
    f: &ContentFigures,
    t: &Thresholds,
    refuse: &mut impl FnMut(Check, String),
) {
    let labels = text::speaker_labels(r.candidate).len();
    if labels >= 2 && text::speaker_labels(r.original).len() < 2 {
        refuse(
            Check::TranscriptCopy,
            format!(
                "{labels} speaker labels (\"Customer:\", \"Agent:\"): a transcript, not a summary"
            ),
        );
        return;
    }
    if f.candidate_copied_share > t.max_copied_share
        && f.candidate_copied_share > f.original_copied_share + 0.2
    {
        refuse(
            Check::TranscriptCopy,
            format!(
                "{:.0}% of its words are long verbatim runs of the conversation (the original: {:.0}%)",
                f.candidate_copied_share * 100.0,
                f.original_copied_share * 100.0
            ),
        );
    }
}

/// Whether `s` ends a sentence (closing quotes and brackets aside).
fn ends_a_sentence(s: &str) -> bool {
    s.trim_end()
        .trim_end_matches(['"', '\'', ')', ']', '\u{201D}', '\u{2019}', '*'])
        .ends_with(['.', '!', '?'])
}

pub(super) fn cut_off(r: &Revision<'_>, refuse: &mut impl FnMut(Check, String)) {
    if ends_a_sentence(r.original) && !ends_a_sentence(r.candidate) {
        let words = text::words(r.candidate);
        let tail: Vec<&str> = words[words.len().saturating_sub(3)..]
            .iter()
            .map(|w| w.text)
            .collect();
        let tail = tail.join(" ");
        refuse(
            Check::CutOff,
            format!("stops mid-sentence (\"...{tail}\") where the original ended its sentence"),
        );
    }
}

/// Refuses a candidate far shorter or far longer than the original's unflagged text.
pub(super) fn length(f: &ContentFigures, t: &Thresholds, refuse: &mut impl FnMut(Check, String)) {
    let (words, base) = (f.candidate_words, f.original_unflagged_words);
    // Longer than the whole original too: an original condensed away (a pasted transcript)
    // leaves no unflagged base, and its summary is still far shorter than it.
    let too_long = f.length_ratio > t.max_length_ratio
        && words > base + t.max_added_words
        && words > f.original_words;
    let too_short =
        f.length_ratio < t.min_length_ratio || (words < t.min_words && f.original_words > words);
    if too_short || too_long {
        refuse(
            Check::Length,
            format!(
                "{words} words against {base} in the original's unflagged text (ratio {:.2}, allowed {:.2} to {:.2}, and at least {} words)",
                f.length_ratio, t.min_length_ratio, t.max_length_ratio, t.min_words
            ),
        );
    }
}
