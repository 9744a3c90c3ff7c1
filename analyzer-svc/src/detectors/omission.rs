//! omission: the summary covers the customer's issue but not the agent's response.
//!
//! A summary of a support conversation has two halves. The rule looks for the second: a clause
//! whose subject is the agent's side ("Agent asks...", "..., and the rep says..."), or a sentence
//! after the first that is not about the customer ("Offers a link...", "A fix was suggested.").
//! A sentence that only reports an action nobody took does not count as the response: the
//! response was dropped and replaced, which is both an omission and an unsupported action.
//! The other half (the customer's issue missing) is left to the model-judged key-fact check:
//! summaries legitimately open with the issue without naming the customer.

use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector, action, is_agent_role};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;

pub struct Omission;

const NAME: &str = "omission";

/// The agent's side as the subject of a clause: at a sentence or clause start, or after a conjunction.
static AGENT_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:^|[.,;:!?(]\s*|\b(?:and|but|while|whereas|then|so|which|who|where|also|here)\s+)(?:the\s+|an?\s+|their\s+)?(?:agents?|representatives?|reps?|advis[oe]rs?|executives?|support(?:\s+team)?|team|company|staff|airline|brand|operator|store|service)\b",
    )
    .unwrap()
});
/// A sentence about the customer starts with one of these in its first words.
static CUSTOMER_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\W*(?:here\s+)?(?:the\s+|a\s+|this\s+)?(?:customers?|clients?|users?|callers?|passengers?|consumers?|buyers?|person|he|she|i|my|his|her|ther)\b").unwrap()
});

/// What agents do: a later sentence doing this is the response, whoever it names as subject
/// (naming the wrong one is a speaker_attribution error, not an omission).
static RESPONSE_VERB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:apologi[sz]\w*|suggest\w*|advis\w*|recommend\w*|assur\w*|instruct\w*|inform\w*|updat(?:es|ed)\s+that|(?:requests?|requested|asks?|asked|tells?|told)\s+(?:the\s+\w+\s+|him\s+|her\s+|them\s+)?to\s+(?:dm|share|send|provide|contact|reboot|restart|follow|check|try|visit|call|reach|reinstall|update|clear))\b").unwrap()
});

impl Detector for Omission {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::Omission]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !cx.turns.iter().any(|t| is_agent_role(t.role)) || cx.sentences.is_empty() {
            return;
        }
        let mut invented = Vec::new();
        action::unsupported_claims(cx, &mut invented);
        let responds = cx.sentences.iter().enumerate().any(|(i, &(a, b))| {
            if invented
                .iter()
                .any(|f| a <= f.summary_span.start && f.summary_span.start < b)
            {
                return false;
            }
            let sentence = &cx.summary[a..b];
            AGENT_SUBJECT.is_match(sentence)
                || (i > 0
                    && (!CUSTOMER_START.is_match(sentence) || RESPONSE_VERB.is_match(sentence)))
        });
        if responds {
            return;
        }
        // Point at the end of the summary (where the response belongs) and at the first agent turn.
        let evidence = cx
            .turns
            .iter()
            .position(|t| is_agent_role(t.role))
            .map_or(Evidence::NotFound, |i| {
                Evidence::turn(cx.turns, i, 0, cx.turns[i].text.len())
            });
        let span = TextSpan::of(cx.summary, 0, cx.summary.len());
        let explanation =
            "the summary gives the customer's side only: what the agent said or did is missing"
                .to_string();
        out.push(Finding::new(
            CategoryId::Omission,
            NAME,
            span,
            evidence,
            0.8,
            explanation,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(summary: &str) -> bool {
        let turns = turns(&[
            ("c", "My wifi keeps dropping"),
            ("a", "Please restart the router and DM us"),
        ]);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Omission.detect(&cx, &mut out);
        !out.is_empty()
    }

    #[test]
    fn customer_only_summaries_are_flagged() {
        assert!(run("Customer is complaining that the wifi keeps dropping."));
        assert!(run("Customer is enquiring the agent regarding the wifi."));
        assert!(run("The customer's wifi keeps dropping. He is annoyed."));
        // The only agent sentence is an invented action.
        assert!(run(
            "Customer's wifi keeps dropping. Agent issued a full refund to the customer."
        ));
    }

    #[test]
    fn summaries_with_a_response_pass() {
        assert!(!run(
            "Customer's wifi keeps dropping. Agent suggests restarting the router."
        ));
        assert!(!run(
            "Customer's wifi keeps dropping, and the rep asks for a DM."
        ));
        assert!(!run("Wifi keeps dropping. Told to restart the router."));
        // The response is there, attributed to the wrong party: not an omission.
        assert!(!run(
            "Customer's wifi keeps dropping. Customer requests to restart the router."
        ));
    }
}
