//! hallucinated_fact: every number, id, amount and date in the summary must be grounded in the
//! conversation.
//!
//! Normalization makes "$25" match "25 dollars", "2 days" match "two days", "1,200" match "1200"
//! and "14th" match "14". A bare number is not enough when the summary ties it to a unit or a
//! name: "Terminal 3" needs a 3 near "terminal" in the conversation, "48 hours" a 48 near an hour
//! word, otherwise any stray "3" in a long conversation would ground an invented terminal.
//!
//! Names without digits (brands, people) are deliberately not checked: Twitter handles were
//! stripped from the conversations, so brand names legitimately appear only in summaries, and a
//! rule cannot tell them from invented ones. That is left to the model-judged fact check.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;
use crate::text;

pub struct Grounding;

const NAME: &str = "grounding";

/// Tokens with at least one digit: numbers, amounts, ids ("A4417-923"), versions, times, dates.
static NUMERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9]*[0-9][A-Za-z0-9]*(?:[.,:/\-][A-Za-z0-9]+)*").unwrap()
});
static PLAIN_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$").unwrap());
static NUMBER_SUFFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d+(?:\.\d+)?)([a-z]+)$").unwrap());

/// One numeric mention in a text.
#[derive(Debug, Clone, PartialEq)]
struct Mention {
    start: usize,
    end: usize,
    /// Canonical values it can match: the number ("25", "149.99"), or for an id its alphanumeric
    /// form and its digits ("a4417923", "4417923").
    values: Vec<String>,
    /// True for a plain number (anchors apply); false for an id, version or time (self-anchored).
    plain: bool,
    /// A unit glued to the number ("48hrs", "10am").
    unit: Option<&'static str>,
}

/// Normalizes a plain number: no thousands separators, no leading zeros, no trailing ".00".
fn canonical_number(s: &str) -> String {
    let s: String = s.chars().filter(|c| *c != ',').collect();
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f.trim_end_matches('0')),
        None => (s.as_str(), ""),
    };
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

fn digits_only(s: &str) -> String {
    let d: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let t = d.trim_start_matches('0');
    if t.is_empty() && !d.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

fn mentions(text: &str) -> Vec<Mention> {
    let mut out = Vec::new();
    for m in NUMERIC.find_iter(text) {
        let before = text[..m.start()].chars().next_back();
        // Only whole tokens: "abc1" inside "xabc1" cannot happen (the regex is greedy on
        // alphanumerics), but "@18979" is a stripped handle and "/123" part of a URL.
        if matches!(before, Some('@' | '/' | '=' | '&')) {
            continue;
        }
        let tok = m.as_str().to_ascii_lowercase();
        let tok = tok.trim_end_matches(['.', ',', ':', '/', '-']);
        // A range of small numbers ("24-28", "87-99") is two numbers, not an id.
        if let Some((a, b)) = tok.split_once('-')
            && [a, b]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
        {
            let second = m.start() + a.len() + 1;
            out.push(Mention {
                start: m.start(),
                end: m.start() + a.len(),
                values: vec![canonical_number(a)],
                plain: true,
                unit: None,
            });
            out.push(Mention {
                start: second,
                end: second + b.len(),
                values: vec![canonical_number(b)],
                plain: true,
                unit: None,
            });
            continue;
        }
        let (values, plain, unit) = if PLAIN_NUMBER.is_match(tok) {
            (vec![canonical_number(tok)], true, None)
        } else if let Some(c) = NUMBER_SUFFIX.captures(tok) {
            let num = canonical_number(&c[1]);
            match &c[2] {
                "st" | "nd" | "rd" | "th" => (vec![num], true, None),
                "k" => {
                    let v = num
                        .parse::<f64>()
                        .map(|v| canonical_number(&format!("{}", v * 1000.0)))
                        .unwrap_or(num);
                    (vec![v], true, None)
                }
                suffix => match unit_of(suffix) {
                    // Digits only as well, so "4.30pm" grounds "4:30".
                    Some(u) => (vec![num, digits_only(&c[1])], true, Some(u)),
                    None => (
                        vec![
                            tok.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
                            digits_only(tok),
                        ],
                        false,
                        None,
                    ),
                },
            }
        } else {
            let mut values = vec![
                tok.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
                digits_only(tok),
            ];
            // Each digit group too, so "4:30pm" in the conversation grounds "4:30" and "30", and
            // each separated part, so "1-D3NB5VD" grounds "D3NB5VD".
            for g in tok
                .split(|c: char| !c.is_ascii_digit())
                .filter(|g| !g.is_empty())
            {
                values.push(canonical_number(g));
            }
            for part in tok
                .split(['-', '/', ':', '.', ','])
                .filter(|p| p.len() >= 2)
            {
                values.push(part.to_string());
            }
            (values, false, None)
        };
        out.push(Mention {
            start: m.start(),
            end: m.end(),
            values,
            plain,
            unit,
        });
    }
    out
}

/// Unit words, normalized: the anchor a number is tied to.
fn unit_of(word: &str) -> Option<&'static str> {
    Some(match word {
        "h" | "hr" | "hrs" | "hour" | "hours" => "hour",
        "min" | "mins" | "mns" | "minute" | "minutes" => "minute",
        "day" | "days" => "day",
        "wk" | "wks" | "week" | "weeks" => "week",
        "month" | "months" => "month",
        "yr" | "yrs" | "year" | "years" => "year",
        "dollar" | "dollars" | "usd" | "bucks" => "usd",
        "pound" | "pounds" | "gbp" | "quid" => "gbp",
        "euro" | "euros" | "eur" => "eur",
        "percent" | "pc" => "percent",
        "am" | "pm" => "clock",
        "gb" | "mb" | "tb" => "bytes",
        _ => return None,
    })
}

fn month_of(word: &str) -> Option<u8> {
    Some(match word {
        "jan" | "january" => 1,
        "feb" | "february" => 2,
        "mar" | "march" => 3,
        "apr" | "april" => 4,
        "may" => 5,
        "jun" | "june" => 6,
        "jul" | "july" => 7,
        "aug" | "august" => 8,
        "sep" | "sept" | "september" => 9,
        "oct" | "october" => 10,
        "nov" | "november" => 11,
        "dec" | "december" => 12,
        _ => return None,
    })
}

fn weekday_of(word: &str) -> Option<u8> {
    Some(match word {
        "mon" | "monday" => 1,
        "tue" | "tues" | "tuesday" => 2,
        "wed" | "wednesday" => 3,
        "thu" | "thur" | "thurs" | "thursday" => 4,
        "fri" | "friday" => 5,
        "sat" | "saturday" => 6,
        "sun" | "sunday" => 7,
        _ => return None,
    })
}

/// Nouns that name what a number identifies: "Terminal 3", "order 123", "season 7".
const ID_NOUNS: &[&str] = &[
    "terminal",
    "gate",
    "platform",
    "order",
    "ticket",
    "account",
    "case",
    "model",
    "version",
    "ios",
    "season",
    "episode",
    "room",
    "seat",
    "iphone",
    "galaxy",
    "pixel",
    "note",
    "flight",
    "bus",
    "route",
    "series",
    "xbox",
    "ps",
    "reference",
    "ref",
    "invoice",
    "booking",
];

/// Words that can follow an id without being counted by it ("Terminal 3 at", "iPhone 12 and").
const NOT_COUNTED: &[&str] = &[
    "at", "on", "in", "for", "and", "or", "to", "is", "was", "the", "which", "that", "from",
    "with", "by", "but", "as", "so", "has", "had", "will", "after", "before", "since", "until",
    "not", "pro", "plus", "max", "mini",
];

/// Words that sit between a number and its unit without changing it ("10 business days").
const UNIT_FILLERS: &[&str] = &[
    "business", "working", "calendar", "full", "more", "extra", "whole",
];

/// Normalized anchor for a word near a number in the conversation.
fn anchor_key(word: &str) -> Option<String> {
    let w = text::key(word);
    if let Some(u) = unit_of(&w) {
        return Some(u.to_string());
    }
    if let Some(m) = month_of(&w) {
        return Some(format!("month:{m}"));
    }
    Some(w)
}

/// The anchors a summary number is tied to: a unit after it, or an id noun, month or
/// capitalized name before it.
fn summary_anchors(cx: &Context<'_>, m: &Mention) -> (Vec<String>, usize, usize) {
    let mut anchors = Vec::new();
    let (mut start, mut end) = (m.start, m.end);
    if let Some(u) = m.unit {
        anchors.push(u.to_string());
    }
    let s = cx.summary;
    // The currency symbol is part of the span but not an anchor: writers swap "$" and "£"
    // loosely, and the amount is the fact that matters.
    if let Some(c) = s[..m.start].trim_end().chars().next_back()
        && currency_of(c).is_some()
    {
        start = s[..m.start].trim_end().len() - c.len_utf8();
    }
    let idx = cx.summary_words.partition_point(|w| w.start < m.end);
    // After: skip fillers, take a unit. A plain lowercase word after the number means the number
    // counts that word ("flight 200 customers"), so a name before it is not its anchor.
    let counts_next = cx.summary_words.get(idx).is_some_and(|w| {
        s[m.end..w.start].trim().is_empty()
            && w.text.chars().all(|c| c.is_ascii_lowercase())
            && !NOT_COUNTED.contains(&w.text)
    });
    let mut j = idx;
    while let Some(w) = cx.summary_words.get(j) {
        let k = text::key(w.text);
        if UNIT_FILLERS.contains(&k.as_str()) {
            j += 1;
            continue;
        }
        if let Some(u) = unit_of(&k) {
            // Currency words are not anchors either (see above).
            if !anchors.iter().any(|a| a == u) && !matches!(u, "usd" | "gbp" | "eur") {
                anchors.push(u.to_string());
            }
            end = w.end;
        } else if k == "%" {
            anchors.push("percent".into());
        }
        break;
    }
    // Before: an id noun, a month, or a capitalized name that is not the sentence's first word.
    let first = cx.summary_words.partition_point(|w| w.end <= m.start);
    if first > 0 && !counts_next {
        let w = cx.summary_words[first - 1];
        let gap = &s[w.end..m.start];
        if gap.chars().all(|c| c == ' ' || c == '#' || c == '-') && gap.len() <= 3 {
            let k = text::key(w.text);
            let sentence_start = s[..w.start]
                .trim_end()
                .chars()
                .next_back()
                .is_none_or(|c| matches!(c, '.' | '!' | '?' | ':'));
            let capitalized = w.text.chars().any(|c| c.is_ascii_uppercase()) && !sentence_start;
            if let Some(mo) = month_of(&k).filter(|_| k != "may" || capitalized) {
                anchors.push(format!("month:{mo}"));
                start = w.start;
            } else if ID_NOUNS.contains(&k.as_str())
                || (capitalized && !matches!(k.as_str(), "customer" | "agent" | "dm" | "i"))
            {
                anchors.push(k);
                start = w.start;
            }
        }
    }
    (anchors, start, end)
}

fn currency_of(c: char) -> Option<&'static str> {
    match c {
        '$' => Some("usd"),
        '£' => Some("gbp"),
        '€' => Some("eur"),
        _ => None,
    }
}

const MAX_OCCURRENCES: usize = 64;

/// Numeric mentions in the conversation, per turn, plus number words ("two", "first").
struct ConvNumbers<'a> {
    turns: Vec<(usize, &'a str, Mention)>,
    values: HashSet<String>,
}

impl<'a> ConvNumbers<'a> {
    fn new(cx: &Context<'a>) -> ConvNumbers<'a> {
        let mut turns = Vec::new();
        let mut values = HashSet::new();
        for (i, t) in cx.turns.iter().enumerate() {
            for m in mentions(&t.text) {
                values.extend(m.values.iter().cloned());
                turns.push((i, t.text.as_str(), m));
            }
        }
        for w in &cx.conversation().words {
            if let Some(v) = text::number_word(&w.key) {
                let v = v.to_string();
                values.insert(v.clone());
                let text = cx.turns[w.turn].text.as_str();
                turns.push((
                    w.turn,
                    text,
                    Mention {
                        start: w.word.start,
                        end: w.word.end,
                        values: vec![v],
                        plain: true,
                        unit: None,
                    },
                ));
            }
        }
        ConvNumbers { turns, values }
    }

    /// Whether some occurrence of `value` has every anchor within a few words of it. Looks at
    /// the first MAX_OCCURRENCES occurrences only, so a hostile input (one number repeated ten
    /// thousand times) costs bounded time.
    fn anchored(&self, value: &str, anchors: &[String]) -> bool {
        self.turns
            .iter()
            .filter(|(_, _, m)| m.values.iter().any(|v| v == value))
            .take(MAX_OCCURRENCES)
            .any(|(_, text, m)| {
                let (a, b) = text::snap(text, m.start.saturating_sub(40), m.end + 40);
                let window = &text[a..b];
                let mut near: HashSet<String> = HashSet::new();
                for w in text::words(window) {
                    near.extend(anchor_key(w.text));
                    // "xbox360" anchors "xbox 360", "48hrs" anchors "48 hours".
                    let alpha: String = w
                        .text
                        .chars()
                        .take_while(|c| c.is_ascii_alphabetic())
                        .collect();
                    let tail: String = w
                        .text
                        .chars()
                        .skip_while(|c| !c.is_ascii_alphabetic())
                        .skip_while(|c| c.is_ascii_digit())
                        .collect();
                    for part in [
                        alpha,
                        tail.trim_start_matches(|c: char| c.is_ascii_digit())
                            .to_string(),
                    ] {
                        if part.len() >= 2 && part.len() < w.text.len() {
                            near.extend(anchor_key(&part));
                        }
                    }
                }
                if let Some(u) = m.unit {
                    near.insert(u.to_string());
                }
                if window.contains('%') {
                    near.insert("percent".into());
                }
                anchors.iter().all(|a| {
                    near.contains(a) || near.iter().any(|n| text::stem(n) == text::stem(a))
                })
            })
    }
}

impl Detector for Grounding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::HallucinatedFact]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let summary_mentions = mentions(cx.summary);
        let numbers = if summary_mentions.is_empty() && !has_date_word(cx) {
            return;
        } else {
            ConvNumbers::new(cx)
        };
        // The same number with the same anchors is checked once ("Terminal 3 ... Terminal 3").
        let mut checked: HashSet<(String, Vec<String>)> = HashSet::new();
        for m in &summary_mentions {
            let value = &m.values[0];
            // "1" and "0" carry too little: "1 hour" is often "an hour" in the conversation.
            if m.plain && (value == "1" || value == "0") {
                continue;
            }
            let found = if m.plain {
                numbers.values.contains(value)
            } else {
                numbers.values.contains(&m.values[0]) || numbers.values.contains(&m.values[1])
            };
            if !found {
                let (_, start, end) = summary_anchors(cx, m);
                unsupported(out, TextSpan::of(cx.summary, start, end), 0.9, |text| {
                    format!("`{text}` does not appear anywhere in the conversation")
                });
                continue;
            }
            if !m.plain {
                continue;
            }
            let (anchors, start, end) = summary_anchors(cx, m);
            if anchors.is_empty()
                || !checked.insert((value.clone(), anchors.clone()))
                || numbers.anchored(value, &anchors)
            {
                continue;
            }
            unsupported(out, TextSpan::of(cx.summary, start, end), 0.7, |text| {
                format!("the conversation mentions {value}, but never as `{text}`")
            });
        }
        dates(cx, out);
    }
}

fn has_date_word(cx: &Context<'_>) -> bool {
    cx.summary_words.iter().any(|w| is_date_word(w.text))
}

/// A capitalized month or weekday name ("May" only when it cannot be the verb).
fn is_date_word(word: &str) -> bool {
    if !word.starts_with(|c: char| c.is_ascii_uppercase()) {
        return false;
    }
    let k = text::key(word);
    (month_of(&k).is_some() && k.len() > 3 && k != "may")
        || (weekday_of(&k).is_some() && k.len() > 3)
}

/// Months and weekdays the conversation never mentions.
fn dates(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for w in cx.summary_words.iter().filter(|w| is_date_word(w.text)) {
        // Already reported as part of a date with a number ("April 14").
        if out.iter().any(|f| {
            f.detector == NAME && f.summary_span.start <= w.start && w.end <= f.summary_span.end
        }) {
            continue;
        }
        let k = text::key(w.text);
        let conv = cx.conversation();
        let grounded = conv
            .words
            .iter()
            .any(|c| match (month_of(&k), weekday_of(&k)) {
                (Some(m), _) => month_of(&c.key) == Some(m),
                (_, Some(d)) => weekday_of(&c.key) == Some(d),
                _ => true,
            });
        if !grounded {
            let span = TextSpan::of(cx.summary, w.start, w.end);
            let explanation = format!("the conversation never mentions `{}`", span.text);
            out.push(Finding::new(
                CategoryId::HallucinatedFact,
                NAME,
                span,
                Evidence::NotFound,
                0.8,
                explanation,
            ));
        }
    }
}

/// A number or amount of the summary that the conversation does not support: a hallucinated
/// fact, explained by `why` from the span's text.
fn unsupported(
    out: &mut Vec<Finding>,
    span: TextSpan,
    confidence: f32,
    why: impl FnOnce(&str) -> String,
) {
    let explanation = why(&span.text);
    out.push(Finding::new(
        CategoryId::HallucinatedFact,
        NAME,
        span,
        Evidence::NotFound,
        confidence,
        explanation,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conv: &[(&str, &str)], summary: &str) -> Vec<String> {
        crate::detectors::testing::flagged_spans(&Grounding, conv, summary)
    }

    #[test]
    fn normalizes_amounts_durations_and_number_words() {
        let conv = [
            (
                "c",
                "I was charged 25 dollars and waited two days for 1,200 points",
            ),
            ("a", "Sorry! It takes 48hrs"),
        ];
        assert!(
            run(
                &conv,
                "Customer was charged $25 after 2 days for 1200 points. Agent said 48 hours."
            )
            .is_empty()
        );
        assert_eq!(run(&conv, "Customer was charged $35."), ["$35"]);
        assert_eq!(run(&conv, "Agent said 2 hours."), ["2 hours"]);
    }

    #[test]
    fn ids_and_names_tied_to_numbers_need_their_anchor() {
        let conv = [
            (
                "c",
                "My flight leaves from gate 3 at 4:30pm, order A4417-923",
            ),
            ("a", "See you at 4:30"),
        ];
        assert!(
            run(
                &conv,
                "Customer's order #A4417-923 leaves from gate 3 at 4:30."
            )
            .is_empty()
        );
        assert_eq!(run(&conv, "Customer is at Terminal 3."), ["Terminal 3"]);
        assert_eq!(
            run(&conv, "Regarding order #B5521-0093."),
            ["order #B5521-0093"]
        );
        assert_eq!(run(&conv, "Customer's flight is at gate 17."), ["gate 17"]);
        // A number that counts the next word is not tied to the name before it.
        assert!(run(&conv, "The order 3 items were late.").is_empty());
        let conv = [(
            "c",
            "my xbox360 fails, issue 1-D3NB5VD, waited 20 mns, 87-99%",
        )];
        assert!(
            run(
                &conv,
                "Customer's xbox 360 fails (D3NB5VD) after 20 minutes at 99 percent."
            )
            .is_empty()
        );
    }

    #[test]
    fn dates_must_be_mentioned() {
        let conv = [
            ("c", "It arrived on the 14th of March"),
            ("a", "We'll call you Friday"),
        ];
        assert!(run(&conv, "Order arrived March 14. Agent will call on Friday.").is_empty());
        assert_eq!(run(&conv, "Agent will call on Monday."), ["Monday"]);
        assert_eq!(run(&conv, "It arrived April 14."), ["April 14"]);
        assert!(run(&conv, "Customer may call again.").is_empty());
    }

    #[test]
    fn canonical_numbers() {
        assert_eq!(canonical_number("1,200.00"), "1200");
        assert_eq!(canonical_number("007"), "7");
        assert_eq!(canonical_number("149.90"), "149.9");
        assert_eq!(canonical_number("0"), "0");
    }
}
