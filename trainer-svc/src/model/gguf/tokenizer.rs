//! The tokenizer inside a GGUF file (`tokenizer.ggml.*`), rebuilt as a Hugging Face
//! `tokenizer.json` the way mistral.rs 0.8.1 builds it (`gguf/gguf_tokenizer.rs`), so the
//! student is trained on the token ids the editor will later serve it with: byte-level BPE
//! (`gpt2`) with the split regex mistral.rs uses, and every token whose type is not "normal"
//! added as a special token.
//!
//! It is built as JSON, not through the tokenizers builder API, because the merged export must
//! write exactly this file anyway.

use candle_core::quantized::gguf_file::Value;
use serde_json::{Value as Json, json};

use super::GgufFile;
use crate::model::ModelError;

/// mistral.rs's pre-tokenizer split for every `gpt2` GGUF tokenizer.
pub(super) const SPLIT_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// llama.cpp's "normal" token type; every other type is a special (control, user-defined) token.
const NORMAL_TOKEN: i32 = 1;

/// What a GGUF file says about its tokens.
pub struct GgufTokenizer {
    /// A complete `tokenizer.json`.
    pub tokenizer_json: Json,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: String,
    pub pad_token: Option<String>,
    pub bos_id: Option<u32>,
    pub eos_id: u32,
}

pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<GgufTokenizer, ModelError> {
    let md = gguf.metadata();
    let err = |m: String| ModelError::Config(format!("GGUF tokenizer: {m}"));
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if model != Some("gpt2") {
        return Err(err(format!(
            "tokenizer.ggml.model is {model:?}; only byte-level BPE (gpt2, as Llama 3 and SmolLM2 use) is supported"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>, ModelError> {
        let values = md
            .get(key)
            .ok_or_else(|| err(format!("{key} is missing")))?;
        let list = values
            .to_vec()
            .map_err(|_| err(format!("{key} is not an array")))?;
        list.iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| err(format!("{key} holds a non-string")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type").map(Value::to_vec) {
        Some(Ok(list)) => list
            .iter()
            .map(|v| v.to_i32().unwrap_or(NORMAL_TOKEN))
            .collect(),
        _ => Vec::new(),
    };
    let id = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
    let token_of = |i: u32| {
        tokens
            .get(i as usize)
            .cloned()
            .ok_or_else(|| err(format!("token id {i} is out of range")))
    };
    let eos_id = id("tokenizer.ggml.eos_token_id")
        .ok_or_else(|| err("tokenizer.ggml.eos_token_id is missing".into()))?;
    let bos_id = id("tokenizer.ggml.bos_token_id");
    let unk_id = id("tokenizer.ggml.unknown_token_id");
    let pad_id = id("tokenizer.ggml.padding_token_id");

    let vocab: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let merges: Vec<Json> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| json!([a, b]))
                .ok_or_else(|| err(format!("merge {m:?} is not a pair")))
        })
        .collect::<Result<_, _>>()?;
    // Special tokens: every non-normal type (when the types are given), and bos, eos, unk.
    let mut special: Vec<u32> = if types.len() == tokens.len() {
        (0..tokens.len() as u32)
            .filter(|&i| types[i as usize] != NORMAL_TOKEN)
            .collect()
    } else {
        Vec::new()
    };
    special.extend([bos_id, Some(eos_id), unk_id].into_iter().flatten());
    special.sort_unstable();
    special.dedup();
    let added: Vec<Json> = special
        .iter()
        .map(|&i| {
            Ok(json!({"id": i, "content": token_of(i)?, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true}))
        })
        .collect::<Result<_, ModelError>>()?;
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false});
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_REGEX}, "behavior": "Isolated", "invert": false},
            byte_level.clone(),
        ]},
        "post_processor": byte_level.clone(),
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk_id.map(token_of).transpose()?,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    Ok(GgufTokenizer {
        tokenizer_json,
        chat_template: md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned(),
        bos_token: bos_id.map(token_of).transpose()?,
        eos_token: token_of(eos_id)?,
        pad_token: pad_id.map(token_of).transpose()?,
        bos_id,
        eos_id,
    })
}
