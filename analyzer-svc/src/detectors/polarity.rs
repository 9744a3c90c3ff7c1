//! polarity: the summary says the opposite of the conversation (a dropped or added negation).
//!
//! Three honest rule-level signals, each checked against the conversation:
//! - "will not" in the summary when nobody in the conversation says "will not", "won't" or
//!   "never": support agents promise, and a refusal the conversation never voiced is a flip;
//! - "able to" where the grammar shows a dropped "un" ("an issue with able to", "it's able to")
//!   and the conversation never says "able to";
//! - a negative-polarity item ("at all", "anymore", "any longer") with no negation before it in
//!   its clause: the negation was dropped ("his phone was at all charging");
//! - the agent refusing, declining or ignoring ("the agent refused to help and closed the
//!   ticket") when no agent turn refuses or declines anything: the outcome is turned around
//!   (a model's own summaries do this; the agent had sent a replacement).
//!
//! Paraphrased contradictions (wrong status, wrong outcome) need the model-judged fact check.

use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector, is_agent_role};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Polarity;

const NAME: &str = "polarity";

static WILL_NOT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bwill\s+not\b(?:\s+\w+){0,2}").unwrap());
static CONV_REFUSAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:will\s+not|won'?t|wont|will\s+never|not\s+going\s+to|can'?t|cannot|unable)\b",
    )
    .unwrap()
});
/// The company's side refusing, declining, ignoring or not helping, in the summary.
static AGENT_REFUSED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:agent|agents|representative|rep|support|company|staff|team)\b[^.;!?]{0,40}?\b(?:refus\w*|declin\w*|ignor\w*|den(?:y|ied|ies)|(?:did|does|do|would|could)\s*(?:n[o']t|not)\s+help\w*|won'?t\s+help|(?:was|were)\s+(?:not|n't)\s+helpful|unhelpful|hung\s+up|closed\s+the\s+(?:ticket|case|chat|conversation))",
    )
    .unwrap()
});
/// An agent turn that refuses or declines: what makes "the agent refused" supported.
static AGENT_TURN_REFUSAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:will\s+not|won'?t|wont|not\s+going\s+to|can'?t|cannot|can\s+not|unable|not\s+able|unfortunately|refus\w*|declin\w*|den(?:y|ied)|not\s+possible|not\s+eligible|no\s+longer|don'?t|do\s+not|doesn'?t|isn'?t|aren'?t|wouldn'?t|couldn'?t|not\s+allowed|policy)\b",
    )
    .unwrap()
});
static BARE_ABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:with|about|of|for|its|it's|is|are|was|were)\s+able\s+to\b").unwrap()
});
static CONV_ABLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\bable\s+to\b").unwrap());
static NPI: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(?:at all|any longer|anymore)\b").unwrap());
static NEGATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:not|no|never|nothing|none|nobody|cannot|without|unable|neither|nor|hardly|barely|\w+n't|\w+nt|cant|wont|dont|doesnt|didnt|isnt|wasnt)\b|[?]")
        .unwrap()
});

impl Detector for Polarity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::Polarity]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let s = cx.summary;
        // Whether any turn (or any agent turn) matches, curly apostrophes read as straight ones.
        let says = |re: &Regex, agents_only: bool| {
            cx.turns.iter().any(|t| {
                (!agents_only || is_agent_role(t.role))
                    && re.is_match(&t.text.replace('\u{2019}', "'"))
            })
        };
        let mut flip = |start: usize, end: usize, confidence: f32, why: String| {
            out.push(Finding::new(
                CategoryId::Polarity,
                NAME,
                TextSpan::of(s, start, end),
                Evidence::NotFound,
                confidence,
                why,
            ))
        };
        if let Some(m) = WILL_NOT.find(s)
            && !says(&CONV_REFUSAL, false)
        {
            let why = format!(
                "the summary says `{}`, but no one in the conversation refuses or says will not",
                m.as_str()
            );
            flip(m.start(), m.end(), 0.7, why);
        }
        if let Some(m) = BARE_ABLE.find(s)
            && !says(&CONV_ABLE, false)
        {
            let why = format!(
                "`{}` reads as a dropped negation (unable to), and the conversation never says `able to`",
                m.as_str()
            );
            flip(m.start(), m.end(), 0.6, why);
        }
        if let Some(m) = AGENT_REFUSED.find(s)
            && cx.turns.iter().any(|t| is_agent_role(t.role))
            && !says(&AGENT_TURN_REFUSAL, true)
        {
            let why = format!(
                "the summary says `{}`, but no agent turn refuses, declines or says it cannot help",
                m.as_str()
            );
            flip(m.start(), m.end(), 0.7, why);
        }
        for &(a, b) in &cx.sentences {
            let sentence = &s[a..b];
            for m in NPI.find_iter(sentence) {
                let before = &sentence[..m.start()];
                let clause = &before[before.rfind([',', ';']).map_or(0, |i| i + 1)..];
                if !NEGATION.is_match(clause) && !NEGATION.is_match(&sentence[m.end()..]) {
                    let why = format!(
                        "`{}` needs a negation that the sentence does not have: a negation was likely dropped",
                        m.as_str()
                    );
                    flip(a, b, 0.7, why);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conv: &[(&str, &str)], summary: &str) -> Vec<String> {
        crate::detectors::testing::flagged_spans(&Polarity, conv, summary)
    }

    const CONV: &[(&str, &str)] = &[
        (
            "c",
            "My iphone is not charging at all, I'm unable to use it",
        ),
        ("a", "Sorry! We'll pass this on to our team."),
    ];

    #[test]
    fn dropped_negation_before_a_negative_polarity_item() {
        assert_eq!(
            run(CONV, "The customer's iphone was at all charging."),
            ["The customer's iphone was at all charging."]
        );
        assert!(run(CONV, "The customer's iphone was not charging at all.").is_empty());
    }

    #[test]
    fn a_refusal_nobody_voiced_is_a_flip() {
        let promised = [
            ("c", "My iphone is not charging"),
            ("a", "Sorry! We'll pass this on to our team."),
        ];
        assert_eq!(
            run(&promised, "Agent says they will not pass this on."),
            ["will not pass this"]
        );
        let refused = [
            ("c", "Can I get a refund?"),
            ("a", "We won't refund opened items."),
        ];
        assert!(run(&refused, "Agent says they will not refund opened items.").is_empty());
    }

    #[test]
    fn an_agent_who_helped_is_not_said_to_refuse() {
        let helped = [
            (
                "c",
                "I returned the blue jacket (order 77120) two weeks ago, still no money back",
            ),
            (
                "a",
                "Sorry about that! The jacket is out of stock, so we have sent you a replacement; it ships tomorrow.",
            ),
            ("c", "Great, thanks!"),
        ];
        assert_eq!(
            run(
                &helped,
                "The customer asked about a returned jacket. The agent refused to help and closed the ticket."
            ),
            ["agent refused"]
        );
        assert!(
            run(
                &helped,
                "The agent sent a replacement jacket, which ships tomorrow."
            )
            .is_empty()
        );
        let declined = [
            ("c", "Can I return opened earphones?"),
            (
                "a",
                "Unfortunately we can't accept returns of opened items.",
            ),
        ];
        assert!(
            run(
                &declined,
                "The agent refused the return of opened earphones."
            )
            .is_empty()
        );
    }

    #[test]
    fn a_dropped_un_in_able_to() {
        let conv = [("c", "I cannot log in"), ("a", "Try resetting it")];
        assert_eq!(
            run(&conv, "Customer has an issue with able to log in."),
            ["with able to"]
        );
        assert!(run(&conv, "Customer is unable to log in.").is_empty());
    }
}
