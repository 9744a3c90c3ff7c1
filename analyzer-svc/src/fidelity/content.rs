//! What a candidate keeps of its original and what it adds, in content words (stems of words
//! that are not function words), counted once each.

use std::collections::HashSet;

use serde::Serialize;

use super::{Check, Flagged, Revision, Thresholds};
use crate::taxonomy::CategoryId;
use crate::text::{self, Word};

/// The guard's measurements of one candidate: the figures behind its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentFigures {
    /// Share of the original's unflagged content words the candidate still has (1.0 when the
    /// original has none).
    pub content_kept: f64,
    /// Share of the candidate's content words that neither the original nor the conversation has.
    pub new_word_share: f64,
    pub new_words: usize,
    /// Content words the candidate has and its original lacks (`new_words` of them are in the
    /// conversation neither).
    pub inserted_words: usize,
    /// Numbers, capitalized names and action words the candidate adds that nothing supports.
    pub new_numbers: Vec<String>,
    pub new_names: Vec<String>,
    pub new_actions: Vec<String>,
    pub candidate_words: usize,
    pub original_words: usize,
    pub original_unflagged_words: usize,
    /// `candidate_words / original_unflagged_words`.
    pub length_ratio: f64,
    /// Share of words inside long verbatim runs of one conversation turn, candidate and original.
    pub candidate_copied_share: f64,
    pub original_copied_share: f64,
}

/// An original longer than this is no longer a summary (a pasted transcript, a ramble): a
/// format finding over it may be condensed away. TweetSumm's human summaries stay under it.
const LONG_ORIGINAL_WORDS: usize = 80;

/// Whether the fix of `f` may drop the content under its span. A wrong fact, an invented action,
/// personal data, a swapped speaker, a flipped polarity or a repeat is replaced or deleted; an
/// omission or a truncation is fixed by adding, so the content under it stays; a format finding
/// frees its content when it is a part of the summary (a preamble, a sign-off) or the original
/// is far too long to be one, but not when it is the layout of a normal summary (bullets).
fn frees_content(f: &Flagged, original: &str, original_words: usize) -> bool {
    match f.category {
        CategoryId::HallucinatedFact
        | CategoryId::UnsupportedAction
        | CategoryId::PiiExposure
        | CategoryId::SpeakerAttribution
        | CategoryId::Polarity
        | CategoryId::Repetition => true,
        CategoryId::FormatViolation => {
            f.end.saturating_sub(f.start) * 2 <= original.len()
                || original_words > LONG_ORIGINAL_WORDS
        }
        CategoryId::Omission | CategoryId::Truncation | CategoryId::WrongLanguage => false,
    }
}

/// A verbatim run of a turn at least this long is copied, not summarized (TweetSumm's human
/// summaries quote shorter runs; the format detector uses the same idea).
const COPY_RUN_WORDS: usize = 8;

/// Action words an invented commitment is made of ("refund", "replacement", "escalated").
/// Prefixes of lowercase keys, so inflections match.
const ACTION_PREFIXES: &[&str] = &[
    "refund",
    "reimburs",
    "credit",
    "compensat",
    "voucher",
    "coupon",
    "discount",
    "replac",
    "exchang",
    "cancel",
    "escalat",
    "waive",
    "upgrad",
    "repair",
    "suspend",
    "terminat",
    "deliver",
    "ship",
    "lawsuit",
    "fired",
    "free",
];

/// The vocabulary of summaries themselves (reporting verbs, "issue", "problem"): words any
/// summary uses whatever the conversation said, so they are neither content to keep nor new
/// content. Prefixes of lowercase keys.
const SUMMARY_VOCABULARY: &[&str] = &[
    "apolog",
    "explain",
    "suggest",
    "advis",
    "request",
    "want",
    "complain",
    "enquir",
    "inquir",
    "report",
    "state",
    "mention",
    "confirm",
    "respond",
    "response",
    "repl",
    "thank",
    "provid",
    "assist",
    "help",
    "issue",
    "problem",
    "query",
    "queri",
    "concern",
    "inform",
    "updat",
    "assur",
    "wonder",
    "need",
    "tries",
    "tried",
    "try",
    "ask",
    "tell",
    "say",
    "regard",
    "conversation",
    "chat",
    "situation",
    "recommend",
    "direct",
    "instruct",
    "guid",
    "inquiry",
    "further",
    "detail",
    "discuss",
    "contact",
    "reach",
    "follow",
    "check",
    "look",
    "regarding",
    "about",
    "dm",
    "pm",
    "url",
    "link",
];

/// Neither content to keep nor new content: function words and summary vocabulary.
pub(super) fn is_generic(key: &str) -> bool {
    text::is_function_word(key) || SUMMARY_VOCABULARY.iter().any(|p| key.starts_with(p))
}

/// Content-word stems of `words`, except those inside `skip` ranges.
fn content_stems(words: &[Word<'_>], skip: &[(usize, usize)]) -> (HashSet<String>, usize) {
    let mut stems = HashSet::new();
    let mut counted = 0;
    for w in words {
        if skip.iter().any(|&(s, e)| w.start < e && s < w.end) {
            continue;
        }
        counted += 1;
        let k = text::key(w.text);
        if !is_generic(&k) {
            stems.insert(text::stem(&k).to_string());
        }
    }
    (stems, counted)
}

/// Every run of [`COPY_RUN_WORDS`] word keys that some turn has, verbatim.
fn turn_windows(turn_keys: &[Vec<String>]) -> HashSet<&[String]> {
    turn_keys
        .iter()
        .flat_map(|t| t.windows(COPY_RUN_WORDS))
        .collect()
}

/// Share of `words` inside verbatim runs of at least [`COPY_RUN_WORDS`] words of one turn.
fn copied_share(words: &[Word<'_>], windows: &HashSet<&[String]>) -> f64 {
    if words.len() < COPY_RUN_WORDS {
        return 0.0;
    }
    let keys: Vec<String> = words.iter().map(|w| text::key(w.text)).collect();
    let mut copied = vec![false; keys.len()];
    for (i, w) in keys.windows(COPY_RUN_WORDS).enumerate() {
        if windows.contains(w) {
            copied[i..i + COPY_RUN_WORDS].fill(true);
        }
    }
    copied.iter().filter(|c| **c).count() as f64 / keys.len() as f64
}

/// The numbers of `s`, normalized so that the same number written two ways meets: digits with
/// inner `,` `.` `:` between digits, thousands commas dropped, `:` read as `.` ("9,242" is
/// "9242", "6:50" is "6.50", "3rd" is "3").
pub(super) fn numbers_in(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && (bytes[i].is_ascii_digit()
                || (matches!(bytes[i], b',' | b'.' | b':')
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
        {
            i += 1;
        }
        out.push(s[start..i].replace(',', "").replace(':', "."));
    }
    out
}

/// The byte ranges of the original whose content a fix may drop or replace.
pub(super) fn free_spans(r: &Revision<'_>) -> Vec<(usize, usize)> {
    let words = text::words(r.original).len();
    r.flagged
        .iter()
        .filter(|f| frees_content(f, r.original, words))
        .map(|f| (f.start, f.end))
        .collect()
}

pub(super) fn figures(r: &Revision<'_>) -> ContentFigures {
    let original_words = text::words(r.original);
    let candidate_words = text::words(r.candidate);
    let free = free_spans(r);
    let (unflagged, original_unflagged_words) = content_stems(&original_words, &free);
    let (candidate, _) = content_stems(&candidate_words, &[]);
    let content_kept = if unflagged.is_empty() {
        1.0
    } else {
        unflagged.intersection(&candidate).count() as f64 / unflagged.len() as f64
    };

    // The conversation's word keys, once: what supports a word, and what a copy copies.
    let turn_keys: Vec<Vec<String>> = r
        .turns
        .iter()
        .map(|t| {
            text::words(&t.text)
                .iter()
                .map(|w| text::key(w.text))
                .collect()
        })
        .collect();
    let windows = turn_windows(&turn_keys);
    // What supports a word: the original (all of it: a flagged word may be reworded, not
    // invented) and every turn of the conversation.
    let mut supported: HashSet<String> = HashSet::new();
    let original_keys = original_words.iter().map(|w| text::key(w.text));
    for k in original_keys.chain(turn_keys.iter().flatten().cloned()) {
        supported.insert(text::stem(&k).to_string());
        supported.insert(k);
    }
    let is_supported = |k: &str| supported.contains(k) || supported.contains(text::stem(k));
    let mut numbers: HashSet<String> = numbers_in(r.original).into_iter().collect();
    for t in r.turns {
        numbers.extend(numbers_in(&t.text));
    }

    let sentence_starts: HashSet<usize> = text::sentences(r.candidate)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    let (mut new_numbers, mut new_names, mut new_actions) = (Vec::new(), Vec::new(), Vec::new());
    let mut new_content: HashSet<String> = HashSet::new();
    // Content the candidate inserts: words its original lacks, whether the conversation has them.
    let in_original: HashSet<String> = original_words
        .iter()
        .map(|w| text::stem(&text::key(w.text)).to_string())
        .collect();
    let mut inserted: HashSet<String> = HashSet::new();
    for w in &candidate_words {
        let k = text::key(w.text);
        if !is_generic(&k) && !in_original.contains(text::stem(&k)) {
            inserted.insert(text::stem(&k).to_string());
        }
        if is_generic(&k) || is_supported(&k) {
            continue;
        }
        new_content.insert(text::stem(&k).to_string());
        if w.text.bytes().any(|b| b.is_ascii_digit()) {
            continue; // numbers are checked whole, below
        }
        let push = |list: &mut Vec<String>| {
            if !list.iter().any(|x| x == w.text) {
                list.push(w.text.to_string());
            }
        };
        if ACTION_PREFIXES.iter().any(|p| k.starts_with(p)) {
            push(&mut new_actions);
        } else if w.text.chars().next().is_some_and(char::is_uppercase)
            && !sentence_starts.contains(&w.start)
            && w.text != "I"
        {
            push(&mut new_names);
        }
    }
    for n in numbers_in(r.candidate) {
        if !numbers.contains(&n) && !new_numbers.contains(&n) {
            new_numbers.push(n);
        }
    }
    let new_word_share = if candidate.is_empty() {
        0.0
    } else {
        new_content.len() as f64 / candidate.len() as f64
    };
    ContentFigures {
        content_kept,
        new_word_share,
        new_words: new_content.len(),
        inserted_words: inserted.len(),
        new_numbers,
        new_names,
        new_actions,
        candidate_words: candidate_words.len(),
        original_words: original_words.len(),
        original_unflagged_words,
        length_ratio: candidate_words.len() as f64 / original_unflagged_words.max(1) as f64,
        candidate_copied_share: copied_share(&candidate_words, &windows),
        original_copied_share: copied_share(&original_words, &windows),
    }
}

/// Refuses a candidate that lost too much of the original's unflagged content.
pub(super) fn dropped(f: &ContentFigures, t: &Thresholds, refuse: &mut impl FnMut(Check, String)) {
    if f.content_kept < t.min_content_kept {
        refuse(
            Check::ContentDropped,
            format!(
                "keeps {:.0}% of the original's unflagged content words (at least {:.0}% required)",
                f.content_kept * 100.0,
                t.min_content_kept * 100.0
            ),
        );
    }
}

/// Refuses invented numbers, names and actions, and a candidate of mostly new words.
pub(super) fn unsupported(
    f: &ContentFigures,
    t: &Thresholds,
    refuse: &mut impl FnMut(Check, String),
) {
    for (what, list) in [
        ("numbers", &f.new_numbers),
        ("names", &f.new_names),
        ("actions", &f.new_actions),
    ] {
        if !list.is_empty() {
            refuse(
                Check::UnsupportedContent,
                format!(
                    "adds {what} that neither the original nor the conversation has: {}",
                    list.join(", ")
                ),
            );
        }
    }
    let inserted_unsupported = f.new_words as f64 / f.inserted_words.max(1) as f64;
    if f.new_words >= t.min_inserted_unsupported
        && inserted_unsupported > t.max_inserted_unsupported_share
    {
        refuse(
            Check::UnsupportedContent,
            format!(
                "{} of the {} content words it inserts are in neither the original nor the conversation (at most {:.0}%)",
                f.new_words,
                f.inserted_words,
                t.max_inserted_unsupported_share * 100.0
            ),
        );
    }
    if f.new_word_share > t.max_new_word_share && f.new_words >= t.min_new_words {
        refuse(
            Check::UnsupportedContent,
            format!(
                "{:.0}% of its content words are in neither the original nor the conversation (at most {:.0}%)",
                f.new_word_share * 100.0,
                t.max_new_word_share * 100.0
            ),
        );
    }
}
