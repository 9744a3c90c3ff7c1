//! unsupported_action: the summary reports an action or outcome (a refund issued, a replacement
//! sent, a credit given, an escalation, a visit booked, a fee waived, an upgrade, a delivery
//! confirmed, a resolution) that the conversation does not support.
//!
//! Each kind of action is a frame: a pattern for the completed claim, and the word stems an agent
//! turn must contain for the claim to be supported. Requests ("wants a refund"), questions,
//! negations and promises ("will refund") are not claims of a completed action and are skipped.
//! A claim's qualifiers (times like "yesterday" or "Friday morning", "same day", "express") must
//! also appear in the conversation: "delivered yesterday" is not supported by "delivered".

use std::cell::OnceCell;
use std::sync::LazyLock;

use regex::Regex;

use super::{Context, Detector, is_agent_role};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;
use crate::text;

pub struct UnsupportedAction;

const NAME: &str = "action";

struct Frame {
    what: &'static str,
    pattern: Regex,
    /// Stems (prefixes of lowercase words); an agent turn containing one supports the claim.
    support: &'static [&'static str],
}

fn frame(what: &'static str, pattern: &str, support: &'static [&'static str]) -> Frame {
    Frame {
        what,
        pattern: Regex::new(&format!("(?i){pattern}")).unwrap(),
        support,
    }
}

static FRAMES: LazyLock<Vec<Frame>> = LazyLock::new(|| {
    vec![
        frame(
            "a refund",
            r"\b(?:issued|processed|gave|granted|approved|initiated|sent|provided|arranged)\b[^.;]{0,30}?\brefund\w*|\brefunded\b",
            &["refund", "money back", "reimburs"],
        ),
        frame(
            "a replacement",
            r"\b(?:sent|shipped|dispatched|issued|arranged|ordered|provided|gave)\b[^.;]{0,30}?\breplacement\b|\breplaced\b",
            &["replac", "new one", "exchange"],
        ),
        frame(
            "a credit or compensation",
            r"\b(?:offered|gave|issued|applied|added|credited|provided|granted)\b[^.;]{0,30}?\b(?:credit|voucher|discount|compensation|gift ?card|coupon|goodwill|refund)\b",
            &[
                "credit",
                "voucher",
                "discount",
                "compensat",
                "gift",
                "coupon",
                "goodwill",
            ],
        ),
        frame(
            "an escalation",
            r"\bescalated\b",
            &["escalat", "supervisor", "manager", "senior"],
        ),
        frame(
            "a visit or appointment",
            r"\b(?:booked|scheduled|arranged|set up|organi[sz]ed)\b[^.;]{0,30}?\b(?:technician|engineer|visit|appointment|call ?back)\b",
            &[
                "technician",
                "engineer",
                "visit",
                "appointment",
                "call back",
                "callback",
            ],
        ),
        frame(
            "a waived fee",
            r"\bwaived\b",
            &["waiv", "no charge", "free of charge"],
        ),
        frame(
            "an upgrade",
            r"\bupgraded\b[^.;]{0,40}?\b(?:free|premium|complimentary|no (?:extra )?charge|business|first)\b",
            &["upgrad"],
        ),
        frame(
            "a confirmed delivery",
            r"\bconfirmed\b[^.;]{0,40}?\b(?:delivered|arrived|shipped|dispatched)\b",
            &["deliver", "arriv", "shipped", "dispatch"],
        ),
        frame(
            "a resolution",
            r"\b(?:resolved|fixed|solved)\b\s+(?:it|the|this|their|his|her)\b",
            &["resolv", "fixed", "solved", "sorted", "working"],
        ),
    ]
});

/// Words before the claim, in its clause, that make it not a completed action by the agent.
static NOT_A_CLAIM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:wants?|wanted|want to|asks?|asked|asking|requests?|requested|requesting|would like|demands?|if|whether|not|no|never|cannot|can't|couldn't|unable|will|would|could|should|to|hasn't|haven't|didn't|won't|yet|still waiting|waiting|expect\w*|hope\w*|how|why|when)\b").unwrap()
});

/// Qualifiers that pin a claim to specifics the conversation must share.
const QUALIFIERS: &[&str] = &[
    "yesterday",
    "today",
    "tomorrow",
    "same",
    "express",
    "overnight",
    "full",
    "premium",
    "morning",
    "afternoon",
    "evening",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "supervisor",
    "manager",
    "technician",
    "engineer",
    "late",
    "next",
];

impl Detector for UnsupportedAction {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::UnsupportedAction]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        unsupported_claims(cx, out);
    }
}

/// Appends a finding for each unsupported action claim (also used by the omission detector, so
/// that a sentence inventing an action does not count as the agent's response).
pub fn unsupported_claims(cx: &Context<'_>, out: &mut Vec<Finding>) {
    // Agent turns, lowercased once, on the first claim that needs them.
    let agent_text: OnceCell<Vec<(usize, String)>> = OnceCell::new();
    {
        let s = cx.summary;
        for &(start, end) in &cx.sentences {
            let sentence = &s[start..end];
            for f in FRAMES.iter() {
                let Some(m) = f.pattern.find(sentence) else {
                    continue;
                };
                // The clause before the claim: from the last comma, semicolon or "and"/"but".
                let before = &sentence[..m.start()];
                let clause_start = before.rfind([',', ';']).map_or(0, |i| i + 1);
                if NOT_A_CLAIM.is_match(&before[clause_start..]) {
                    continue;
                }
                let claim_end = clause_end(sentence, m.end());
                let (a, b) = (start + m.start(), start + claim_end);
                if out.iter().any(|x| {
                    x.detector == NAME && x.summary_span.start < b && a < x.summary_span.end
                }) {
                    continue;
                }
                let claim = text::slice(s, a, b);
                let agents = agent_text.get_or_init(|| {
                    cx.turns
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| is_agent_role(t.role))
                        .map(|(i, t)| (i, t.text.to_ascii_lowercase()))
                        .collect()
                });
                match support(cx, agents, f, claim) {
                    Ok(_) => {}
                    Err(why) => {
                        let span = TextSpan::of(s, a, b);
                        let explanation = format!(
                            "the summary reports {} that the conversation does not support: {why}",
                            f.what
                        );
                        // The span is the claim's clause: deleting it leaves what was supported.
                        out.push(
                            Finding::new(
                                CategoryId::UnsupportedAction,
                                NAME,
                                span,
                                Evidence::NotFound,
                                0.85,
                                explanation,
                            )
                            .with_fix(""),
                        );
                    }
                }
            }
        }
    }
}

/// The end of the clause that holds the claim: the next comma or semicolon, or the sentence end
/// (without its full stop).
fn clause_end(sentence: &str, from: usize) -> usize {
    let rest = &sentence[from..];
    let cut = rest.find([';', '(']).unwrap_or(rest.len());
    let end = from + cut;
    let trimmed = sentence[..end].trim_end_matches(['.', '!', '?', ' ', ',']);
    trimmed.len().max(from)
}

/// Ok with the supporting agent turn, or Err saying what is missing.
fn support(
    cx: &Context<'_>,
    agents: &[(usize, String)],
    f: &Frame,
    claim: &str,
) -> Result<usize, String> {
    let Some(&(turn, _)) = agents
        .iter()
        .find(|(_, lower)| f.support.iter().any(|st| lower.contains(st)))
    else {
        return Err(format!("no agent turn mentions {}", f.support.join(" / ")));
    };
    let conv = cx.conversation();
    for w in text::words(claim) {
        let k = text::key(w.text);
        if QUALIFIERS.contains(&k.as_str()) && !conv.has(&k) {
            return Err(format!("the conversation never says `{k}`"));
        }
    }
    Ok(turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conv: &[(&str, &str)], summary: &str) -> Vec<String> {
        crate::detectors::testing::flagged_spans(&UnsupportedAction, conv, summary)
    }

    const ASK: &[(&str, &str)] = &[
        ("c", "I want a refund for this broken kettle"),
        ("a", "Sorry! Please DM us your order number"),
    ];

    #[test]
    fn invented_actions_are_flagged() {
        assert_eq!(
            run(
                ASK,
                "Customer wants a refund. Agent issued a full refund to the customer."
            ),
            ["issued a full refund to the customer"]
        );
        assert_eq!(
            run(ASK, "Agent sent a replacement device by express shipping."),
            ["sent a replacement device by express shipping"]
        );
        assert_eq!(
            run(
                ASK,
                "Agent escalated the case to a supervisor, who resolved it the same day."
            ),
            ["escalated the case to a supervisor, who resolved it the same day"]
        );
        assert_eq!(
            run(ASK, "Agent booked a technician visit for Friday morning."),
            ["booked a technician visit for Friday morning"]
        );
        assert_eq!(
            run(ASK, "Agent waived the late fee."),
            ["waived the late fee"]
        );
    }

    #[test]
    fn requests_promises_and_supported_actions_pass() {
        assert!(
            run(
                ASK,
                "Customer wants a refund for a broken kettle. Agent asks for the order number."
            )
            .is_empty()
        );
        assert!(run(ASK, "Customer asked whether the agent issued a refund.").is_empty());
        let done = [
            ("c", "Where is my money?"),
            ("a", "I've processed your refund today, it takes 3 days"),
        ];
        assert!(run(&done, "Agent processed a refund today.").is_empty());
        // Supported action, unsupported qualifier.
        assert_eq!(
            run(&done, "Agent issued a refund yesterday."),
            ["issued a refund yesterday"]
        );
    }
}
