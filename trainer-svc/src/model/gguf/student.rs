//! A student written as a GGUF file for llama.cpp, Ollama and LM Studio: the merged weights
//! (Hugging Face layout, f32) under llama.cpp's tensor names, a Llama's query and key rows
//! permuted back to llama.cpp's convention, quantized as asked. A student of a GGUF base carries
//! every metadata key of its base over (architecture, tokenizer, chat template): it tokenizes and
//! chats exactly as its base does in llama.cpp. A student of a Hugging Face folder gets the
//! metadata llama.cpp's converter would write for it (`from_hf`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{GgufFile, LAYER_TENSORS, from_hf, gguf_name, hf_name, permuted_heads};
use crate::model::{BaseModel, LlamaConfig, ModelError};

/// The weights' encoding in the written file. Norms (one-dimensional) stay f32, as llama.cpp's
/// own converter leaves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufQuant {
    F16,
    Q8_0,
    /// Q4_K where a row is a whole number of 256-value super-blocks; elsewhere Q5_0, as
    /// llama.cpp's quantizer falls back (SmolLM2's 576-wide rows: all but `ffn_down`).
    Q4K,
}

impl GgufQuant {
    pub const NAMES: &'static str = "f16, q8_0 or q4_k";

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f16" => Some(Self::F16),
            "q8_0" => Some(Self::Q8_0),
            "q4_k" | "q4_k_m" => Some(Self::Q4K),
            _ => None,
        }
    }

    /// The type a matrix with rows of `cols` values is written in.
    fn dtype(self, cols: usize) -> GgmlDType {
        let wanted = match self {
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
        };
        [wanted, GgmlDType::Q5_0, GgmlDType::F16]
            .into_iter()
            .find(|d| cols.is_multiple_of(d.block_size()))
            .unwrap_or(GgmlDType::F32)
    }

    /// `general.file_type`, llama.cpp's `llama_ftype`: MOSTLY_F16 1, MOSTLY_Q8_0 7,
    /// MOSTLY_Q4_K_M 15.
    fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4K => 15,
        }
    }
}

/// Writes `merged_dir` (the trainer's merged student of `base`) as one GGUF file at `out`
/// (written beside it, then renamed: a reader never sees half a file). A GGUF base gives its
/// metadata and tensor order, and every tensor of it must be in the merged weights with the same
/// shape; for a Hugging Face base the metadata comes from the merged folder's own config and
/// tokenizer files, as llama.cpp's converter would write them (`from_hf`).
pub fn write_gguf(
    merged_dir: &Path,
    base: &Path,
    quant: GgufQuant,
    out: &Path,
) -> Result<(), ModelError> {
    let weights = merged_dir.join("model.safetensors");
    let merged = candle_core::safetensors::load(&weights, &Device::Cpu)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", weights.display())))?;
    let layout = match BaseModel::resolve(base)? {
        BaseModel::Gguf(file) => Layout::of_gguf(&GgufFile::open(&file)?)?,
        BaseModel::HfDir(_) => Layout::of_hf(merged_dir, &merged)?,
    };
    let cfg = &layout.cfg;

    let mut tensors = Vec::with_capacity(layout.tensors.len() + 1);
    for (gguf_name, shape) in &layout.tensors {
        let name = hf_name(gguf_name).ok_or_else(|| {
            ModelError::Weights(format!(
                "GGUF tensor {gguf_name} has no Hugging Face counterpart"
            ))
        })?;
        let mut t = merged
            .get(&name)
            .cloned()
            .ok_or_else(|| ModelError::Weights(format!("{} lacks {name}", weights.display())))?;
        if let Some(shape) = shape.as_ref().filter(|s| t.dims() != s.as_slice()) {
            return Err(ModelError::Weights(format!(
                "{name} is {:?} in {}, {shape:?} in the base",
                t.dims(),
                weights.display(),
            )));
        }
        if let Some(heads) = permuted_heads(cfg, &name) {
            t = interleave_rotary_halves(&t, heads)?;
        }
        let dtype = match t.dims() {
            [_, cols] => quant.dtype(*cols),
            _ => GgmlDType::F32,
        };
        tensors.push((gguf_name.clone(), QTensor::quantize(&t, dtype)?));
    }
    if let Some(factors) = layout.rope_factors {
        let t = Tensor::new(factors, &Device::Cpu)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }

    let mut metadata = layout.metadata;
    metadata.push(("general.file_type".into(), Value::U32(quant.file_type())));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));

    let partial = out.with_extension("gguf.partial");
    let io = |e: std::io::Error| crate::lora::peft::io(&partial, e);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&partial).map_err(io)?);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut w, &metadata, &tensors)?;
    use std::io::Write as _;
    w.flush().map_err(io)?;
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    std::fs::rename(&partial, out).map_err(|e| crate::lora::peft::io(out, e))
}

/// What a student's GGUF file holds besides its weights' values.
struct Layout {
    cfg: LlamaConfig,
    metadata: Vec<(String, Value)>,
    /// The tensors by llama.cpp's name, in the order written, with the shape the base has
    /// (where the base is a GGUF file).
    tensors: Vec<(String, Option<Vec<usize>>)>,
    /// Llama 3.1's rope scaling as llama.cpp's `rope_freqs.weight`.
    rope_factors: Option<Vec<f32>>,
}

impl Layout {
    /// A GGUF base's metadata (its architecture, tokenizer and chat template) and tensor order.
    fn of_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let mut infos: Vec<_> = file.content.tensor_infos.iter().collect();
        infos.sort_by_key(|(_, info)| info.offset);
        let metadata = file
            .metadata()
            .iter()
            // Written again: the file type asked for, and 32-byte alignment (llama.cpp's default,
            // which this writer uses whatever the base said).
            .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.alignment"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            cfg: file.config()?,
            metadata,
            tensors: infos
                .into_iter()
                .map(|(name, info)| (name.clone(), Some(info.shape.dims().to_vec())))
                .collect(),
            rope_factors: None,
        })
    }

    /// A Hugging Face folder's metadata, from its files, and its tensors in llama.cpp's order:
    /// the embeddings, each block's, the final norm, the head.
    fn of_hf(dir: &Path, weights: &HashMap<String, Tensor>) -> Result<Self, ModelError> {
        let cfg = LlamaConfig::from_dir(dir)?;
        let mut names = Vec::with_capacity(weights.len());
        for name in weights.keys() {
            let gguf = gguf_name(name).ok_or_else(|| {
                ModelError::Weights(format!("{name} has no llama.cpp counterpart"))
            })?;
            names.push(gguf);
        }
        names.sort_by_key(|n| tensor_order(n));
        Ok(Self {
            metadata: from_hf::metadata(dir, &cfg)?,
            rope_factors: from_hf::rope_factors(&cfg),
            tensors: names.into_iter().map(|n| (n, None)).collect(),
            cfg,
        })
    }
}

/// Where llama.cpp's converter puts a tensor: embeddings first, then block by block (each in
/// `LAYER_TENSORS` order), the final norm and the head last.
fn tensor_order(gguf: &str) -> (usize, usize, usize) {
    if let Some((layer, part)) = gguf.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        let layer = layer.parse().unwrap_or(usize::MAX);
        let part = LAYER_TENSORS.iter().position(|(p, _)| *p == part);
        return (1, layer, part.unwrap_or(usize::MAX));
    }
    match gguf {
        "token_embd.weight" => (0, 0, 0),
        "output_norm.weight" => (2, 0, 0),
        _ => (3, 0, 0),
    }
}

/// llama.cpp's permutation of a head's query or key rows: halves [a0 a1 b0 b1] to interleaved
/// pairs [a0 b0 a1 b1] (the inverse of `halve_rotary_pairs`).
fn interleave_rotary_halves(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotary_rows_go_back_to_pairs() {
        let hf = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((8, 2))
            .unwrap();
        let gguf = interleave_rotary_halves(&hf, 2).unwrap();
        let back = super::super::halve_rotary_pairs(&gguf, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
        // Head 0's rows [0 1 2 3] become [0 2 1 3].
        assert_eq!(gguf.get(1).unwrap().to_vec1::<f32>().unwrap(), vec![4., 5.]);
    }

    #[test]
    fn rows_that_do_not_fit_a_super_block_fall_back_as_llama_cpp_does() {
        assert_eq!(GgufQuant::Q4K.dtype(1536), GgmlDType::Q4K);
        assert_eq!(GgufQuant::Q4K.dtype(576), GgmlDType::Q5_0);
        assert_eq!(GgufQuant::Q8_0.dtype(576), GgmlDType::Q8_0);
        assert_eq!(GgufQuant::F16.dtype(3), GgmlDType::F16);
        assert_eq!(GgufQuant::parse("Q4_K_M"), Some(GgufQuant::Q4K));
        assert_eq!(GgufQuant::parse("q3"), None);
    }
}
