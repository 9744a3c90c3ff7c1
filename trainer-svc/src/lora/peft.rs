//! Adapters in PEFT's layout (what `PeftModel.from_pretrained` reads), and merged model
//! directories (`W + alpha/r * B A`) that any Llama loader, mistral.rs included, serves as-is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::LoraSpec;
use crate::model::BaseModel;
use crate::model::ModelError;
use crate::model::llama::Llama;
use crate::model::weights::weight_files;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The fields of `adapter_config.json` that matter here (PEFT writes many more, all defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f32,
    pub target_modules: Vec<String>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub bias: Option<String>,
}

impl AdapterConfig {
    pub fn spec(&self) -> Result<LoraSpec, ModelError> {
        if self.peft_type != "LORA"
            || self.use_dora
            || self.use_rslora
            || self.bias.as_deref().is_some_and(|b| b != "none")
        {
            return Err(ModelError::Weights(format!(
                "only plain LoRA adapters are supported (peft_type {}, use_dora {}, use_rslora {}, bias {:?})",
                self.peft_type, self.use_dora, self.use_rslora, self.bias
            )));
        }
        let target_modules =
            LoraSpec::normalize_modules(&self.target_modules).map_err(ModelError::Weights)?;
        Ok(LoraSpec {
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules,
        })
    }
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
pub fn save_adapter(
    model: &Llama,
    spec: &LoraSpec,
    base_model: &Path,
    dir: &Path,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tensors: HashMap<String, Tensor> = model
        .lora_vars()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join(ADAPTER_WEIGHTS))?;
    // Every field PEFT needs to rebuild the model; the rest take PEFT's defaults.
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.target_modules,
        "base_model_name_or_path": base_model.display().to_string(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": Value::Null,
        "layers_to_transform": Value::Null,
        "layers_pattern": Value::Null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": Value::Null,
    });
    write_json(&dir.join(ADAPTER_CONFIG), &config)
}

/// Reads a PEFT adapter directory: its config and its tensors (f32, on `device`).
pub fn load_adapter(
    dir: &Path,
    device: &Device,
) -> Result<(AdapterConfig, HashMap<String, Tensor>), ModelError> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let config: AdapterConfig = serde_json::from_str(&text)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", path.display())))?;
    let tensors = candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), device)?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()?;
    Ok((config, tensors))
}

/// Files copied from the base model into a merged model directory, when present.
const COPIED: [&str; 7] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
];

/// Writes `out` = the base model with every adapter folded in (`W + scaling * B A`, in W's own
/// dtype): a Hugging Face directory whatever the base was (a directory or a GGUF file).
pub fn write_merged(
    base: &Path,
    adapter: &HashMap<String, Tensor>,
    spec: &LoraSpec,
    out: &Path,
) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    match BaseModel::resolve(base)? {
        BaseModel::HfDir(dir) => write_merged_dir(&dir, adapter, spec, out)?,
        BaseModel::Gguf(file) => crate::model::gguf::write_merged(&file, adapter, spec, out)?,
    }
    Ok(out.to_path_buf())
}

/// Shard by shard with the base's file names, so memory holds one shard at a time.
fn write_merged_dir(
    base_dir: &Path,
    adapter: &HashMap<String, Tensor>,
    spec: &LoraSpec,
    out: &Path,
) -> Result<(), ModelError> {
    let mut merged_count = 0usize;
    for file in weight_files(base_dir)? {
        let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu)?;
        merged_count += fold_adapter(&mut tensors, adapter, spec)?;
        let name = file
            .file_name()
            .ok_or_else(|| ModelError::Weights(format!("bad path {}", file.display())))?;
        candle_core::safetensors::save(&tensors, out.join(name))?;
    }
    check_all_folded(merged_count, adapter)?;
    for f in COPIED {
        let src = base_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, out.join(f)).map_err(|e| io(&src, e))?;
        }
    }
    Ok(())
}

/// Folds every adapter whose base weight is in `tensors` into it; returns how many.
pub fn fold_adapter(
    tensors: &mut HashMap<String, Tensor>,
    adapter: &HashMap<String, Tensor>,
    spec: &LoraSpec,
) -> Result<usize, ModelError> {
    let device = Device::Cpu;
    let mut merged_count = 0usize;
    for (name, w) in tensors.iter_mut() {
        let Some(stem) = name.strip_suffix(".weight") else {
            continue;
        };
        let a = adapter.get(&format!("base_model.model.{stem}.lora_A.weight"));
        let b = adapter.get(&format!("base_model.model.{stem}.lora_B.weight"));
        if let (Some(a), Some(b)) = (a, b) {
            let delta = (b.to_device(&device)?.matmul(&a.to_device(&device)?)? * spec.scaling())?;
            *w = (w.to_device(&device)?.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
            merged_count += 1;
        }
    }
    Ok(merged_count)
}

/// Every A/B pair must have found its base weight.
pub fn check_all_folded(
    merged_count: usize,
    adapter: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    if merged_count * 2 != adapter.len() {
        return Err(ModelError::Weights(format!(
            "merged {merged_count} layers but the adapter has {} tensors: names do not match the base",
            adapter.len()
        )));
    }
    Ok(())
}

pub fn write_json(path: &Path, value: &Value) -> Result<(), ModelError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ModelError::Weights(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| io(path, e))
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Weights(format!("{}: {e}", path.display()))
}
