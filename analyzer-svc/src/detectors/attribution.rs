//! speaker_attribution: something the customer said or did is attributed to the agent, or the
//! reverse. Rules can only see the role-typical cases, and that is all this claims:
//! - the agent as subject of what customers do (complains, is unable to, wants to know, is upset);
//! - the customer as subject of what agents do (apologizes, advises, asks the agent to DM details);
//! - the summary opening with the agent when the conversation opens with the customer and the
//!   agent is then described raising the issue;
//! - a retold transcript whose line carries the wrong label: "Customer: <what an agent wrote>"
//!   (models that retell a conversation swap the labels often).
//!
//! Swaps between two neutral verbs ("X said", "Y asked") need the model-judged fact check.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use arf_common::dataset::Role;

use super::{Context, Detector};
use crate::finding::{Evidence, Finding, TextSpan};
use crate::taxonomy::CategoryId;
use crate::text;

pub struct Attribution;

const NAME: &str = "attribution";

const AGENT: &str = r"(?:agents?|representatives?|reps?|advis[oe]rs?|executives?|support\s+team)";
const CUSTOMER: &str = r"(?:customers?|clients?|callers?)";

/// A clause subject position: sentence or clause start, or after a conjunction.
const SUBJECT_START: &str = r"(?:^|[.,;:!?\n]\s*|-\s+|\b(?:and|but|while|whereas|then|so|here|also|where)\s+)(?:the\s+|a\s+)?";

/// The agent doing what customers do.
static AGENT_AS_CUSTOMER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i){SUBJECT_START}{AGENT}\s+(?:is\s+|was\s+|has\s+been\s+|had\s+been\s+|has\s+|had\s+|also\s+|seems\s+|getting\s+)?(?:very\s+|really\s+|visibly\s+|not\s+)?(?:complain\w*|frustrat\w*|upset|unhappy|disappoint\w*|angry|annoyed|furious|dissatisfied|unable\s+to\s+(?:use|access|connect|log|get|find|download|install|play|watch|travel|book|reach|see|make|pay|receive)|eager|facing|experienc\w*|struggl\w*|worried|concerned|disgust\w*|tired|fed\s+up|having\s+(?:an?\s+)?(?:\w+\s+)?(?:issue|problem|trouble)|in\s+seek|seek\w*\s+(?:help|assistance)|ask\w*\s+(?:for\s+)?(?:help|assistance)|(?:ask|request|demand)\w*\s+(?:for\s+)?(?:a\s+|their\s+)?(?:refund|compensation)|request\w*\s+for\s+(?:help|assistance)|stat\w*\s+(?:an\s+)?(?:issue|problem)|bought|purchased|wants\s+to\s+(?:cancel|buy|order|upgrade|return|change|know\s+(?:why|when|if|whether\s+(?:he|she|i)))|not\s+happy)\b"
    ))
    .unwrap()
});

/// The customer doing what agents do.
static CUSTOMER_AS_AGENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i){SUBJECT_START}{CUSTOMER}\s+(?:also\s+|then\s+|kindly\s+|has\s+)?(?:apologi[sz]\w*|suggest\w*\s+(?:to|that\s+(?:the\s+)?{AGENT})|advis\w*|recommend\w*|assur\w*|instruct\w*|guid\w*|informs?\s+(?:the\s+)?{AGENT}|informed\s+(?:the\s+)?{AGENT}|responded|replie[sd]\s+(?:the\s+)?{AGENT}|provided\s+(?:a|the)?\s*(?:link|url)|take\w*\s+the\s+details|offer\w*\s+to\s+help|(?:asks?|asked|asking|requests?|requested|requesting|tells?|told)\s+(?:the\s+)?(?:{AGENT}\s+)?(?:for\s+)?(?:to\s+)?(?:dm|send|share|provide|follow|restart|reinstall|clear|confirm|give|the\s+(?:name|details|postcode|order\s+(?:number|details)|account|personal)|(?:his|her|their|your)\s+(?:details|postcode|name|number|account|order|personal))|(?:will|would)\s+(?:look|check|investigate|forward|pass|escalate|raise)|thank\w*\s+(?:the\s+)?{AGENT}\s+for\s+(?:contact|reach|getting|your\s+patience))\b"
    ))
    .unwrap()
});

/// A party as a noun phrase.
static PARTY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)\b(?:the\s+|a\s+)?(?:{AGENT}|{CUSTOMER})\b")).unwrap()
});

/// The first party a summary names.
static FIRST_PARTY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)\b(?:{AGENT}|{CUSTOMER})\b")).unwrap());

impl Detector for Attribution {
    fn name(&self) -> &'static str {
        NAME
    }

    fn categories(&self) -> &'static [CategoryId] {
        &[CategoryId::SpeakerAttribution]
    }

    fn detect(&self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let s = cx.summary;
        opening(cx, out);
        relabelled_lines(cx, out);
        for (re, why) in [
            (
                &*AGENT_AS_CUSTOMER,
                "the agent is described doing what the customer did",
            ),
            (
                &*CUSTOMER_AS_AGENT,
                "the customer is described doing what the agent did",
            ),
        ] {
            for m in re.find_iter(s) {
                // The span starts at the party ("the customer ..."), not at the clause-start
                // punctuation or conjunction the pattern needed.
                let lead = PARTY.find(m.as_str()).map_or(0, |p| p.start());
                let span = TextSpan::of(s, m.start() + lead, m.end());
                if out.iter().any(|f| f.summary_span.overlaps(&span)) {
                    continue;
                }
                let explanation = format!("{why}: `{}`", span.text);
                let mut finding = Finding::new(
                    CategoryId::SpeakerAttribution,
                    NAME,
                    span.clone(),
                    Evidence::NotFound,
                    0.7,
                    explanation,
                );
                finding.fix = swap_party(&span.text);
                out.push(finding);
            }
        }
    }
}

/// Summaries tell the conversation in order, and the customer who opened it raised the issue:
/// a summary whose first actor is the agent, of a conversation the customer opened, has almost
/// always swapped the parties.
fn opening(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(first_turn) = cx.turns.iter().position(|t| !t.text.trim().is_empty()) else {
        return;
    };
    if cx.turns[first_turn].role != Role::Customer {
        return;
    }
    let Some(m) = FIRST_PARTY.find(cx.summary) else {
        return;
    };
    let party = m.as_str().to_ascii_lowercase();
    if !(party.starts_with("agent")
        || party.starts_with("rep")
        || party.starts_with("advis")
        || party.starts_with("exec")
        || party.starts_with("support"))
    {
        return;
    }
    let span = TextSpan::of(cx.summary, m.start(), m.end());
    let explanation = format!(
        "the summary opens with `{}` raising the matter, but the customer opened the conversation (turn {first_turn})",
        span.text
    );
    let first_text = &cx.turns[first_turn].text;
    let fix = swap_party(&span.text);
    let mut finding = Finding::new(
        CategoryId::SpeakerAttribution,
        NAME,
        span,
        Evidence::turn(cx.turns, first_turn, 0, first_text.len()),
        0.75,
        explanation,
    );
    finding.fix = fix;
    out.push(finding);
}

/// `text` with its first party word swapped for the other party ("the agent complained" ->
/// "the customer complained"), in the same case: the fix of a swapped attribution. `None`
/// without a party word.
fn swap_party(text: &str) -> Option<String> {
    static WORD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(&format!(r"(?i)\b(?:{AGENT}|{CUSTOMER}|users?)\b")).unwrap());
    let m = WORD.find(text)?;
    let word = m.as_str();
    let lower = word.to_ascii_lowercase();
    let customer = ["customer", "client", "caller", "user"]
        .iter()
        .any(|p| lower.starts_with(p));
    let plural = lower.ends_with('s') && !lower.ends_with("ss");
    let other = match (customer, plural) {
        (true, false) => "agent",
        (true, true) => "agents",
        (false, false) => "customer",
        (false, true) => "customers",
    };
    let other = if word.starts_with(char::is_uppercase) {
        let mut c = other.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect())
            .unwrap_or_default()
    } else {
        other.to_string()
    };
    Some(format!("{}{other}{}", &text[..m.start()], &text[m.end()..]))
}

/// Content words a retold line needs before its wording can say who wrote it.
const MIN_LINE_WORDS: usize = 4;
/// The share of a line's content words one turn must hold to be its source.
const SOURCE_SHARE: f64 = 0.6;
/// How much closer the other party's turn must be than the labelled party's closest turn.
const SOURCE_MARGIN: f64 = 0.3;

/// A transcript line labelled with one party whose words come from the other party's turn.
fn relabelled_lines(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let labels = text::speaker_labels(cx.summary);
    if labels.len() < 2 {
        return;
    }
    let ix = cx.conversation();
    let mut turn_words: Vec<HashSet<&str>> = vec![HashSet::new(); cx.turns.len()];
    for w in &ix.words {
        turn_words[w.turn].insert(text::stem(&w.key));
    }
    let keys = cx.summary_keys();
    for (i, &(start, end)) in labels.iter().enumerate() {
        let label = cx.summary[start..end].to_ascii_lowercase();
        let labelled_customer = ["customer", "user", "client"]
            .iter()
            .any(|p| label.starts_with(p));
        let body_end = labels.get(i + 1).map_or(cx.summary.len(), |l| l.0);
        let from = cx.summary_words.partition_point(|w| w.start < end);
        let to = cx.summary_words.partition_point(|w| w.end <= body_end);
        let line: HashSet<&str> = keys[from..to.max(from)]
            .iter()
            .filter(|k| k.len() > 2 && !text::is_function_word(k))
            .map(|k| text::stem(k))
            .collect();
        if line.len() < MIN_LINE_WORDS {
            continue;
        }
        // The closest turn of each party, as the share of the line's words it holds.
        let (mut customer, mut agent) = ((0.0, 0), (0.0, 0));
        for (t, words) in turn_words.iter().enumerate() {
            let share =
                line.iter().filter(|k| words.contains(*k)).count() as f64 / line.len() as f64;
            let best = if super::is_agent_role(cx.turns[t].role) {
                &mut agent
            } else {
                &mut customer
            };
            if share > best.0 {
                *best = (share, t);
            }
        }
        let (mine, other) = if labelled_customer {
            (customer, agent)
        } else {
            (agent, customer)
        };
        if other.0 < SOURCE_SHARE || other.0 < mine.0 + SOURCE_MARGIN {
            continue;
        }
        let span = TextSpan::of(cx.summary, start, end);
        let source = &cx.turns[other.1];
        let explanation = format!(
            "the line labelled `{}` retells turn {}, which the {} wrote",
            span.text,
            other.1,
            if labelled_customer {
                "agent"
            } else {
                "customer"
            }
        );
        let fix = swap_party(&span.text);
        let mut finding = Finding::new(
            CategoryId::SpeakerAttribution,
            NAME,
            span,
            Evidence::turn(cx.turns, other.1, 0, source.text.len()),
            0.8,
            explanation,
        );
        finding.fix = fix;
        out.push(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;

    fn run(summary: &str) -> Vec<String> {
        let turns = turns(&[("c", "my phone won't charge"), ("a", "Sorry, please DM us")]);
        let cx = Context::new(&turns, summary);
        let mut out = Vec::new();
        Attribution.detect(&cx, &mut out);
        out.into_iter().map(|f| f.summary_span.text).collect()
    }

    #[test]
    fn a_swapped_party_is_swapped_back_in_its_case() {
        assert_eq!(
            swap_party("The agent complained").as_deref(),
            Some("The customer complained")
        );
        assert_eq!(swap_party("Customer").as_deref(), Some("Agent"));
        assert_eq!(
            swap_party("the customers apologized").as_deref(),
            Some("the agents apologized")
        );
        assert_eq!(swap_party("nobody here"), None);
    }

    #[test]
    fn swapped_roles_are_flagged() {
        assert_eq!(
            run("Customer is upset. Agent is complaining that the phone won't charge."),
            ["Agent is complaining"]
        );
        assert_eq!(
            run("Customer's phone won't charge. Agent is asking for a refund."),
            ["Agent is asking for a refund"]
        );
        assert_eq!(
            run("Customer's phone won't charge. Customer apologizes and suggests to restart it."),
            ["Customer apologizes"]
        );
        assert_eq!(
            run("Phone won't charge, so the customer asks the agent to DM the details."),
            ["the customer asks the agent to DM"]
        );
    }

    #[test]
    fn an_agent_opening_a_customer_conversation_is_flagged_at_the_first_party() {
        assert_eq!(
            run("The agent is stating that the phone won't charge. Customer asks for a DM."),
            ["agent"]
        );
        assert!(run("Phone won't charge. Customer is sad. Agent asks for a DM.").is_empty());
    }

    #[test]
    fn a_transcript_line_under_the_wrong_label_is_flagged() {
        let turns = turns(&[
            (
                "c",
                "my new phone will not charge since the update yesterday",
            ),
            (
                "a",
                "Sorry about that, please restart the phone and send us a direct message",
            ),
        ]);
        let flagged = |summary: &str| {
            let cx = Context::new(&turns, summary);
            let mut out = Vec::new();
            relabelled_lines(&cx, &mut out);
            out.into_iter()
                .map(|f| f.summary_span.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            flagged(
                "Customer: my new phone will not charge since the update.\nCustomer: please restart the phone and send a direct message."
            ),
            ["Customer:"]
        );
        assert!(flagged("Customer: my new phone will not charge since the update.\nAgent: please restart the phone and send a direct message.").is_empty());
        // Too few words to tell who wrote it.
        assert!(flagged("Agent: phone charge.\nCustomer: restart phone.").is_empty());
    }

    #[test]
    fn ordinary_roles_pass() {
        assert!(run("Customer is complaining that the phone won't charge. Agent apologizes and asks for a DM.").is_empty());
        assert!(run("Customer asks the agent about the charger. Agent asks whether it is new and wants to know the model.").is_empty());
        assert!(run("Customer says the company is not keeping customers updated.").is_empty());
    }
}
