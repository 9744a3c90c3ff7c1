//! What a generation is, in the editor's own terms (no proto, no mistral.rs types): the request,
//! the events of a stream, and the finished result.

use std::time::Duration;

/// Who says a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    /// The role names the wire and the chat templates use.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "system" => Some(Self::System),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: ChatRole, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// How to pick tokens. `temperature` `None` (or 0) is greedy decoding, the only reproducible mode:
/// mistral.rs has one engine-wide random generator and no per-request seed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
}

impl Sampling {
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t == 0.0)
    }
}

/// What a generation continues.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A chat, rendered by the model's chat template (gRPC, `POST /v1/chat/completions`).
    Chat(Vec<ChatMessage>),
    /// Text as it is, for the legacy completions API (`POST /v1/completions`): the tokenizer's
    /// special tokens (a BOS) are added, no template.
    Text(String),
}

impl From<Vec<ChatMessage>> for Prompt {
    fn from(messages: Vec<ChatMessage>) -> Self {
        Self::Chat(messages)
    }
}

/// One generation, validated: ready for the backend.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Strings that end the generation when produced.
    pub stop: Vec<String>,
    /// A JSON schema the output must satisfy (llguidance), or free text.
    pub json_schema: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// From submission to the first generated token (queueing and prefill included).
    pub time_to_first_token: Duration,
    pub total: Duration,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    pub usage: Usage,
    pub timing: Timing,
    /// "stop", "length", ... as mistral.rs reports it.
    pub finish_reason: String,
}

/// What a generation stream yields: text as it is produced, then the whole result once.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Done(Generation),
}
