//! A student trained on a GGUF base, exported as a Hugging Face directory that the editor
//! (mistral.rs), transformers and this trainer all read: `config.json` in the released layout
//! of its family, the tokenizer rebuilt from the GGUF metadata, the chat template in
//! `tokenizer_config.json`, and the dequantized weights with the adapters folded in.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::{Value, json};

use super::{GgufFile, GgufTokenizer, tokenizer_from_gguf};
use crate::lora::LoraSpec;
use crate::lora::peft::{check_all_folded, fold_adapter, write_json};
use crate::model::{LlamaConfig, ModelError};

/// The weights stay f32: the dequantized values exactly, which the editor may quantize again
/// at load (`--isq`).
pub fn write_merged(
    gguf: &Path,
    adapter: &HashMap<String, Tensor>,
    spec: &LoraSpec,
    out: &Path,
) -> Result<(), ModelError> {
    write_hf_dir(gguf, Some((adapter, spec)), out)
}

/// The GGUF file as a Hugging Face directory, dequantized to f32 and otherwise unchanged: the
/// same model in the layout every loader reads (mistral.rs runs its prompts much faster from
/// f32 safetensors than from Q4_1 on a CPU).
pub fn write_dequantized(gguf: &Path, out: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(|e| crate::lora::peft::io(out, e))?;
    write_hf_dir(gguf, None, out)
}

fn write_hf_dir(
    gguf: &Path,
    adapter: Option<(&HashMap<String, Tensor>, &LoraSpec)>,
    out: &Path,
) -> Result<(), ModelError> {
    let mut file = GgufFile::open(gguf)?;
    let cfg = file.config()?;
    let tok = tokenizer_from_gguf(&file)?;
    let mut tensors = file.load_all(&cfg, DType::F32, &Device::Cpu)?;
    if let Some((adapter, spec)) = adapter {
        let merged = fold_adapter(&mut tensors, adapter, spec)?;
        check_all_folded(merged, adapter)?;
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    write_hf_metadata(&cfg, &tok, out)
}

/// `config.json`, `generation_config.json`, `tokenizer.json`, `tokenizer_config.json`.
pub fn write_hf_metadata(
    cfg: &LlamaConfig,
    tok: &GgufTokenizer,
    out: &Path,
) -> Result<(), ModelError> {
    write_json(&out.join("config.json"), &config_json(cfg, tok))?;
    write_json(
        &out.join("generation_config.json"),
        &json!({"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id}),
    )?;
    write_json(&out.join("tokenizer.json"), &tok.tokenizer_json)?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "model_max_length": cfg.max_position_embeddings,
    });
    if let Some(pad) = &tok.pad_token {
        tc["pad_token"] = Value::String(pad.clone());
    }
    if let Some(template) = &tok.chat_template {
        tc["chat_template"] = Value::String(template.clone());
    }
    write_json(&out.join("tokenizer_config.json"), &tc)
}

fn config_json(cfg: &LlamaConfig, tok: &GgufTokenizer) -> Value {
    json!({
        "architectures": [cfg.architecture.hf_class()],
        "model_type": cfg.architecture.gguf_name(),
        "attention_bias": false,
        "mlp_bias": false,
        "hidden_act": "silu",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": null,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "torch_dtype": "float32",
    })
}
