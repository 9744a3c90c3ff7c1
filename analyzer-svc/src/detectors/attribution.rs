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

/// Each rule names its findings (`Finding::detector`), so that an evaluation can count the kinds
/// apart: a party doing what the other typically does (`ROLE`, `OPENING`: the swap an error-prone
/// teacher makes), or a clause or transcript line retelling the other party's words (`CLAUSE`,
/// `RELABELLED_LINE`: what small students write most, trained on any data).
const ROLE: &str = "attribution.role";
const OPENING: &str = "attribution.opening";
const RELABELLED_LINE: &str = "attribution.relabelled_line";
const CLAUSE: &str = "attribution.clause";

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
                    ROLE,
                    span.clone(),
                    Evidence::NotFound,
                    0.7,
                    explanation,
                );
                finding.fix = swap_party(&span.text);
                out.push(finding);
            }
        }
        misattributed_clauses(cx, out);
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
        OPENING,
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
    let customer = is_customer_word(&lower);
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

/// Content words a retold line or clause needs before its wording can say who wrote it.
const MIN_LINE_WORDS: usize = 4;
/// The share of a line's content words one turn must hold to be its source.
const SOURCE_SHARE: f64 = 0.6;
/// How much closer the other party's turn must be than the labelled party's closest turn.
const SOURCE_MARGIN: f64 = 0.3;

/// Each turn's content-word stems, built once per summary.
struct TurnWords<'a>(Vec<HashSet<&'a str>>);

impl<'a> TurnWords<'a> {
    fn of(cx: &'a Context<'_>) -> TurnWords<'a> {
        let ix = cx.conversation();
        let mut turns: Vec<HashSet<&str>> = vec![HashSet::new(); cx.turns.len()];
        for w in &ix.words {
            turns[w.turn].insert(text::stem(&w.key));
        }
        TurnWords(turns)
    }

    /// The closest turn of each party to the content words of `body` (a byte range of the
    /// summary), as the share of those words it holds.
    fn closest(&self, cx: &Context<'_>, body: (usize, usize), named_customer: bool) -> Closest {
        let words: HashSet<&str> = cx
            .keys_in(body.0, body.1)
            .iter()
            .filter(|k| k.len() > 2 && !text::is_function_word(k))
            .map(|k| text::stem(k))
            .collect();
        let mut closest = Closest {
            words: words.len(),
            ..Closest::default()
        };
        for (t, turn) in self.0.iter().enumerate() {
            let share =
                words.iter().filter(|k| turn.contains(*k)).count() as f64 / words.len() as f64;
            let best = if super::is_agent_role(cx.turns[t].role) == named_customer {
                &mut closest.other
            } else {
                &mut closest.named
            };
            if best.is_none_or(|(s, _)| share > s) {
                *best = Some((share, t));
            }
        }
        closest
    }
}

/// The closest turn (share of the words, turn index) of the party a summary names and of the
/// other party (`None` for a party with no turn), and how many content words were compared.
#[derive(Default)]
struct Closest {
    words: usize,
    named: Option<(f64, usize)>,
    other: Option<(f64, usize)>,
}

impl Closest {
    /// The other party's turn, when it clearly wrote the words: there are enough of them to
    /// tell, and it holds at least `SOURCE_SHARE` of them and `SOURCE_MARGIN` more than any turn
    /// of the party named.
    fn written_by_the_other(&self) -> Option<usize> {
        if self.words < MIN_LINE_WORDS {
            return None;
        }
        let (other, turn) = self.other?;
        let named = self.named.map_or(0.0, |n| n.0);
        (other >= SOURCE_SHARE && other >= named + SOURCE_MARGIN).then_some(turn)
    }
}

fn is_customer_word(party: &str) -> bool {
    let party = party.to_ascii_lowercase();
    ["customer", "user", "client", "caller"]
        .iter()
        .any(|p| party.starts_with(p))
}

/// A finding of `rule` on the party word at `span` whose words `turn` of the other party wrote.
fn misattributed(
    cx: &Context<'_>,
    rule: &str,
    span: TextSpan,
    turn: usize,
    explanation: String,
    confidence: f32,
) -> Finding {
    let fix = swap_party(&span.text);
    let source = &cx.turns[turn];
    let mut finding = Finding::new(
        CategoryId::SpeakerAttribution,
        rule,
        span,
        Evidence::turn(cx.turns, turn, 0, source.text.len()),
        confidence,
        explanation,
    );
    finding.fix = fix;
    finding
}

/// A transcript line labelled with one party whose words come from the other party's turn.
fn relabelled_lines(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let labels = text::speaker_labels(cx.summary);
    if labels.len() < 2 {
        return;
    }
    let turns = TurnWords::of(cx);
    for (i, &(start, end)) in labels.iter().enumerate() {
        let customer = is_customer_word(&cx.summary[start..end]);
        let body_end = labels.get(i + 1).map_or(cx.summary.len(), |l| l.0);
        let Some(turn) = turns
            .closest(cx, (end, body_end), customer)
            .written_by_the_other()
        else {
            continue;
        };
        let span = TextSpan::of(cx.summary, start, end);
        let explanation = format!(
            "the line labelled `{}` retells turn {turn}, which the {} wrote",
            span.text,
            if customer { "agent" } else { "customer" }
        );
        out.push(misattributed(
            cx,
            RELABELLED_LINE,
            span,
            turn,
            explanation,
            0.8,
        ));
    }
}

/// A party at the start of a sentence (or of a transcript-like bullet): its subject, unless a
/// possessive follows (checked where it is used: the pattern must not consume the next char).
static SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)(?:^|[.!?\n]\s*|-\s+)(?:the\s+|a\s+)?(?:{AGENT}|{CUSTOMER})\b"
    ))
    .unwrap()
});

/// What customers typically do as subjects: they raise the matter in their own words, which the
/// agent's reply often repeats, so the words cannot tell who wrote them.
static CUSTOMER_DOING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:is\s+|was\s+|has\s+|had\s+|also\s+|seems\s+)*(?:not\s+|very\s+|really\s+)?(?:complain|unable|having|facing|experienc|ask|enquir|inquir|esquir|want|wish|upset|frustrat|unhappy|angry|disappoint|report|can't|cannot|could|tr(?:y|ied)|need|wonder|concern|worried|stat\w*\s+(?:an\s+|that\s+)?(?:issue|problem))").unwrap()
});

/// What agents typically do as subjects: their reply restates the customer's words.
static AGENT_DOING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*(?:also\s+|then\s+|kindly\s+|has\s+|had\s+|is\s+)*(?:apologi|ask|request|suggest|advis|recommend|assur|instruct|guid|inform|offer|provid|explain|confirm|tell|told|will|would|direct|send|shar|check|acknowledg|thank|respond|replie|repl(?:y|ied)|sa(?:y|id)s?\s+(?:sorry|that\s+they))").unwrap()
});

/// A told clause ("Customer stated that it only applies to damaged items") whose words come
/// from the other party's turn. A summary whose parties were all swapped keeps a swapped clause
/// after the first is mended; the role-typical patterns above see only some of them.
fn misattributed_clauses(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let subjects: Vec<(usize, usize)> = SUBJECT
        .find_iter(cx.summary)
        .filter(|m| !cx.summary[m.end()..].starts_with(['\'', '\u{2019}']))
        .filter_map(|m| {
            let p = PARTY.find(m.as_str())?;
            let word = FIRST_PARTY.find(p.as_str())?;
            Some((
                m.start() + p.start() + word.start(),
                m.start() + p.start() + word.end(),
            ))
        })
        .collect();
    if subjects.is_empty() {
        return;
    }
    // A summary that tells of one party only, sentence after sentence, of a conversation both
    // wrote, once the parties already flagged are swapped back: its later clauses that do not
    // describe what that party typically does are the other party's (the rest of a summary
    // whose parties were all swapped, where only the opening gave it away).
    let party_once_mended = |&(start, end): &(usize, usize)| {
        let flagged = out.iter().any(|f| {
            f.summary_span
                .overlaps(&TextSpan::of(cx.summary, start, end))
        });
        is_customer_word(&cx.summary[start..end]) != flagged
    };
    let one_party = subjects.len() >= 2
        && subjects
            .iter()
            .all(|s| party_once_mended(s) == party_once_mended(&subjects[0]));
    let turns = TurnWords::of(cx);
    for (i, &(start, end)) in subjects.iter().enumerate() {
        // The clause runs to the next party subject or the end of its sentence.
        let sentence_end = cx
            .sentences
            .iter()
            .find(|s| s.0 <= start && start < s.1)
            .map_or(cx.summary.len(), |s| s.1);
        let body_end = subjects
            .get(i + 1)
            .map_or(sentence_end, |s| s.0.min(sentence_end));
        let span = TextSpan::of(cx.summary, start, end);
        if out.iter().any(|f| f.summary_span.overlaps(&span)) {
            continue;
        }
        let customer = is_customer_word(&span.text);
        let doing = if customer {
            &*CUSTOMER_DOING
        } else {
            &*AGENT_DOING
        };
        if doing.is_match(&cx.summary[end..body_end]) {
            continue;
        }
        let closest = turns.closest(cx, (end, body_end), customer);
        let (named, other) = if customer {
            ("customer", "agent")
        } else {
            ("agent", "customer")
        };
        let clause = &cx.summary[start..body_end];
        if let Some(turn) = closest.written_by_the_other() {
            let explanation = format!(
                "the clause told of the {named} (`{clause}`) retells turn {turn}, which the {other} wrote"
            );
            out.push(misattributed(cx, CLAUSE, span, turn, explanation, 0.7));
        } else if one_party
            && i > 0
            && let Some((_, turn)) = closest.other
        {
            let explanation = format!(
                "the summary tells of the {named} only, and `{clause}` is not what the {named} does: the {other}'s part (closest: turn {turn})"
            );
            out.push(misattributed(cx, CLAUSE, span, turn, explanation, 0.6));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detectors::testing::turns;
    use arf_common::dataset::Turn;

    /// Every finding of the detector on `summary` of the conversation `turns`.
    fn detected(turns: &[Turn], summary: &str) -> Vec<Finding> {
        let cx = Context::new(turns, summary);
        let mut out = Vec::new();
        Attribution.detect(&cx, &mut out);
        out
    }

    fn run(summary: &str) -> Vec<String> {
        let turns = turns(&[("c", "my phone won't charge"), ("a", "Sorry, please DM us")]);
        detected(&turns, summary)
            .into_iter()
            .map(|f| f.summary_span.text)
            .collect()
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
    fn a_clause_told_of_the_wrong_party_is_flagged_after_the_first_is_mended() {
        let turns = turns(&[
            (
                "c",
                "what is the replacement policy on the earphones I want to buy?",
            ),
            (
                "a",
                "It only applies if the received item is defective or damaged",
            ),
        ]);
        let flagged = |summary: &str| {
            detected(&turns, summary)
                .into_iter()
                .map(|f| (f.summary_span.text, f.fix))
                .collect::<Vec<_>>()
        };
        // Both parties swapped: the opening and the retold reply are both flagged.
        let both = flagged(
            "Agent is eager to know the replacement policy on the earphones. Customer stated that it only applies if the received item is defective or damaged.",
        );
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[1].0, "Customer");
        assert_eq!(both[1].1.as_deref(), Some("Agent"));
        // Each kind under its own rule's name: an evaluation counts them apart.
        let rules = |summary: &str| {
            detected(&turns, summary)
                .into_iter()
                .map(|f| f.detector)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rules(
                "Agent is eager to know the replacement policy on the earphones. Customer stated that it only applies if the received item is defective or damaged."
            ),
            [OPENING, CLAUSE]
        );
        assert_eq!(
            rules("Customer's earphones broke. Agent is eager to know the replacement policy."),
            [ROLE]
        );
        // Only the opening gives it away: told of the customer only once it is mended, the
        // rest is the agent's.
        let opening_only =
            flagged("Agent identified the earphones as faulty. Customer has corrected the policy.");
        assert_eq!(opening_only.len(), 2, "{opening_only:?}");
        // Only the opening mended: the reply is still flagged by its words.
        assert_eq!(
            flagged("Customer is eager to know the replacement policy on the earphones. Customer stated that it only applies if the received item is defective or damaged.").len(),
            1
        );
        // Told of the customer only, with too few words to source: still the agent's part.
        assert_eq!(
            flagged("Customer is eager to know the replacement policy. Customer updated that it applies.").len(),
            1
        );
        // Right as it is; a customer clause the agent's reply echoes is not judged by its words.
        assert!(flagged("Customer is eager to know the replacement policy on the earphones. Agent stated that it only applies if the received item is defective or damaged.").is_empty());
        assert!(flagged("Customer is asking whether it only applies if the received item is defective or damaged. Agent stated that it does.").is_empty());
        // A possessive is no subject.
        assert!(flagged("Customer wants the policy. Agent stated that the customer's item only applies if it is defective or damaged.").is_empty());
    }

    #[test]
    fn ordinary_roles_pass() {
        assert!(run("Customer is complaining that the phone won't charge. Agent apologizes and asks for a DM.").is_empty());
        assert!(run("Customer asks the agent about the charger. Agent asks whether it is new and wants to know the model.").is_empty());
        assert!(run("Customer says the company is not keeping customers updated.").is_empty());
    }
}
