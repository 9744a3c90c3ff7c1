//! Training examples as the student will see them: rendered with the model's own chat template
//! (system + user = the conversation, assistant = the summary), tokenized with its tokenizer,
//! with the loss on the assistant's tokens and its end-of-turn token only.

use std::path::Path;
use std::str::FromStr as _;

use arf_common::dataset::{Conversation, SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
use minijinja::{Environment, context};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::TrainError;
use crate::model::BaseModel;

/// One (conversation -> summary) pair to learn.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub conversation: Conversation,
    pub summary: String,
}

/// The chat messages for a conversation: the workspace's one summarization prompt, so the
/// student is served exactly what it was trained on.
pub fn prompt_messages(conversation: &Conversation) -> Vec<(&'static str, String)> {
    vec![
        ("system", SUMMARIZE_SYSTEM_PROMPT.to_string()),
        ("user", summarize_user_prompt(conversation)),
    ]
}

/// The conversation with only its first `keep` characters of turn text (later turns dropped,
/// the last kept one cut): truncation from the conversation side, instructions intact.
fn truncated(conversation: &Conversation, mut keep: usize) -> Conversation {
    let mut out = conversation.clone();
    out.turns.clear();
    for turn in &conversation.turns {
        if keep == 0 {
            break;
        }
        let mut t = turn.clone();
        t.text = cut(&t.text, keep);
        keep -= t.text.len();
        out.turns.push(t);
    }
    out
}

/// An example ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// Index of the first assistant token: positions `target_start - 1 ..= len - 2` predict
    /// the targets `ids[target_start..]`.
    pub target_start: usize,
    /// The conversation (or, in the worst case, the summary) was cut to fit.
    pub truncated: bool,
}

impl Encoded {
    pub fn num_targets(&self) -> usize {
        self.ids.len() - self.target_start
    }
}

/// The model's tokenizer and chat template.
pub struct ChatFormat {
    tokenizer: Tokenizer,
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    pub pad_id: u32,
}

impl ChatFormat {
    /// The base model's tokenizer and template: a directory's files, or a GGUF file's metadata.
    pub fn for_base(path: &Path) -> Result<Self, TrainError> {
        match BaseModel::resolve(path)? {
            BaseModel::HfDir(dir) => Self::from_dir(&dir),
            BaseModel::Gguf(file) => Self::from_gguf(&file),
        }
    }

    /// Reads `tokenizer.json` and the template from `tokenizer_config.json` (`chat_template`,
    /// as Llama 3.1 ships it) or `chat_template.jinja` (as transformers 5 writes it).
    fn from_dir(dir: &Path) -> Result<Self, TrainError> {
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| {
            TrainError::Data(format!("{}: {e}", dir.join("tokenizer.json").display()))
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| TrainError::Data(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => Value::Null,
        };
        let token = |key: &str| match cfg.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let template = match cfg.get("chat_template").and_then(Value::as_str) {
            Some(t) => t.to_string(),
            None => std::fs::read_to_string(dir.join("chat_template.jinja")).map_err(|_| {
                TrainError::Data(format!(
                    "{} has no chat template (tokenizer_config.json chat_template or chat_template.jinja)",
                    dir.display()
                ))
            })?,
        };
        Self::new(
            tokenizer,
            template,
            token("bos_token"),
            token("eos_token"),
            &token("pad_token"),
        )
    }

    /// The tokenizer rebuilt from `tokenizer.ggml.*` as mistral.rs builds it, the template from
    /// `tokenizer.chat_template`.
    fn from_gguf(file: &Path) -> Result<Self, TrainError> {
        let gguf = crate::model::gguf::GgufFile::open(file)?;
        let tok = crate::model::gguf::tokenizer_from_gguf(&gguf)?;
        let tokenizer = Tokenizer::from_str(&tok.tokenizer_json.to_string())
            .map_err(|e| TrainError::Data(format!("{}: tokenizer: {e}", file.display())))?;
        let template = tok.chat_template.ok_or_else(|| {
            TrainError::Data(format!("{} has no tokenizer.chat_template", file.display()))
        })?;
        Self::new(
            tokenizer,
            template,
            tok.bos_token.unwrap_or_default(),
            tok.eos_token,
            &tok.pad_token.unwrap_or_default(),
        )
    }

    fn new(
        tokenizer: Tokenizer,
        template: String,
        bos_token: String,
        eos_token: String,
        pad_token: &str,
    ) -> Result<Self, TrainError> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", template)
            .map_err(|e| TrainError::Data(format!("chat template: {e}")))?;
        let pad = [pad_token, eos_token.as_str()]
            .into_iter()
            .find_map(|t| tokenizer.token_to_id(t));
        Ok(Self {
            tokenizer,
            env,
            bos_token,
            eos_token,
            pad_id: pad.unwrap_or(0),
        })
    }

    /// The template applied to `(role, content)` messages.
    pub fn render(
        &self,
        messages: &[(&str, String)],
        add_generation_prompt: bool,
    ) -> Result<String, TrainError> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| TrainError::Data(e.to_string()))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| TrainError::Data(format!("chat template: {e}")))
    }

    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        // Special tokens are written by the template itself, so none are added here.
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TrainError::Data(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Renders and tokenizes one example, cutting the conversation's end until it fits in
    /// `max_len` tokens (the summary is cut only if even an empty conversation does not fit).
    pub fn encode(&self, example: &Example, max_len: usize) -> Result<Encoded, TrainError> {
        let total_chars: usize = example
            .conversation
            .turns
            .iter()
            .map(|t| t.text.len())
            .sum();
        let mut keep_chars = total_chars;
        loop {
            let mut messages = prompt_messages(&truncated(&example.conversation, keep_chars));
            let prompt = self.render(&messages, true)?;
            messages.push(("assistant", example.summary.clone()));
            let full = self.render(&messages, false)?;
            let completion = full.strip_prefix(&prompt).ok_or_else(|| {
                TrainError::Data(
                    "the chat template's generation prompt is not a prefix of the full chat".into(),
                )
            })?;
            let mut ids = self.encode_text(&prompt)?;
            let target_start = ids.len();
            ids.extend(self.encode_text(completion)?);
            if ids.len() <= max_len {
                return Ok(Encoded {
                    ids,
                    target_start,
                    truncated: keep_chars < total_chars,
                });
            }
            if keep_chars == 0 {
                // Even without the conversation it does not fit: keep the prompt and as much
                // of the summary as fits (at least one target token).
                let end = max_len.max(target_start + 1);
                ids.truncate(end);
                return Ok(Encoded {
                    ids,
                    target_start,
                    truncated: true,
                });
            }
            // Cut about as many characters as there are excess tokens (x4), then check again.
            let excess = ids.len() - max_len;
            keep_chars = keep_chars.saturating_sub((excess * 4).max(1));
        }
    }
}

/// The first `n` bytes of `s`, backed off to a character boundary.
fn cut(s: &str, mut n: usize) -> String {
    n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    s[..n].to_string()
}
