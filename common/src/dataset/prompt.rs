//! The one summarization prompt: how a conversation is shown to a model that summarizes it.
//! Training (trainer), export (gateway) and evaluation (the student's own summaries) all use
//! this, so the student is asked at evaluation time exactly what it was trained on.

use std::fmt::Write as _;

use super::Conversation;

pub const SUMMARIZE_SYSTEM_PROMPT: &str = "You summarize customer-service conversations. Write a short, factual summary \
in the third person: the customer's issue, what the agent did or said, and the outcome. Use only facts stated in the \
conversation and leave out personal data such as emails, phone numbers and account numbers.";

/// The user message: the conversation as a transcript, one turn per line.
pub fn summarize_user_prompt(conversation: &Conversation) -> String {
    let mut out = format!("Channel: {}\n\n", conversation.channel);
    for turn in &conversation.turns {
        let _ = writeln!(out, "{}: {}", turn.role.as_str(), turn.text.trim());
    }
    out.push_str("\nSummarize this conversation.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Role, Turn};

    #[test]
    fn shows_every_turn_with_its_role() {
        let c = Conversation {
            id: "1".into(),
            channel: "email".into(),
            turns: vec![
                Turn {
                    role: Role::Customer,
                    text: " my bill is wrong ".into(),
                },
                Turn {
                    role: Role::Agent,
                    text: "fixed".into(),
                },
            ],
            metadata: Default::default(),
        };
        let p = summarize_user_prompt(&c);
        assert!(
            p.starts_with("Channel: email\n\ncustomer: my bill is wrong\nagent: fixed\n"),
            "{p}"
        );
    }
}
