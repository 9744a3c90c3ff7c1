//! The greedy summary request the editor's benches send for a TweetSumm conversation.

use editor_svc::generation::{ChatMessage, ChatRole, GenerationRequest, Prompt, Sampling};

/// A two-sentence summary of `conversation` (its turns as `role: text` lines), greedy, at most
/// `max_tokens`.
pub fn summary_request(conversation: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: Prompt::Chat(vec![ChatMessage::new(
            ChatRole::User,
            format!(
                "Summarize this customer-service conversation in two sentences.\n\n{conversation}"
            ),
        )]),
        max_tokens,
        sampling: Sampling::default(),
        stop: Vec::new(),
        json_schema: None,
    }
}
