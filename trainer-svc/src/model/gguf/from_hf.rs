//! The GGUF metadata of a Hugging Face model folder, as llama.cpp's `convert_hf_to_gguf.py`
//! writes it for the families the trainer knows: the `<architecture>.*` hyperparameters, the
//! byte-level BPE tokenizer (`tokenizer.ggml.*`, its pre-tokenizer under the name llama.cpp gives
//! it), the chat template, and for Llama 3.1's rope scaling the `rope_freqs` factors llama.cpp
//! divides its frequencies by. A student of a Hugging Face base leaves ARF as GGUF through this
//! (a student of a GGUF base carries its base's metadata instead).

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::Value as Json;

use super::tokenizer::SPLIT_REGEX as QWEN2_SPLIT;
use crate::model::{LlamaConfig, ModelError, RopeScaling};

/// Llama 3's split rule in its tokenizer.json (numbers in groups of up to three digits).
const LLAMA3_SPLIT: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// llama.cpp's token types (`gguf.TokenType`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The metadata of the model in `dir` (config.json, tokenizer.json, tokenizer_config.json or
/// chat_template.jinja), every key but `general.file_type`.
pub(super) fn metadata(dir: &Path, cfg: &LlamaConfig) -> Result<Vec<(String, Value)>, ModelError> {
    let a = cfg.architecture.gguf_name();
    let u32_of = |n: usize| Value::U32(n as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (
            "general.name".into(),
            Value::String(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ),
    ];
    for (key, value) in [
        ("block_count", u32_of(cfg.num_hidden_layers)),
        ("context_length", u32_of(cfg.max_position_embeddings)),
        ("embedding_length", u32_of(cfg.hidden_size)),
        ("feed_forward_length", u32_of(cfg.intermediate_size)),
        ("attention.head_count", u32_of(cfg.num_attention_heads)),
        ("attention.head_count_kv", u32_of(cfg.num_key_value_heads)),
        ("attention.key_length", u32_of(cfg.head_dim)),
        ("attention.value_length", u32_of(cfg.head_dim)),
        ("rope.dimension_count", u32_of(cfg.head_dim)),
        ("rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("vocab_size", u32_of(cfg.vocab_size)),
    ] {
        md.push((format!("{a}.{key}"), value));
    }
    md.extend(tokenizer_metadata(dir, cfg.vocab_size)?);
    Ok(md)
}

/// Llama 3.1's rope scaling as llama.cpp carries it: one factor per rotated pair, by which it
/// divides that pair's frequency (`rope_freqs.weight`, computed as `convert_hf_to_gguf.py` does
/// from the config's factors). `None` for plain rope.
pub(super) fn rope_factors(cfg: &LlamaConfig) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings: old_context,
    } = cfg.rope_scaling
    else {
        return None;
    };
    let (low_wavelen, high_wavelen) = (
        old_context / low_freq_factor,
        old_context / high_freq_factor,
    );
    let factors = (0..cfg.head_dim / 2)
        .map(|i| {
            let freq = 1.0 / cfg.rope_theta.powf((2 * i) as f64 / cfg.head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect();
    Some(factors)
}

fn read_json(path: &Path) -> Result<Json, ModelError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// `tokenizer.ggml.*` and the chat template, from the folder's tokenizer files; `vocab_size`
/// rows in all (a model may have more embedding rows than tokens: the rest are unused).
fn tokenizer_metadata(dir: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>, ModelError> {
    let tokenizer = read_json(&dir.join("tokenizer.json"))?;
    let config_path = dir.join("tokenizer_config.json");
    let config = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        Json::Null
    };
    let err =
        |m: String| ModelError::Config(format!("{}: {m}", dir.join("tokenizer.json").display()));
    let model = &tokenizer["model"];
    if model["type"] != "BPE" {
        return Err(err(format!(
            "a {} tokenizer; GGUF export knows byte-level BPE (Llama 3, Qwen3, SmolLM2)",
            model["type"]
        )));
    }
    let pre = pre_tokenizer_name(&tokenizer["pre_tokenizer"]).ok_or_else(|| {
        err(
            "its pre-tokenizer is none llama.cpp has a name for (Llama 3's, Qwen2's, SmolLM's or GPT-2's \
             split); convert this student with llama.cpp's convert_hf_to_gguf.py"
                .into(),
        )
    })?;

    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: u64, text: &str, kind: i32| -> Result<(), ModelError> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            err(format!(
                "token id {id} ({text:?}) is past the model's {vocab_size} rows"
            ))
        })?;
        *slot = Some((text.to_string(), kind));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("vocab {text:?} has no id")))?;
        place(id, text, NORMAL)?;
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(err(format!("added token {added} lacks an id or content")));
        };
        let kind = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(id, text, kind)?;
    }
    let (texts, kinds): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (text, kind) = t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED));
            (Value::String(text), Value::I32(kind))
        })
        .unzip();
    let id_of = |text: &str| -> Option<u32> {
        texts
            .iter()
            .position(|t| matches!(t, Value::String(s) if s == text))
            .map(|i| i as u32)
    };
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) => match (
                pair.first().and_then(Json::as_str),
                pair.get(1).and_then(Json::as_str),
            ) {
                (Some(a), Some(b)) => Ok(Value::String(format!("{a} {b}"))),
                _ => Err(err(format!("merge {m} is not a pair"))),
            },
            _ => Err(err(format!("merge {m} is not a pair"))),
        })
        .collect::<Result<_, _>>()?;

    let mut md: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(adds_bos(&tokenizer, &config)),
        ),
    ];
    // tokenizer_config.json names the special tokens (a string or {"content": ...}).
    for (field, key) in [
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("pad_token", "padding_token_id"),
        ("unk_token", "unknown_token_id"),
    ] {
        let text = config[field]
            .as_str()
            .or_else(|| config[field]["content"].as_str());
        if let Some(id) = text.and_then(id_of) {
            md.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    if !md.iter().any(|(k, _)| k == "tokenizer.ggml.eos_token_id") {
        return Err(ModelError::Config(format!(
            "{} names no eos_token that is a token: llama.cpp would never stop",
            config_path.display()
        )));
    }
    md.push(("tokenizer.ggml.tokens".into(), Value::Array(texts)));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(kinds)));
    let jinja = dir.join("chat_template.jinja");
    let template = match config["chat_template"].as_str() {
        Some(t) => Some(t.to_string()),
        None if jinja.is_file() => Some(
            std::fs::read_to_string(&jinja)
                .map_err(|e| ModelError::Config(format!("{}: {e}", jinja.display())))?,
        ),
        None => None,
    };
    if let Some(template) = template {
        md.push(("tokenizer.chat_template".into(), Value::String(template)));
    }
    Ok(md)
}

/// Whether the tokenizer puts a beginning-of-sequence token in front of a text: its config's
/// `add_bos_token`, else whether its post-processor's template starts with one (Llama 3's).
fn adds_bos(tokenizer: &Json, config: &Json) -> bool {
    if let Some(b) = config["add_bos_token"].as_bool() {
        return b;
    }
    let post = &tokenizer["post_processor"];
    let processors: Vec<&Json> = match post["type"].as_str() {
        Some("Sequence") => post["processors"]
            .as_array()
            .into_iter()
            .flatten()
            .collect(),
        _ => vec![post],
    };
    processors
        .iter()
        .any(|p| p["type"] == "TemplateProcessing" && p["single"][0]["SpecialToken"].is_object())
}

/// llama.cpp's name for the pre-tokenizer of a tokenizer.json (its `pre_tokenizer`), from its
/// split rules: llama.cpp splits text with its own rules per name, so only rules it has a name
/// for can be written.
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let parts: Vec<&Json> = match pre["type"].as_str()? {
        "Sequence" => pre["pretokenizers"].as_array()?.iter().collect(),
        _ => vec![pre],
    };
    let byte_level = |p: &Json| p["type"] == "ByteLevel";
    // A ByteLevel step splits by GPT-2's rule itself unless told not to.
    let splits = |p: &Json| byte_level(p) && p["use_regex"] != false;
    match parts.as_slice() {
        [split, last] if split["type"] == "Split" && byte_level(last) && !splits(last) => {
            match split["pattern"]["Regex"].as_str()? {
                LLAMA3_SPLIT => Some("llama-bpe"),
                QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        [digits, last]
            if digits["type"] == "Digits"
                && digits["individual_digits"] == true
                && splits(last) =>
        {
            Some("smollm")
        }
        [only] if splits(only) => Some("gpt-2"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pre_tokenizers_get_llama_cpp_names() {
        let split = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            ]})
        };
        assert_eq!(pre_tokenizer_name(&split(LLAMA3_SPLIT)), Some("llama-bpe"));
        assert_eq!(pre_tokenizer_name(&split(QWEN2_SPLIT)), Some("qwen2"));
        assert_eq!(pre_tokenizer_name(&split("\\s+")), None);
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        ]});
        assert_eq!(pre_tokenizer_name(&smollm), Some("smollm"));
        let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true});
        assert_eq!(pre_tokenizer_name(&gpt2), Some("gpt-2"));
        assert_eq!(pre_tokenizer_name(&json!({"type": "Metaspace"})), None);
    }

    #[test]
    fn llama3_rope_factors_are_llama_cpp_s() {
        // The tiny fixture's scaling (make_fixtures.py): head_dim 8, theta 1e4, factor 8, low 1,
        // high 4, original context 64: wavelengths 6.3, 63, 628, 6283 against 64 and 16.
        let cfg = crate::model::LlamaConfig::from_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama"),
        )
        .unwrap();
        let f = rope_factors(&cfg).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0, "a short wavelength is kept");
        assert!(f[1] > 1.0 && f[1] < 8.0, "one smoothed: {f:?}");
        assert_eq!(
            &f[2..],
            &[8.0, 8.0],
            "long wavelengths divided by the factor"
        );
    }
}
