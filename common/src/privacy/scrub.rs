//! A row's texts with its personal data replaced by typed placeholders (`[EMAIL]`, `[PHONE]`,
//! `[NAME]`, ...): the same placeholder for the same value everywhere in one conversation (its
//! turns, its metadata, its teacher summary, its references), `[EMAIL_2]` for a second address,
//! so a summary still says which of two numbers the customer gave.
//!
//! Every value found is replaced, the company's own phone numbers and addresses too: an agent
//! may read back the customer's, and a scrubbed run must not depend on telling them apart.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;

use super::detect::{PiiKind, PiiSpan, find_pii};
use crate::dataset::{Conversation, Record, Role};

/// Values replaced, per kind (`email`, `phone`, ...): every occurrence counts.
pub type ScrubCounts = BTreeMap<&'static str, u32>;

/// An agent addressing the customer by name ("Hi Sarah,", "Thanks, Karen"), or a customer
/// giving theirs ("my name is Ana").
static AGENT_ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:Hi|Hello|Hey|Dear|Thanks|Thank you|Sorry|Welcome)\s*,?\s+([A-Z][a-z]{2,})\b")
        .unwrap()
});
static OWN_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?i:my name is|my name's)\s+([A-Z][a-z]{2,})\b").unwrap());
/// Capitalised words that follow a greeting without being a name.
const NOT_NAMES: &[&str] = &[
    "There", "All", "Everyone", "Again", "Team", "Guys", "Folks", "Friend", "Sir", "Madam", "Mate",
    "For", "And", "But", "The", "You", "Your", "Yes", "Please", "Very", "Much", "Customer",
    "Agent", "Support", "Once",
];

/// The customer's names a conversation shows as names.
pub fn names_in(conversation: &Conversation) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for turn in &conversation.turns {
        let pattern: &Regex = match turn.role {
            Role::Agent | Role::Bot => &AGENT_ADDRESS,
            Role::Customer => &OWN_NAME,
            Role::System => continue,
        };
        for c in pattern.captures_iter(&turn.text) {
            let name = &c[1];
            if !NOT_NAMES.contains(&name) && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Replaces one conversation's personal data, remembering which placeholder each value got.
pub struct ConversationScrubber {
    names: Option<Regex>,
    assigned: HashMap<(PiiKind, String), String>,
    taken: BTreeMap<PiiKind, usize>,
    counts: ScrubCounts,
}

impl ConversationScrubber {
    pub fn new(conversation: &Conversation) -> Self {
        let names = names_in(conversation);
        let names = (!names.is_empty()).then(|| {
            let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
            Regex::new(&format!(r"\b(?:{})\b", alternatives.join("|"))).unwrap()
        });
        Self {
            names,
            assigned: HashMap::new(),
            taken: BTreeMap::new(),
            counts: ScrubCounts::new(),
        }
    }

    /// `text` with every value replaced.
    pub fn scrub(&mut self, text: &str) -> String {
        let mut spans = find_pii(text);
        if let Some(names) = &self.names {
            for m in names.find_iter(text) {
                if !spans.iter().any(|s| m.start() < s.end && s.start < m.end()) {
                    spans.push(PiiSpan {
                        start: m.start(),
                        end: m.end(),
                        kind: PiiKind::Name,
                    });
                }
            }
            spans.sort_by_key(|s| s.start);
        }
        if spans.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for s in spans {
            out.push_str(&text[at..s.start]);
            out.push_str(&self.placeholder(s.kind, &text[s.start..s.end]));
            at = s.end;
        }
        out.push_str(&text[at..]);
        out
    }

    fn placeholder(&mut self, kind: PiiKind, value: &str) -> String {
        *self.counts.entry(kind.as_str()).or_default() += 1;
        let taken = &mut self.taken;
        self.assigned
            .entry((kind, kind.key(value)))
            .or_insert_with(|| {
                let n = taken.entry(kind).or_default();
                *n += 1;
                let bare = kind.placeholder();
                if *n == 1 {
                    bare
                } else {
                    format!("{}_{n}]", &bare[..bare.len() - 1])
                }
            })
            .clone()
    }
}

/// Scrubs a row in place (its turns, metadata values, summary and references, one scrubber
/// for all of them); returns what was replaced.
pub fn scrub_record(record: &mut Record) -> ScrubCounts {
    let mut s = ConversationScrubber::new(&record.conversation);
    for turn in &mut record.conversation.turns {
        turn.text = s.scrub(&turn.text);
    }
    for value in record.conversation.metadata.values_mut() {
        *value = s.scrub(value);
    }
    if let Some(summary) = &mut record.summary {
        *summary = s.scrub(summary);
    }
    for reference in &mut record.references {
        *reference = s.scrub(reference);
    }
    s.counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Turn;

    fn record(turns: &[(Role, &str)], summary: &str, references: &[&str]) -> Record {
        Record {
            conversation: Conversation {
                id: "c1".into(),
                channel: "chat".into(),
                turns: turns
                    .iter()
                    .map(|(role, text)| Turn {
                        role: *role,
                        text: text.to_string(),
                    })
                    .collect(),
                metadata: [("email".to_string(), "jane@x.com".to_string())].into(),
            },
            summary: Some(summary.into()),
            references: references.iter().map(|r| r.to_string()).collect(),
            labels: vec![],
            injections: vec![],
        }
    }

    #[test]
    fn one_value_one_placeholder_across_the_row_and_a_second_value_numbered() {
        let mut r = record(
            &[
                (
                    Role::Customer,
                    "My name is Sarah, mail jane@x.com or JANE@X.COM, call +1 (415) 555-0134",
                ),
                (
                    Role::Agent,
                    "Hi Sarah, we'll also write to bob@y.org. Thanks Sarah!",
                ),
                (
                    Role::Customer,
                    "My number is 14155550134, card 4111 1111 1111 1111",
                ),
            ],
            "Sarah (jane@x.com, 415-555-0134) asked; agent emailed bob@y.org.",
            &["Customer Sarah gave jane@x.com."],
        );
        let counts = scrub_record(&mut r);
        let t: Vec<&str> = r
            .conversation
            .turns
            .iter()
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(
            t[0],
            "My name is [NAME], mail [EMAIL] or [EMAIL], call [PHONE]"
        );
        assert_eq!(
            t[1],
            "Hi [NAME], we'll also write to [EMAIL_2]. Thanks [NAME]!"
        );
        assert_eq!(t[2], "My number is [PHONE], card [CARD]");
        assert_eq!(r.conversation.metadata["email"], "[EMAIL]");
        assert_eq!(
            r.summary.as_deref(),
            Some("[NAME] ([EMAIL], [PHONE]) asked; agent emailed [EMAIL_2].")
        );
        assert_eq!(r.references, ["Customer [NAME] gave [EMAIL]."]);
        assert_eq!(counts["email"], 7);
        assert_eq!(counts["name"], 5);
        assert_eq!(counts["phone"], 3);
        assert_eq!(counts["card"], 1);
    }

    #[test]
    fn greetings_to_nobody_and_text_without_personal_data_are_left_alone() {
        let mut r = record(
            &[
                (Role::Customer, "Hi Apple, my order 88213 is late"),
                (Role::Agent, "Hi there, sorry about that. Thanks Again!"),
            ],
            "Customer's order 88213 is late.",
            &[],
        );
        r.conversation.metadata.clear();
        let before = r.clone();
        assert!(scrub_record(&mut r).is_empty());
        assert_eq!(r, before);
    }
}
