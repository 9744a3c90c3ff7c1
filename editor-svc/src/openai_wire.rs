//! The OpenAI chat- and text-completions APIs' JSON, in both directions: what the upstream backend sends
//! and reads (`backend::openai`), what the editor's own HTTP API reads and sends (`http`). Only
//! the fields ARF uses or answers; unknown fields are ignored on the way in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What chat and text completions share.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionParams {
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// A string or a list of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
}

/// `POST /chat/completions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub messages: Vec<WireMessage>,
    /// The newer name of `max_tokens` (either is read; `max_tokens` is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// vLLM's extension: the logprobs of the prompt's tokens (0: each token's own), answered as
    /// `prompt_logprobs`. How a reply is scored over the API: the reply is the last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<u32>,
    /// vLLM's chat-template switch: false when the last message is a reply to score rather
    /// than a turn to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    #[serde(flatten)]
    pub params: CompletionParams,
}

/// A non-streamed chat completion's answer, as far as scoring reads it: its usage, and the
/// prompt's logprobs where the server gives them (vLLM: one entry per prompt token, `null`
/// for the first, else `{token id: {"logprob": ..}}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatCompletionOut {
    #[serde(default)]
    pub usage: Option<UsageIn>,
    #[serde(default)]
    pub prompt_logprobs: Option<Vec<Option<std::collections::BTreeMap<String, TokenLogprob>>>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub logprob: f32,
}

/// `POST /completions`, the legacy text API: a prompt continued as it is, no chat template.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// A string, or a list of one string.
    pub prompt: Value,
    /// Read to refuse them: the prompt's logprobs, echo, suffix and best_of are not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    #[serde(flatten)]
    pub params: CompletionParams,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireMessage {
    pub role: String,
    /// A string, or a list of content parts (`{"type": "text", "text": ...}`).
    #[serde(default)]
    pub content: Value,
}

impl WireMessage {
    pub fn text(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: Value::String(content.to_string()),
        }
    }

    /// The message's text: a string, or its text parts joined. `None` for anything else
    /// (images, audio: not served).
    pub fn content_text(&self) -> Option<String> {
        match &self.content {
            Value::String(s) => Some(s.clone()),
            Value::Null => Some(String::new()),
            Value::Array(parts) => parts
                .iter()
                .map(
                    |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => Some(t.as_str()),
                        _ => None,
                    },
                )
                .collect::<Option<Vec<_>>>()
                .map(|texts| texts.concat()),
            _ => None,
        }
    }
}

/// One streamed chunk, as read back (choices may be empty: the usage chunk).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChunkIn {
    #[serde(default)]
    pub choices: Vec<ChunkChoiceIn>,
    #[serde(default)]
    pub usage: Option<UsageIn>,
    /// Some servers report a failure mid-stream as an `error` object.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChunkChoiceIn {
    /// A chat chunk's text.
    #[serde(default)]
    pub delta: DeltaIn,
    /// A text completion chunk's text.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeltaIn {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct UsageIn {
    #[serde(default)]
    pub prompt_tokens: usize,
    #[serde(default)]
    pub completion_tokens: usize,
}

/// Server-sent events read from a byte stream: the `data` of each complete event.
/// Comments, `event:`/`id:` fields and CR/LF variants are handled as the SSE spec says.
#[derive(Debug, Default)]
pub struct SseReader {
    pending: Vec<u8>,
    data: Option<String>,
}

impl SseReader {
    /// Takes more bytes; returns the data of the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(data);
                }
                continue;
            }
            if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            // ":" comments, event:, id:, retry: carry nothing the editor needs.
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_whole_across_chunk_boundaries_and_line_endings() {
        let mut sse = SseReader::default();
        assert!(sse.push(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(sse.push(b": 1}\r\n\r\ndata: [DONE]\n"), vec!["{\"a\": 1}"]);
        assert_eq!(sse.push(b"\n"), vec!["[DONE]"]);
        let mut sse = SseReader::default();
        assert_eq!(
            sse.push(b"event: x\ndata: one\ndata:two\n\n"),
            vec!["one\ntwo"]
        );
    }

    #[test]
    fn message_content_is_a_string_or_text_parts() {
        let m: WireMessage = serde_json::from_str(
            r#"{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content_text().as_deref(), Some("ab"));
        let m: WireMessage =
            serde_json::from_str(r#"{"role": "user", "content": [{"type": "image_url"}]}"#)
                .unwrap();
        assert_eq!(m.content_text(), None);
        assert_eq!(
            WireMessage::text("user", "hi").content_text().as_deref(),
            Some("hi")
        );
    }
}
