//! What a candidate changed, part by part: a word-level diff against its original. The counts
//! over the whole summary (content.rs) let a short edit's one invented word through: a span
//! edit that turned "(contact: +1 (415) 555-0134)" into "(contact: will aren)" inserted a single
//! unsupported word, under the two the share rule waits for. Here each changed part that
//! replaces flagged text (the fix itself) is judged on its own:
//! - every content word it inserts comes from the conversation or the original's unflagged
//!   text, or is a typed placeholder (`[phone number]`) or a party ("agent", "customer");
//! - it does not put words that say nothing (function words only) where content was: that is
//!   a deletion with noise left in it.
//!
//! Parts away from the flagged spans (an omission's added sentence) are left to the share rules:
//! a human completion rightly adds a few words the conversation lacks.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::{Check, Revision};
use crate::detectors::pii;
use crate::text::{self, Word};

/// Parties of a conversation, by the names summaries give them; a fix may always name one
/// (a swapped speaker is fixed by naming the other party).
const PARTIES: &[&str] = &[
    "customer",
    "agent",
    "bot",
    "representative",
    "rep",
    "support",
    "team",
    "company",
    "client",
    "user",
    "caller",
    "advisor",
    "staff",
];

/// Words more than it removes that make a part an added sentence rather than a replacement.
const ADDED_SENTENCE_WORDS: usize = 5;

static BRACKETED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[[^\[\]\n]{1,40}\]").unwrap());

/// One changed part: the original's words `original` became the candidate's words `candidate`
/// (indices into each text's words; either may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub original: Range<usize>,
    pub candidate: Range<usize>,
}

/// The changed parts between two word-key sequences, from a longest common subsequence.
pub(super) fn parts(a: &[String], b: &[String]) -> Vec<Part> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut open: Option<(usize, usize)> = None;
    let mut close = |open: &mut Option<(usize, usize)>, i: usize, j: usize| {
        if let Some((si, sj)) = open.take() {
            out.push(Part {
                original: si..i,
                candidate: sj..j,
            });
        }
    };
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            close(&mut open, i, j);
            i += 1;
            j += 1;
            continue;
        }
        open.get_or_insert((i, j));
        if j == m || (i < n && lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            i += 1;
        } else {
            j += 1;
        }
    }
    close(&mut open, i, j);
    out
}

/// Byte ranges of the typed placeholders in `s`.
fn placeholders(s: &str) -> Vec<Range<usize>> {
    BRACKETED
        .find_iter(s)
        .filter(|m| pii::is_placeholder(m.as_str()))
        .map(|m| m.range())
        .collect()
}

/// The spans a fix changes, by what they call for.
pub(super) struct Spans<'s> {
    /// Every flagged span but one over (nearly) the whole summary, an omission's, whose fix adds
    /// anywhere.
    pub flagged: &'s [(usize, usize)],
    /// Those of `flagged` that name the wrong speaker: fixed by naming the other party.
    pub speaker: &'s [(usize, usize)],
    /// Those whose words the fix may drop (not support for what it inserts).
    pub free: &'s [(usize, usize)],
}

/// Refuses a fix (a changed part over a flagged span) that inserts content nothing supports,
/// that puts words saying nothing where content was, that fixes a wrong speaker by dropping
/// what the speaker did, or that deletes a figure from the middle of a sentence.
///
/// With an omission flagged (`adds_anywhere`), a part that inserts a sentence's worth of words
/// more than it takes away is the omission's fix landing beside a flagged span: an addition,
/// left to the share rules.
pub(super) fn fixes(
    r: &Revision<'_>,
    Spans {
        flagged,
        speaker,
        free,
    }: Spans<'_>,
    adds_anywhere: bool,
    is_generic: impl Fn(&str) -> bool,
    refuse: &mut impl FnMut(Check, String),
) {
    let original = text::words(r.original);
    let candidate = text::words(r.candidate);
    let keys = |w: &[Word<'_>]| w.iter().map(|w| text::key(w.text)).collect::<Vec<_>>();
    let in_free = |w: &Word<'_>| free.iter().any(|&(s, e)| w.start < e && s < w.end);
    // What supports an inserted word: the conversation, and the original outside the spans a
    // fix replaces (a flagged word is the error, not support for itself).
    let mut supported: HashSet<String> = HashSet::new();
    let turn_words = r.turns.iter().flat_map(|t| text::words(&t.text));
    for k in turn_words.map(|w| text::key(w.text)).chain(
        original
            .iter()
            .filter(|w| !in_free(w))
            .map(|w| text::key(w.text)),
    ) {
        supported.insert(text::stem(&k).to_string());
        supported.insert(k);
    }
    // Numbers are matched whole, however a turn writes them ("20mins" has 20).
    let numbers: HashSet<String> = r
        .turns
        .iter()
        .flat_map(|t| super::content::numbers_in(&t.text))
        .collect();
    let placeholders = placeholders(r.candidate);
    let is_content = |k: &str| !is_generic(k) && !PARTIES.contains(&k);

    for part in parts(&keys(&original), &keys(&candidate)) {
        // A fix of a wrong span replaces it; a truncation's or a format finding's span is fixed
        // by adding after it (a completion, under the share rules), so only a part that takes
        // its words away is judged here.
        let replaces_flagged =
            !part.original.is_empty() && touches(&part, &original, r.original.len(), flagged);
        if !replaces_flagged && !touches(&part, &original, r.original.len(), free) {
            continue;
        }
        if adds_anywhere && part.candidate.len() >= part.original.len() + ADDED_SENTENCE_WORDS {
            continue;
        }
        let inserted = &candidate[part.candidate.clone()];
        let removed = &original[part.original.clone()];
        let was = text_of(r.original, removed);
        if let Some(refusal) = figure_cut_from_a_sentence(r.original, &original, &part) {
            refuse(Check::Seam, refusal);
            continue;
        }
        let other_flagged: Vec<(usize, usize)> = flagged
            .iter()
            .filter(|s| !speaker.contains(s))
            .copied()
            .collect();
        let len = r.original.len();
        if touches(&part, &original, len, speaker)
            && !touches(&part, &original, len, &other_flagged)
        {
            let kept: HashSet<String> = inserted.iter().map(|w| text::key(w.text)).collect();
            let dropped: Vec<&str> = removed
                .iter()
                .filter(|w| {
                    let k = text::key(w.text);
                    !PARTIES.contains(&k.as_str()) && !kept.contains(&k)
                })
                .map(|w| w.text)
                .collect();
            if !dropped.is_empty() {
                refuse(
                    Check::ContentDropped,
                    format!(
                        "fixes a speaker in `{was}` by dropping {}: a wrong speaker is fixed by naming the other party",
                        dropped.join(" ")
                    ),
                );
                continue;
            }
        }
        let mut unsupported: Vec<&str> = Vec::new();
        let mut says_something = false;
        for w in inserted {
            if placeholders
                .iter()
                .any(|p| p.start <= w.start && w.end <= p.end)
            {
                says_something = true;
                continue;
            }
            let k = text::key(w.text);
            says_something |= PARTIES.contains(&k.as_str());
            if !is_content(&k) {
                continue;
            }
            says_something = true;
            let number_supported = w.text.bytes().any(|b| b.is_ascii_digit())
                && super::content::numbers_in(w.text)
                    .iter()
                    .all(|n| numbers.contains(n));
            if !number_supported && !supported.contains(&k) && !supported.contains(text::stem(&k)) {
                unsupported.push(w.text);
            }
        }
        if !unsupported.is_empty() {
            refuse(
                Check::UnsupportedContent,
                format!(
                    "replaces `{was}` with `{}`: the conversation does not have {}",
                    text_of(r.candidate, inserted),
                    unsupported.join(", ")
                ),
            );
        } else if !inserted.is_empty()
            && !says_something
            && removed.iter().any(|w| {
                let k = text::key(w.text);
                is_content(&k) || PARTIES.contains(&k.as_str())
            })
        {
            refuse(
                Check::UnsupportedContent,
                format!(
                    "replaces `{was}` with `{}`, words that say nothing",
                    text_of(r.candidate, inserted)
                ),
            );
        }
    }
}

/// A part that only deletes, taking a figure ("17 days") from between two words of one
/// sentence, leaves a sentence that has lost what it was about: "delayed by 17 days but"
/// became "delayed by but", "season 17 missing" became "season missing". A wrong figure is
/// fixed with the conversation's figure; a deletion at a clause's edge (a comma, a full stop)
/// is left to the other checks.
fn figure_cut_from_a_sentence(original: &str, words: &[Word<'_>], part: &Part) -> Option<String> {
    if !part.candidate.is_empty() || part.original.is_empty() {
        return None;
    }
    let removed = &words[part.original.clone()];
    if !removed
        .iter()
        .any(|w| w.text.bytes().any(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (before, after) = (
        words.get(part.original.start.checked_sub(1)?)?,
        words.get(part.original.end)?,
    );
    let first = &removed[0];
    let last = &removed[removed.len() - 1];
    let joins = |a: usize, b: usize| original[a..b].chars().all(char::is_whitespace);
    (joins(before.end, first.start) && joins(last.end, after.start)).then(|| {
        format!(
            "deletes `{}` from the middle of a sentence, leaving `{} {}`",
            text_of(original, removed),
            before.text,
            after.text
        )
    })
}

/// Whether a changed part replaces, or inserts into, one of `spans`.
fn touches(part: &Part, words: &[Word<'_>], len: usize, spans: &[(usize, usize)]) -> bool {
    let (lo, hi) = if part.original.is_empty() {
        // An insertion: the gap between the words around it, edges included.
        let i = part.original.start;
        let lo = if i > 0 { words[i - 1].end } else { 0 };
        let hi = words.get(i).map_or(len, |w| w.start);
        return spans.iter().any(|&(s, e)| s <= hi && lo <= e);
    } else {
        (
            words[part.original.start].start,
            words[part.original.end - 1].end,
        )
    };
    spans.iter().any(|&(s, e)| lo < e && s < hi)
}

/// The text from the first to the last of `words` (empty for none).
fn text_of<'a>(s: &'a str, words: &[Word<'_>]) -> &'a str {
    match (words.first(), words.last()) {
        (Some(a), Some(b)) => &s[a.start..b.end],
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parts_are_the_runs_a_diff_changes() {
        let a = keys("a letter regarding 48 hours arrived");
        let b = keys("a letter regarding will aren arrived today");
        assert_eq!(
            parts(&a, &b),
            [
                Part {
                    original: 3..5,
                    candidate: 3..5
                },
                Part {
                    original: 6..6,
                    candidate: 6..7
                }
            ]
        );
        assert!(parts(&a, &a).is_empty());
        assert_eq!(
            parts(&a, &[]),
            [Part {
                original: 0..6,
                candidate: 0..0
            }]
        );
    }
}
