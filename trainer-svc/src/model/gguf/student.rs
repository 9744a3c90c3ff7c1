//! A student trained on a GGUF base, written back as a GGUF file for llama.cpp, Ollama and LM
//! Studio: the merged weights (Hugging Face layout, f32) under llama.cpp's tensor names, the
//! query and key rows permuted back to llama.cpp's convention, quantized as asked, and every
//! metadata key of the base carried over (architecture, tokenizer, chat template): the student
//! tokenizes and chats exactly as its base does in llama.cpp.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{GgufFile, hf_name, permuted_heads};
use crate::model::ModelError;

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

/// Writes `merged_dir` (the trainer's merged student of the GGUF file `base`) as one GGUF file at
/// `out` (written beside it, then renamed: a reader never sees half a file). Every tensor of the
/// base must be in the merged weights with the same shape.
pub fn write_gguf(
    merged_dir: &Path,
    base: &Path,
    quant: GgufQuant,
    out: &Path,
) -> Result<(), ModelError> {
    let file = GgufFile::open(base)?;
    let cfg = file.config()?;
    let weights = merged_dir.join("model.safetensors");
    let merged = candle_core::safetensors::load(&weights, &Device::Cpu)
        .map_err(|e| ModelError::Weights(format!("{}: {e}", weights.display())))?;

    // The base's order (by offset), so the file reads like the base.
    let mut infos: Vec<_> = file.content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let mut tensors = Vec::with_capacity(infos.len());
    for (gguf_name, info) in infos {
        let name = hf_name(gguf_name).ok_or_else(|| {
            ModelError::Weights(format!(
                "GGUF tensor {gguf_name} has no Hugging Face counterpart"
            ))
        })?;
        let mut t = merged
            .get(&name)
            .cloned()
            .ok_or_else(|| ModelError::Weights(format!("{} lacks {name}", weights.display())))?;
        if t.dims() != info.shape.dims() {
            return Err(ModelError::Weights(format!(
                "{name} is {:?} in {}, {:?} in the base",
                t.dims(),
                weights.display(),
                info.shape.dims()
            )));
        }
        if let Some(heads) = permuted_heads(&cfg, &name) {
            t = interleave_rotary_halves(&t, heads)?;
        }
        let dtype = match t.dims() {
            [_, cols] => quant.dtype(*cols),
            _ => GgmlDType::F32,
        };
        tensors.push((gguf_name.clone(), QTensor::quantize(&t, dtype)?));
    }

    let mut metadata: Vec<(String, Value)> = file
        .metadata()
        .iter()
        // This writer aligns tensor data to 32 bytes, llama.cpp's default, whatever the base said.
        .filter(|(k, _)| !matches!(k.as_str(), "general.file_type" | "general.alignment"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
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
