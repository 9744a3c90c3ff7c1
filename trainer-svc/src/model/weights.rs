//! Base weights from a Hugging Face directory: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::ModelError;

/// The safetensors files of a model directory, in a stable order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| ModelError::Weights(format!("cannot read {}: {e}", index.display())))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", index.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Weights(format!("{} has no weight_map", index.display())))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::Weights(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

/// Every tensor of the model, each converted to `dtype` (norm weights are the caller's business).
pub fn load_all(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut all = HashMap::new();
    for file in weight_files(dir)? {
        if !file.exists() {
            return Err(ModelError::Weights(format!(
                "missing shard {}",
                file.display()
            )));
        }
        // One file at a time, so a sharded 8B model never holds two copies of everything.
        let tensors = candle_core::safetensors::load(&file, device)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", file.display())))?;
        for (name, t) in tensors {
            let t = if t.dtype() == dtype {
                t
            } else {
                t.to_dtype(dtype)?
            };
            all.insert(name, t);
        }
    }
    Ok(all)
}
