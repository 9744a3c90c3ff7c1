//! The joins an edit leaves: a span replaced or deleted in the middle of a sentence must leave
//! a sentence a person would write. Seen in span edits that a random-weight editor got past the
//! rest of the guard: "Will arenCustomer complaints" (two words glued), "a letter regarding."
//! (a preposition left hanging), "(contact: )" (brackets emptied). Each trait is counted in the
//! candidate and in the original, and refused only where the candidate has more of it: an
//! original that already had one does not make every revision of it fail.

use std::sync::LazyLock;

use regex::Regex;

use super::{Check, Revision};
use crate::text;

struct Seam {
    what: &'static str,
    pattern: Regex,
}

static SEAMS: LazyLock<Vec<Seam>> = LazyLock::new(|| {
    let seam = |what, pattern: &str| Seam {
        what,
        pattern: Regex::new(pattern).unwrap(),
    };
    vec![
        // A lowercase run straight into a capitalized word: "arenCustomer" ("iPhone", "eBay"
        // have one lowercase letter; brand names the conversation spells so are allowed below).
        seam("two words glued together", r"\b[a-z]{2,}[A-Z][a-z]+"),
        seam(
            "brackets left empty",
            r"\(\s*(?:[\w ]{1,20}:\s*)?\)|\[\s*\]",
        ),
        seam(
            "a word left hanging before the end of a sentence",
            r"(?i)\b(?:regarding|about|for|with|to|of|from|by|at|as|into|via|the|a|an|and|or|but|his|her|their|its|your|my|our)\s*[.!?](?:\s|$)",
        ),
        seam("a sentence starting in lowercase", r"[.!?]\s+[a-z]"),
        seam(
            "spaces or punctuation doubled",
            r" [,.;:!?](?:\s|$)|[,;:]\s*[,.;:]|(?:^|[^.])\.\s*\.(?:[^.]|$)",
        ),
        seam(
            "a sentence of one word",
            r"(?:^|[.!?]\s+)[\w']+[.!?](?:\s|$)",
        ),
    ]
});

/// The first word said twice in a row ("The The customer") that the original does not double.
fn doubled_word(candidate: &str, original: &str) -> Option<String> {
    let doubled = |s: &str| -> Vec<String> {
        let keys: Vec<String> = text::words(s).iter().map(|w| text::key(w.text)).collect();
        keys.windows(2)
            .filter(|w| w[0] == w[1] && !w[0].bytes().all(|b| b.is_ascii_digit()))
            .map(|w| w[0].clone())
            .collect()
    };
    let before = doubled(original);
    doubled(candidate).into_iter().find(|w| !before.contains(w))
}

/// The words after the candidate's last full stop, when they are a bare subject (one word, or
/// an article and one) that the original did not end with: a truncated tail trimmed back to
/// it ("... to the tv. Customer" from "... to the tv. Customer has provided the URL as").
fn bare_tail(candidate: &str, original: &str) -> Option<String> {
    static STOP: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[.!?]\s+").unwrap());
    let tail = |s: &str| -> String {
        let s = s.trim();
        s[STOP.find_iter(s).last().map_or(0, |m| m.end())..].to_string()
    };
    let last = tail(candidate);
    let words: Vec<&str> = last.split_whitespace().collect();
    let is_word = |w: &str| w.chars().all(char::is_alphabetic);
    let bare = match words.as_slice() {
        [w] => is_word(w),
        [article, w] => {
            ["the", "a", "an"].contains(&article.to_ascii_lowercase().as_str()) && is_word(w)
        }
        _ => false,
    };
    (bare && last != tail(original)).then_some(last)
}

pub(super) fn seams(r: &Revision<'_>, refuse: &mut impl FnMut(Check, String)) {
    if let Some(w) = doubled_word(r.candidate, r.original) {
        refuse(
            Check::Seam,
            format!("a word said twice in a row: `{w} {w}`"),
        );
    }
    if let Some(tail) = bare_tail(r.candidate, r.original) {
        refuse(
            Check::Seam,
            format!("a sentence of one word left at the end: `{tail}`"),
        );
    }
    for seam in SEAMS.iter() {
        let count = |s: &str| seam.pattern.find_iter(s).count();
        let in_conversation =
            |m: &str| r.turns.iter().any(|t| t.text.contains(m)) || r.original.contains(m);
        let new: Vec<&str> = seam
            .pattern
            .find_iter(r.candidate)
            .map(|m| m.as_str())
            .filter(|m| !in_conversation(m))
            .collect();
        if !new.is_empty() && count(r.candidate) > count(r.original) {
            refuse(Check::Seam, format!("{}: `{}`", seam.what, new[0].trim()));
        }
    }
}
