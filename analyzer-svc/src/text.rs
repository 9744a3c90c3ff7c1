//! Text helpers every detector shares: safe slicing, words with byte offsets, sentences, speaker
//! labels.
//!
//! Matching is ASCII case-insensitive on purpose: `to_ascii_lowercase` keeps byte offsets
//! unchanged, so a position found in the folded text is a valid position in the original
//! (full Unicode lowercasing can change lengths, e.g. 'İ', and would break spans).

use std::sync::LazyLock;

use regex::Regex;

/// A speaker label opening a turn of a retold transcript ("Customer:", "Agent:").
static SPEAKER_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:customer|agent|user|assistant|support|bot|client|representative|rep)\s*:")
        .unwrap()
});

/// Byte ranges of the speaker labels in `s`: two or more make a transcript, not a summary.
pub fn speaker_labels(s: &str) -> Vec<(usize, usize)> {
    SPEAKER_LABEL
        .find_iter(s)
        .map(|m| (m.start(), m.end()))
        .collect()
}

/// Clamps `start..end` into `s` and widens it to character boundaries. Never panics.
pub fn snap(s: &str, start: usize, end: usize) -> (usize, usize) {
    let len = s.len();
    let mut start = start.min(len);
    let mut end = end.min(len).max(start);
    while !s.is_char_boundary(start) {
        start -= 1;
    }
    while !s.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// `&s[start..end]`, clamped and snapped; never panics.
pub fn slice(s: &str, start: usize, end: usize) -> &str {
    let (start, end) = snap(s, start, end);
    &s[start..end]
}

/// A word: a run of alphanumerics, with inner apostrophes kept ("don't", "customer's").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word<'a> {
    pub start: usize,
    pub end: usize,
    pub text: &'a str,
}

/// The words of `s`, with byte offsets.
pub fn words(s: &str) -> Vec<Word<'_>> {
    let mut out = Vec::with_capacity(s.len() / 5);
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let start = i;
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if d.is_alphanumeric() {
                end = j + d.len_utf8();
                chars.next();
            } else if d == '\'' || d == '\u{2019}' {
                // Keep an apostrophe only between two alphanumerics.
                let after = s[j + d.len_utf8()..].chars().next();
                if after.is_some_and(|a| a.is_alphanumeric()) {
                    chars.next();
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        out.push(Word {
            start,
            end,
            text: &s[start..end],
        });
    }
    out
}

/// Lowercased word key: ASCII folding, curly apostrophe made straight.
pub fn key(word: &str) -> String {
    let mut k = word.to_ascii_lowercase();
    if k.contains('\u{2019}') {
        k = k.replace('\u{2019}', "'");
    }
    k
}

/// A crude stem for matching inflections ("refunds", "refunded", "refunding" -> "refund").
pub fn stem(word: &str) -> &str {
    // A trailing "e" goes too, so "escalate" and "escalated" meet at "escalat".
    for suffix in ["ing", "ed", "es", "s", "e"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.len() >= 3
        {
            return base;
        }
    }
    word
}

/// Sentence ranges of `s` (byte offsets, trimmed of surrounding whitespace). A sentence ends at
/// `.`, `!` or `?` followed by whitespace or the end, or at a line break. A period between
/// digits ("11.0.3", "$9.99") or inside "i.e." does not end one.
pub fn sentences(s: &str) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let end_here = match b {
            b'\n' => Some(i),
            b'.' | b'!' | b'?' => {
                let next = bytes.get(i + 1).copied();
                let mut j = i + 1;
                // Absorb runs like "?!" or "..." and closing quotes/brackets.
                while j < bytes.len()
                    && matches!(bytes[j], b'.' | b'!' | b'?' | b'"' | b'\'' | b')')
                {
                    j += 1;
                }
                let at_break = j >= bytes.len() || bytes[j].is_ascii_whitespace();
                let abbreviation = b == b'.' && next.is_some_and(|n| n.is_ascii_alphanumeric());
                if at_break && !abbreviation && !(b == b'.' && is_abbreviation(&s[start..i])) {
                    Some(j)
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(end) = end_here {
            push_trimmed(s, start, end, &mut out);
            start = end;
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    push_trimmed(s, start, s.len(), &mut out);
    out
}

fn is_abbreviation(before: &str) -> bool {
    let last = before
        .rsplit(|c: char| !c.is_alphanumeric() && c != '.')
        .next()
        .unwrap_or("");
    // Not "etc." or "no.": those end sentences as often as not.
    matches!(
        last.to_ascii_lowercase().as_str(),
        "i.e" | "e.g" | "mr" | "mrs" | "ms" | "dr" | "vs"
    )
}

fn push_trimmed(s: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let (start, end) = snap(s, start, end);
    let piece = &s[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        out.push((start + lead, start + lead + trimmed.len()));
    }
}

/// Value of a number word ("two" -> 2), for matching "2 days" with "two days".
pub fn number_word(word: &str) -> Option<u32> {
    Some(match word {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        "hundred" => 100,
        "first" => 1,
        "second" => 2,
        "third" => 3,
        "fourth" => 4,
        "fifth" => 5,
        "tenth" => 10,
        "dozen" => 12,
        "half" => 0, // "half an hour": a fraction, treated as present but valueless
        _ => return None,
    })
}

/// Function words: everything else is content.
const FUNCTION_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "nor",
    "so",
    "yet",
    "if",
    "then",
    "than",
    "that",
    "this",
    "these",
    "those",
    "there",
    "here",
    "it",
    "its",
    "it's",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "am",
    "do",
    "does",
    "did",
    "done",
    "have",
    "has",
    "had",
    "having",
    "to",
    "of",
    "in",
    "on",
    "at",
    "by",
    "for",
    "with",
    "from",
    "into",
    "onto",
    "about",
    "as",
    "up",
    "down",
    "out",
    "off",
    "over",
    "under",
    "again",
    "further",
    "once",
    "also",
    "too",
    "very",
    "just",
    "not",
    "no",
    "can",
    "could",
    "will",
    "would",
    "shall",
    "should",
    "may",
    "might",
    "must",
    "he",
    "she",
    "they",
    "them",
    "their",
    "his",
    "her",
    "him",
    "hers",
    "we",
    "us",
    "our",
    "you",
    "your",
    "i",
    "me",
    "my",
    "who",
    "whom",
    "which",
    "what",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "some",
    "such",
    "other",
    "own",
    "same",
    "only",
    "more",
    "most",
    "because",
    "while",
    "after",
    "before",
    "during",
    "until",
    "through",
    "whose",
    "customer",
    "agent",
    "customers",
    "agents",
    "user",
    "users",
    "said",
    "says",
    "tells",
    "told",
    "asks",
    "asked",
    "ask",
    "informs",
    "informed",
];

/// Whether a lowercase key is a function word (everything else is content).
pub fn is_function_word(key: &str) -> bool {
    FUNCTION_WORDS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_never_panics_on_odd_offsets() {
        let s = "a😀b";
        for start in 0..8 {
            for end in 0..8 {
                let _ = slice(s, start, end);
            }
        }
        assert_eq!(slice(s, 2, 3), "😀");
        assert_eq!(slice("", 3, 9), "");
    }

    #[test]
    fn words_keep_inner_apostrophes_and_offsets() {
        let s = "Don't  refund the customer’s $25 'now'";
        let w: Vec<_> = words(s).iter().map(|w| w.text).collect();
        assert_eq!(w, ["Don't", "refund", "the", "customer’s", "25", "now"]);
        let ws = words(s);
        assert_eq!(&s[ws[3].start..ws[3].end], "customer’s");
        assert_eq!(key("Customer’s"), "customer's");
    }

    #[test]
    fn sentences_split_on_terminators_and_lines_but_not_decimals() {
        let s = "Customer paid $9.99 for iOS 11.0.3. Agent said no! Then?\n- bullet i.e. this";
        let parts: Vec<_> = sentences(s).into_iter().map(|(a, b)| &s[a..b]).collect();
        assert_eq!(
            parts,
            [
                "Customer paid $9.99 for iOS 11.0.3.",
                "Agent said no!",
                "Then?",
                "- bullet i.e. this"
            ]
        );
        assert!(sentences("   ").is_empty());
        assert_eq!(sentences("no end").len(), 1);
        assert_eq!(sentences("Mr. Smith said no. Then left etc. Done").len(), 3);
    }

    #[test]
    fn stems_and_number_words() {
        assert_eq!(stem("refunded"), "refund");
        assert_eq!(stem("refunds"), "refund");
        assert_eq!(stem("is"), "is");
        assert_eq!(stem("escalate"), stem("escalated"));
        assert_eq!(number_word("two"), Some(2));
        assert_eq!(number_word("twos"), None);
    }
}
