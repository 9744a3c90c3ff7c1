//! The dataset model: conversations with their teacher summaries, and a streaming JSONL reader.
//!
//! One JSON object per line, the shape of `shared/data/tweetsumm/*.jsonl`:
//! `{id, channel, turns: [{role, text}], references?, summary?, labels?, injections?, metadata?}`.

mod jsonl;
mod prompt;
mod record;
mod wire;

pub use jsonl::{
    BadRow, JsonlReader, MAX_LINE_BYTES, OnBadRow, read_jsonl_file, read_jsonl_opened,
    stream_jsonl, stream_jsonl_file,
};
pub use prompt::{SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
pub use record::{Conversation, Record, Role, Turn};
pub use wire::{conversation_from_wire, conversation_to_wire, role_from_wire, role_to_wire};
