//! Targeted span edits: for findings that point at a part of the summary, the editor is asked
//! only for that part's replacement (empty deletes it), with a short context, and the
//! replacements are spliced into the summary. A small editor can replace eight words; asked to
//! rewrite a whole summary in JSON to change them, it mostly rewrites something else.
//!
//! A summary with any finding that points at no span (an omission: what is missing has no
//! place) keeps the whole-summary rewrite of `prompt.rs`.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Value, json};

pub use arf_common::splice::splice;

use super::output::parse_json;
use super::{Evidence, RevisionFinding, RevisionInput, Speaker};
use crate::error::EditorError;
use crate::generation::{ChatMessage, ChatRole};

pub const SPAN_SYSTEM_PROMPT: &str = "You fix one flagged part of a summary of a customer-service conversation. \
The flagged part is marked [[like this]] in the summary. Write only the text that replaces the marked part; \
the rest of the summary stays exactly as it is. An empty replacement deletes the part. \
State only what the conversation says. Answer with JSON only: {\"replacement\": \"<text>\"}.";

/// Longer conversations show the editor only the turns that matter.
const ALL_TURNS_UP_TO: usize = 4;
/// A context turn is cut to this many characters.
const MAX_TURN_CHARS: usize = 400;

/// One part of the summary to replace, and the findings against it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEdit {
    pub range: Range<usize>,
    pub findings: Vec<usize>,
    /// The replacement, when no model writes it: personal data becomes its typed placeholder
    /// (the detector's rule fix) or is deleted, never model text.
    pub fixed: Option<String>,
}

/// Personal data: fixed by rule, never by the model.
const PII: &str = "pii_exposure";
/// A swapped party: fixed by its detector's swap where it has one.
const SPEAKER: &str = "speaker_attribution";

/// The replacement of a finding whose fix is determined, so the model could only get it wrong:
/// personal data becomes its typed placeholder (or is deleted), and a swapped party is swapped
/// back (a small editor asked to replace `[[Customer]]` mostly writes "Customer" again, and of
/// a summary whose parties were all swapped it mended the first and left the rest).
fn fixed_by_rule(f: &RevisionFinding) -> Option<String> {
    match f.category_id.as_str() {
        PII => Some(f.rule_fix.clone().unwrap_or_default()),
        SPEAKER => f.rule_fix.clone(),
        _ => None,
    }
}

/// The span edits for `input`, overlapping spans merged; `None` when some finding has no span
/// or the edits, once widened to their sentences, leave no word of the summary untouched (an
/// omission, or a summary of one flagged sentence): the whole summary is rewritten instead,
/// whose output is checked as a whole, where span edits that all came back empty would
/// delete it. A PII span is its own edit, with its placeholder; a model edit that would
/// overlap it is left out. A swapped party is its own edit, swapped back, where no other
/// finding's span (which the model rewrites) overlaps it.
pub fn plan(input: &RevisionInput) -> Option<Vec<SpanEdit>> {
    let s = &input.summary;
    let (first, last) = (s.len() - s.trim_start().len(), s.trim_end().len());
    let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    let rewritten_by_model = |i: usize, span: &Range<usize>| {
        input.findings.iter().enumerate().any(|(j, g)| {
            j != i
                && fixed_by_rule(g).is_none()
                && g.span.as_ref().is_some_and(|r| overlaps(r, span))
        })
    };
    let mut fixed: Vec<SpanEdit> = Vec::new();
    let mut spans: Vec<(Range<usize>, usize)> = Vec::with_capacity(input.findings.len());
    for (i, f) in input.findings.iter().enumerate() {
        let span = f.span.clone()?;
        if let Some(text) = fixed_by_rule(f)
            && (f.category_id == PII || !rewritten_by_model(i, &span))
        {
            fixed.push(SpanEdit {
                range: span,
                findings: vec![i],
                fixed: Some(text),
            });
            continue;
        }
        if span.start <= first && span.end >= last {
            return None;
        }
        spans.push((widen_to_sentence(s, span), i));
    }
    spans.sort_by_key(|(r, _)| (r.start, r.end));
    let mut edits: Vec<SpanEdit> = Vec::new();
    for (range, i) in spans {
        match edits.last_mut() {
            Some(last) if range.start < last.range.end => {
                last.range.end = last.range.end.max(range.end);
                last.findings.push(i);
            }
            _ => edits.push(SpanEdit {
                range,
                findings: vec![i],
                fixed: None,
            }),
        }
    }
    edits.retain(|e| !fixed.iter().any(|f| overlaps(&e.range, &f.range)));
    fixed.sort_by_key(|e| (e.range.start, e.range.end));
    fixed.dedup_by(|b, a| overlaps(&a.range, &b.range));
    edits.extend(fixed);
    edits.sort_by_key(|e| e.range.start);
    let untouched = s
        .char_indices()
        .any(|(i, c)| c.is_alphanumeric() && !edits.iter().any(|e| e.range.contains(&i)));
    untouched.then_some(edits)
}

/// A span that leaves at most two words of its sentence (`[[booked a visit]]` in "Agent booked
/// a visit.") becomes the whole sentence: deleting it would leave a stub ("Agent.").
fn widen_to_sentence(s: &str, span: Range<usize>) -> Range<usize> {
    let is_end = |c: char| matches!(c, '.' | '!' | '?' | '\n');
    let start = s[..span.start].rfind(is_end).map_or(0, |i| i + 1);
    let end = s[span.end..]
        .find(is_end)
        .map_or(s.len(), |i| span.end + i + 1);
    let outside = s[start..span.start].split_whitespace().count()
        + s[span.end..end.max(span.end)]
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
    if outside > 2 {
        return span;
    }
    // The sentence, without the space before it.
    let start = start + (s[start..].len() - s[start..].trim_start().len());
    start.min(span.start)..end.max(span.end)
}

/// The prompt for one span: the turns that matter, the summary with the span marked, what is
/// wrong with it, how that kind of problem is fixed, and a short worked example.
pub fn span_messages(input: &RevisionInput, edit: &SpanEdit) -> Vec<ChatMessage> {
    let mut user = String::from("Conversation turns:\n");
    for i in context_turns(input, edit) {
        let turn = &input.turns[i];
        let text = cut(turn.text.trim(), MAX_TURN_CHARS);
        let _ = writeln!(user, "[{i}] {}: {text}", turn.speaker.label());
    }
    let s = &input.summary;
    let _ = writeln!(
        user,
        "\nSummary: {}[[{}]]{}\n",
        &s[..edit.range.start],
        &s[edit.range.clone()],
        &s[edit.range.end..]
    );
    let mut categories: Vec<&str> = Vec::new();
    for &i in &edit.findings {
        let f = &input.findings[i];
        let _ = write!(user, "Problem: {}", f.category_id.replace('_', " "));
        if !f.explanation.trim().is_empty() {
            let _ = write!(user, ": {}", f.explanation.trim());
        }
        match &f.evidence {
            Evidence::NoneFound => user.push_str(" (the conversation does not say it)"),
            Evidence::Turn {
                index,
                quote: Some(q),
            } => {
                let _ = write!(
                    user,
                    " (turn [{index}] says \"{}\")",
                    cut(q, MAX_TURN_CHARS)
                );
            }
            Evidence::Turn { index, quote: None } => {
                let _ = write!(user, " (see turn [{index}])");
            }
            Evidence::Unspecified => {}
        }
        user.push('\n');
        if !categories.contains(&f.category_id.as_str()) {
            categories.push(&f.category_id);
        }
    }
    for category in categories {
        let _ = writeln!(user, "Fix: {}", fix_for(category, input));
        if let Some(example) = example_for(category) {
            let _ = writeln!(user, "Example: {example}");
        }
    }
    user.push_str("\nWrite the replacement for the marked part as JSON.");
    vec![
        ChatMessage::new(ChatRole::System, SPAN_SYSTEM_PROMPT),
        ChatMessage::new(ChatRole::User, user),
    ]
}

/// Every turn of a short conversation; of a long one, the evidence turns and the customer's
/// first turn (what the conversation is about), in order.
fn context_turns(input: &RevisionInput, edit: &SpanEdit) -> Vec<usize> {
    let n = input.turns.len();
    if n <= ALL_TURNS_UP_TO {
        return (0..n).collect();
    }
    let mut turns: Vec<usize> = edit
        .findings
        .iter()
        .filter_map(|&i| match input.findings[i].evidence {
            Evidence::Turn { index, .. } if index < n => Some(index),
            _ => None,
        })
        .collect();
    if let Some(first) = input
        .turns
        .iter()
        .position(|t| t.speaker == Speaker::Customer)
    {
        turns.push(first);
    }
    if turns.len() < 2
        && let Some(agent) = input.turns.iter().position(|t| t.speaker == Speaker::Agent)
    {
        turns.push(agent); // the company's answer, when no evidence turn shows it
    }
    turns.sort_unstable();
    turns.dedup();
    turns
}

/// What to do with the marked part: the taxonomy's instruction, led by the concrete edit.
fn fix_for(category: &str, input: &RevisionInput) -> String {
    let lead = match category {
        "hallucinated_fact" | "unsupported_action" => {
            "Delete it (empty replacement), or replace it with what the conversation says."
        }
        "pii_exposure" => "Delete it (empty replacement); the rest of the sentence stays.",
        "speaker_attribution" => "Give the words or deed back to the party who said or did it.",
        "polarity" => "Make it say what the conversation says.",
        "repetition" => "Delete the repeat (empty replacement).",
        "format_violation" => {
            "Replace it with one plain third-person sentence, without speaker labels."
        }
        "truncation" => {
            "Finish the sentence with the words the conversation uses, and a full stop."
        }
        "wrong_language" => "Write it in English.",
        _ => "Correct it so that it agrees with the conversation.",
    };
    match input.instructions.get(category) {
        Some(rule) if !rule.trim().is_empty() => format!("{lead} {}", rule.trim()),
        _ => lead.to_string(),
    }
}

/// One short worked example per category: what the marked part was and what replaced it.
/// Small editors copy an example's replacement word for word, so every example's answer is
/// one that does no harm when copied: an empty deletion, or a party's name.
fn example_for(category: &str) -> Option<&'static str> {
    Some(match category {
        "hallucinated_fact" => {
            "\"The agent sent a code [[to 555-0199]].\" when the conversation has no such number -> {\"replacement\": \"\"}"
        }
        "unsupported_action" => {
            "\"The agent asked for the order number. [[The agent issued a refund.]]\" when no refund was given -> {\"replacement\": \"\"}"
        }
        "pii_exposure" => {
            "\"The customer gave their email [[jane@example.com]].\" -> {\"replacement\": \"\"}"
        }
        "speaker_attribution" => {
            "\"[[Agent]] is upset that the app crashes.\" when the customer is upset -> {\"replacement\": \"Customer\"}"
        }
        "repetition" => "\"The order is late. [[The order is late.]]\" -> {\"replacement\": \"\"}",
        _ => return None,
    })
}

/// The schema of a replacement: one string, possibly empty (a deletion), at most `max_chars`.
pub fn replacement_schema(max_chars: usize) -> Value {
    json!({
        "x-guidance": {"whitespace_flexible": false},
        "type": "object",
        "properties": {"replacement": {"type": "string", "maxLength": max_chars}},
        "required": ["replacement"],
        "additionalProperties": false
    })
}

/// How long a replacement may be: room to say a clause properly, not to ramble.
pub fn max_replacement_chars(span_chars: usize) -> usize {
    (span_chars * 2).clamp(120, 600)
}

/// The replacement in the model's output.
pub fn parse_replacement(output: &str, finish_reason: &str) -> Result<String, EditorError> {
    #[derive(serde::Deserialize)]
    struct Replacement {
        replacement: String,
    }
    let r: Replacement = parse_json(output, finish_reason, "the span replacement")?;
    Ok(r.replacement.trim().to_string())
}

fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::revise::{RevisionFinding, Turn};

    fn finding(category: &str, span: Option<Range<usize>>) -> RevisionFinding {
        RevisionFinding {
            category_id: category.into(),
            severity: "high",
            summary_excerpt: None,
            span,
            evidence: Evidence::NoneFound,
            explanation: String::new(),
            rule_fix: None,
        }
    }

    fn input(summary: &str, findings: Vec<RevisionFinding>, turns: usize) -> RevisionInput {
        RevisionInput {
            channel: String::new(),
            turns: (0..turns)
                .map(|i| Turn {
                    speaker: if i % 2 == 0 {
                        Speaker::Customer
                    } else {
                        Speaker::Agent
                    },
                    text: format!("turn number {i}"),
                })
                .collect(),
            summary: summary.into(),
            findings,
            instructions: BTreeMap::new(),
        }
    }

    #[test]
    fn splices_at_the_ends_and_in_the_middle() {
        let s = "The card is blocked. The agent sent 555-0199 a code. The customer thanked them.";
        // Start: a deleted first sentence leaves a capitalized second one.
        assert_eq!(
            splice(s, &[(0..21, String::new())]),
            "The agent sent 555-0199 a code. The customer thanked them."
        );
        // Middle: a deletion leaves no doubled space.
        assert_eq!(
            splice(s, &[(36..45, String::new())]),
            "The card is blocked. The agent sent a code. The customer thanked them."
        );
        // End: the last sentence replaced, and a deletion there leaves no dangling space.
        let last = s.find("The customer").unwrap();
        assert_eq!(
            splice(s, &[(last..s.len(), "They were grateful.".into())]),
            "The card is blocked. The agent sent 555-0199 a code. They were grateful."
        );
        assert_eq!(
            splice(s, &[(last - 1..s.len(), String::new())]),
            "The card is blocked. The agent sent 555-0199 a code."
        );
        // Two at once, given in any order.
        assert_eq!(
            splice(s, &[(36..45, String::new()), (4..8, "account".into())]),
            "The account is blocked. The agent sent a code. The customer thanked them."
        );
    }

    #[test]
    fn a_deleted_clause_leaves_no_doubled_punctuation() {
        assert_eq!(
            splice(
                "It broke, sadly, . Then it worked.",
                &[(9..16, String::new())]
            ),
            "It broke. Then it worked."
        );
        assert_eq!(
            splice(
                "It works. The rest is fine, e.g. that.",
                &[(3..8, "did".into())]
            ),
            "It did. The rest is fine, e.g. that.",
            "text away from a seam stays as it was"
        );
    }

    #[test]
    fn overlapping_findings_become_one_edit_and_a_spanless_one_means_a_rewrite() {
        let s = "The agent refunded 40 dollars to Jane Smith today.";
        let i = input(
            s,
            vec![
                finding("speaker_attribution", Some(33..43)),
                finding("hallucinated_fact", Some(19..29)),
                finding("unsupported_action", Some(4..29)),
            ],
            2,
        );
        let edits = plan(&i).unwrap();
        assert_eq!(
            edits,
            [
                SpanEdit {
                    range: 4..29,
                    findings: vec![2, 1],
                    fixed: None,
                },
                SpanEdit {
                    range: 33..43,
                    findings: vec![0],
                    fixed: None,
                }
            ]
        );
        let mut spanless = i.clone();
        spanless.findings.push(finding("omission", None));
        assert_eq!(plan(&spanless), None);
        let mut whole = i.clone();
        whole.findings.push(finding("omission", Some(0..s.len())));
        assert_eq!(
            plan(&whole),
            None,
            "a finding on the whole summary means a rewrite"
        );
    }

    /// Issue 34: personal data is fixed by its placeholder or deleted, never by model text, and
    /// a model edit that would rewrite it is left out.
    #[test]
    fn personal_data_gets_its_placeholder_and_no_model_edit() {
        let s = "The customer gave 555-0199 as contact and was refunded.";
        let phone = s.find("555").unwrap()..s.find(" as").unwrap();
        let mut pii = finding("pii_exposure", Some(phone.clone()));
        pii.rule_fix = Some("[phone number]".into());
        let clause = finding(
            "hallucinated_fact",
            Some(s.find("gave").unwrap()..s.find(" and").unwrap()),
        );
        let refunded = finding(
            "unsupported_action",
            Some(s.find("was").unwrap()..s.len() - 1),
        );
        let edits = plan(&input(s, vec![pii.clone(), clause, refunded], 2)).unwrap();
        assert_eq!(edits.len(), 2, "{edits:?}");
        assert_eq!(edits[0].range, phone);
        assert_eq!(edits[0].fixed.as_deref(), Some("[phone number]"));
        assert_eq!(edits[1].fixed, None);
        pii.rule_fix = None;
        let edits = plan(&input(s, vec![pii], 2)).unwrap();
        assert_eq!(
            edits[0].fixed.as_deref(),
            Some(""),
            "no placeholder: deleted"
        );
    }

    /// Of a summary whose parties were all swapped, SmolLM2 mended the first and wrote the
    /// second party word back as it was: a swap the detector determines is spliced by rule,
    /// unless a model edit rewrites the same words.
    #[test]
    fn a_swapped_party_is_swapped_back_by_rule_unless_the_model_rewrites_it() {
        let s = "Agent is eager to know the policy. Customer stated that it applies.";
        let mut opening = finding("speaker_attribution", Some(0..5));
        opening.rule_fix = Some("Customer".into());
        let second = s.find("Customer").unwrap();
        let mut clause = finding("speaker_attribution", Some(second..second + 8));
        clause.rule_fix = Some("Agent".into());
        let edits = plan(&input(s, vec![opening.clone(), clause.clone()], 2)).unwrap();
        assert_eq!(edits.len(), 2, "{edits:?}");
        assert_eq!(edits[0].fixed.as_deref(), Some("Customer"));
        assert_eq!(edits[1].fixed.as_deref(), Some("Agent"));
        // An invented clause over the same words: the model rewrites them, the rule stays out.
        let invented = finding("hallucinated_fact", Some(second..s.len() - 1));
        let edits = plan(&input(s, vec![opening, clause.clone(), invented], 2)).unwrap();
        assert_eq!(edits.len(), 2, "{edits:?}");
        assert_eq!(edits[0].fixed.as_deref(), Some("Customer"));
        assert_eq!(edits[1].fixed, None);
        // Without the detector's swap, the model is asked.
        clause.rule_fix = None;
        assert_eq!(plan(&input(s, vec![clause], 2)).unwrap()[0].fixed, None);
    }

    #[test]
    fn the_prompt_marks_the_span_and_shows_only_the_turns_that_matter() {
        let s = "The customer asked. The agent refunded 40 dollars.";
        let mut f = finding("unsupported_action", Some(20..50));
        f.evidence = Evidence::Turn {
            index: 5,
            quote: None,
        };
        let i = input(s, vec![f], 8);
        let edits = plan(&i).unwrap();
        let user = &span_messages(&i, &edits[0])[1].content;
        assert!(
            user.contains("Summary: The customer asked. [[The agent refunded 40 dollars.]]"),
            "{user}"
        );
        assert!(user.contains("[0] Customer: turn number 0"), "{user}");
        assert!(user.contains("[5] Agent: turn number 5"), "{user}");
        assert!(
            !user.contains("[3]"),
            "a long conversation shows only what matters: {user}"
        );
        assert!(user.contains("Delete it"), "{user}");
        assert!(user.contains("Example:"), "{user}");
    }

    /// Issue 34: a teacher summary of one sentence, cut short, flagged from its third word
    /// on: widened to its sentence, the edit would be the whole summary, and a model that
    /// answers with an empty replacement would delete it. It is a rewrite instead.
    #[test]
    fn edits_that_would_cover_every_word_are_a_rewrite() {
        let s = "The customer asks about a refund for the order and the agent";
        let tail = s.find("asks").unwrap()..s.len();
        assert_eq!(
            plan(&input(s, vec![finding("truncation", Some(tail))], 2)),
            None
        );
        // Flagged in its middle, the rest of the sentence stays: a span edit.
        let middle = s.find("refund").unwrap()..s.find(" for").unwrap();
        assert!(plan(&input(s, vec![finding("truncation", Some(middle))], 2)).is_some());
        // Two sentences, both flagged: every word is in an edit.
        let s = "Customer asks. Agent booked a visit.";
        let both = vec![
            finding("omission", Some(0..8)),
            finding(
                "unsupported_action",
                Some(s.find("booked").unwrap()..s.len() - 1),
            ),
        ];
        assert_eq!(plan(&input(s, both, 2)), None);
        // One of them: the other sentence stays, so span edits.
        let one = vec![finding(
            "unsupported_action",
            Some(s.find("booked").unwrap()..s.len() - 1),
        )];
        assert!(plan(&input(s, one, 2)).is_some());
    }

    #[test]
    fn a_span_that_leaves_a_stub_of_its_sentence_takes_the_sentence() {
        let s = "Customer asks. Agent booked a visit for Friday. Done.";
        let visit = s.find("booked").unwrap()..s.find(" for").unwrap() + 11;
        let widened = widen_to_sentence(s, visit);
        assert_eq!(&s[widened.clone()], "Agent booked a visit for Friday.");
        assert_eq!(
            splice(s, &[(widened, String::new())]),
            "Customer asks. Done."
        );
        let number = s.find("Friday").unwrap()..s.find("Friday").unwrap() + 6;
        assert_eq!(
            widen_to_sentence(s, number.clone()),
            number,
            "most of the sentence stays"
        );
    }

    #[test]
    fn parses_a_replacement_and_allows_an_empty_one() {
        assert_eq!(
            parse_replacement(r#"{"replacement":""}"#, "stop").unwrap(),
            ""
        );
        assert_eq!(
            parse_replacement(r#"{"replacement":" the customer "}"#, "stop").unwrap(),
            "the customer"
        );
        assert!(parse_replacement(r#"{"replacement":"cut"#, "length").is_err());
    }
}
