//! The revision prompt: what the editor model is told.
//!
//! The conversation is numbered by turn so evidence can point at turns; each finding says what
//! is wrong, where, on what evidence, and how its category is fixed. The model is told to change
//! nothing else, and answers in JSON (the output is constrained to the schema in `output.rs`).

use std::fmt::Write as _;

use super::{Evidence, RevisionInput};
use crate::generation::{ChatMessage, ChatRole};

pub const SYSTEM_PROMPT: &str = "You revise summaries of customer-service conversations. \
You are given the conversation, the current summary, and a numbered list of problems found in the summary. \
Rewrite the summary so that every listed problem is fixed, following the instruction for its category. \
Keep everything that is not flagged and change only what each problem needs: delete what is wrong or repeated, \
replace what is wrong with what the conversation says, add what is missing. State only facts supported by the conversation. \
Answer with JSON only: {\"summary\": \"<the revised summary>\"}.";

/// Used when the request carries no instruction for a flagged category.
const GENERIC_INSTRUCTION: &str =
    "Correct the flagged part so that it agrees with the conversation.";

pub fn build_messages(input: &RevisionInput) -> Vec<ChatMessage> {
    let mut user = String::new();
    let channel = if input.channel.is_empty() {
        "unknown"
    } else {
        input.channel.as_str()
    };
    let _ = writeln!(user, "Conversation (channel: {channel}):");
    for (i, turn) in input.turns.iter().enumerate() {
        let _ = writeln!(user, "[{i}] {}: {}", turn.speaker.label(), turn.text.trim());
    }
    let _ = writeln!(user, "\nCurrent summary:\n{}\n", input.summary.trim());
    let _ = writeln!(user, "Problems to fix:");
    for (n, finding) in input.findings.iter().enumerate() {
        let _ = write!(
            user,
            "{}. {} ({} severity)",
            n + 1,
            finding.category_id,
            finding.severity
        );
        match &finding.summary_excerpt {
            Some(excerpt) => {
                let _ = write!(user, " in \"{excerpt}\"");
            }
            None => user.push_str(" in the summary as a whole"),
        }
        if !finding.explanation.trim().is_empty() {
            let _ = write!(user, ": {}", finding.explanation.trim());
        }
        match &finding.evidence {
            Evidence::NoneFound => {
                user.push_str(" Evidence: nothing in the conversation supports it.")
            }
            Evidence::Turn {
                index,
                quote: Some(quote),
            } => {
                let _ = write!(user, " Evidence: turn [{index}] says \"{quote}\".");
            }
            Evidence::Turn { index, quote: None } => {
                let _ = write!(user, " Evidence: turn [{index}].");
            }
            Evidence::Unspecified => {}
        }
        let instruction = input
            .instructions
            .get(&finding.category_id)
            .map(String::as_str)
            .unwrap_or(GENERIC_INSTRUCTION);
        let _ = writeln!(user, " How to fix: {}", instruction.trim());
    }
    user.push_str("\nWrite the revised summary as JSON.");
    vec![
        ChatMessage::new(ChatRole::System, SYSTEM_PROMPT),
        ChatMessage::new(ChatRole::User, user),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::revise::{RevisionFinding, Speaker, Turn};

    #[test]
    fn the_prompt_names_each_finding_its_evidence_and_instruction() {
        let input = RevisionInput {
            channel: "chat".into(),
            turns: vec![
                Turn {
                    speaker: Speaker::Customer,
                    text: "My order 123 never arrived.".into(),
                },
                Turn {
                    speaker: Speaker::Agent,
                    text: "I have issued a refund.".into(),
                },
            ],
            summary: "Customer got a replacement for order 456.".into(),
            findings: vec![
                RevisionFinding {
                    category_id: "hallucinated_fact".into(),
                    severity: "high",
                    summary_excerpt: Some("order 456".into()),
                    span: None,
                    evidence: Evidence::NoneFound,
                    explanation: "The order number is not in the conversation.".into(),
                    rule_fix: None,
                },
                RevisionFinding {
                    category_id: "contradiction".into(),
                    severity: "medium",
                    summary_excerpt: Some("got a replacement".into()),
                    span: None,
                    evidence: Evidence::Turn {
                        index: 1,
                        quote: Some("issued a refund".into()),
                    },
                    explanation: String::new(),
                    rule_fix: None,
                },
            ],
            instructions: BTreeMap::from([(
                "hallucinated_fact".to_string(),
                "Remove facts the conversation does not state.".to_string(),
            )]),
        };
        let messages = build_messages(&input);
        assert_eq!(messages[0].role, ChatRole::System);
        let user = &messages[1].content;
        assert!(
            user.contains("[0] Customer: My order 123 never arrived."),
            "{user}"
        );
        assert!(
            user.contains("1. hallucinated_fact (high severity) in \"order 456\""),
            "{user}"
        );
        assert!(
            user.contains("nothing in the conversation supports it"),
            "{user}"
        );
        assert!(
            user.contains("Remove facts the conversation does not state."),
            "{user}"
        );
        assert!(user.contains("turn [1] says \"issued a refund\""), "{user}");
        assert!(
            user.contains(GENERIC_INSTRUCTION),
            "a category without an instruction gets the generic one"
        );
    }
}
