//! A GGUF file as a base model: the config from its metadata, the weights dequantized at load
//! under their Hugging Face names, the tokenizer and chat template from `tokenizer.*`.
//!
//! For a Llama, llama.cpp's converter permutes the query and key rows of every head (it rotates
//! interleaved pairs, Hugging Face the two halves of a head); they are permuted back here, as
//! transformers' own GGUF loader does, so the adapters and a merged export are in Hugging Face's
//! convention. A Qwen3 file is not permuted (llama.cpp rotates its halves, as Hugging Face does).

mod export;
mod from_hf;
mod student;
mod tokenizer;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

pub use export::{write_dequantized, write_merged};
pub use student::{GgufQuant, write_gguf};
pub use tokenizer::{GgufTokenizer, tokenizer_from_gguf};

use super::{Architecture, LlamaConfig, ModelError, RopeScaling};

/// The GGUF header (metadata and tensor index); tensors are read on demand.
pub struct GgufFile {
    content: Content,
    file: File,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let mut file = File::open(path)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", path.display())))?;
        let content = Content::read(&mut file).map_err(|e| {
            ModelError::Weights(format!("{}: not a readable GGUF file: {e}", path.display()))
        })?;
        Ok(Self { content, file })
    }

    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn usize_key(&self, key: &str) -> Result<Option<usize>, ModelError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => v.to_u64().map(|n| Some(n as usize)).map_err(|_| {
                ModelError::Config(format!("GGUF metadata {key} is not an unsigned integer"))
            }),
        }
    }

    fn required(&self, key: &str) -> Result<usize, ModelError> {
        self.usize_key(key)?
            .ok_or_else(|| ModelError::Config(format!("GGUF metadata lacks {key}")))
    }

    fn f64_key(&self, key: &str) -> Option<f64> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
    }

    /// The model's architecture, from `general.architecture`.
    pub fn architecture(&self) -> Result<Architecture, ModelError> {
        let arch = self
            .metadata()
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str);
        arch.and_then(Architecture::from_gguf).ok_or_else(|| {
            ModelError::Config(format!(
                "GGUF general.architecture is {arch:?}: the trainer knows {}",
                Architecture::SUPPORTED
            ))
        })
    }

    /// The model's configuration, from the `<architecture>.*` keys; anything this trainer would
    /// compute differently from the file's authors is refused.
    pub fn config(&self) -> Result<LlamaConfig, ModelError> {
        let architecture = self.architecture()?;
        let a = architecture.gguf_name();
        let key = |k: &str| format!("{a}.{k}");
        let hidden_size = self.required(&key("embedding_length"))?;
        let num_attention_heads = self.required(&key("attention.head_count"))?;
        if num_attention_heads == 0 {
            return Err(ModelError::Config(format!(
                "GGUF {a}.attention.head_count is 0"
            )));
        }
        let num_key_value_heads = self
            .usize_key(&key("attention.head_count_kv"))?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ModelError::Config(
                "GGUF head_count is not a multiple of head_count_kv".into(),
            ));
        }
        let head_dim = self
            .usize_key(&key("attention.key_length"))?
            .unwrap_or(hidden_size / num_attention_heads);
        if let Some(rotary) = self
            .usize_key(&key("rope.dimension_count"))?
            .filter(|d| *d != head_dim)
        {
            return Err(ModelError::Config(format!(
                "GGUF rotates {rotary} of {head_dim} dimensions per head: partial rotary embeddings are not supported"
            )));
        }
        let scaling = self
            .metadata()
            .get(&key("rope.scaling.type"))
            .and_then(|v| v.to_string().ok());
        if scaling.is_some_and(|s| s != "none")
            || self.content.tensor_infos.contains_key("rope_freqs.weight")
        {
            return Err(ModelError::Config(
                "GGUF with rope scaling (llama.rope.scaling.type or rope_freqs, as Llama 3.1 files carry): its \
                 parameters are not recoverable from the file; train from the Hugging Face directory instead"
                    .into(),
            ));
        }
        let token_rows = self
            .content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0]);
        let vocab_size = match self.usize_key(&key("vocab_size"))? {
            Some(n) => n,
            None => token_rows
                .ok_or_else(|| ModelError::Weights("GGUF has no token_embd.weight".into()))?,
        };
        Ok(LlamaConfig {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: self.required(&key("feed_forward_length"))?,
            num_hidden_layers: self.required(&key("block_count"))?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: self
                .f64_key(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5),
            rope_theta: self.f64_key(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling: RopeScaling::Default,
            // No output.weight: the embedding matrix is the head too (SmolLM2, Llama 3.2).
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            max_position_embeddings: self.usize_key(&key("context_length"))?.unwrap_or(2048),
        })
    }

    /// Every tensor dequantized (to f32, then `dtype`) under its Hugging Face name.
    pub fn load_all(
        &mut self,
        cfg: &LlamaConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<HashMap<String, Tensor>, ModelError> {
        let names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        let mut out = HashMap::with_capacity(names.len());
        for gguf_name in names {
            let Some(name) = hf_name(&gguf_name) else {
                return Err(ModelError::Weights(format!(
                    "GGUF tensor {gguf_name} has no Hugging Face counterpart"
                )));
            };
            // Dequantized on the CPU one tensor at a time, so the f32 copy never exists whole
            // on the GPU (bf16 there).
            let q = self
                .content
                .tensor(&mut self.file, &gguf_name, &Device::Cpu)?;
            let mut t = q.dequantize(&Device::Cpu)?;
            if let Some(heads) = permuted_heads(cfg, &name) {
                t = halve_rotary_pairs(&t, heads)?;
            }
            out.insert(name, t.to_dtype(dtype)?.to_device(device)?);
        }
        Ok(out)
    }
}

/// The heads of a tensor whose rows llama.cpp's converter permutes (a Llama's query and key
/// projections; nothing of a Qwen3's), by its Hugging Face name.
fn permuted_heads(cfg: &LlamaConfig, hf_name: &str) -> Option<usize> {
    if cfg.architecture != Architecture::Llama {
        None
    } else if hf_name.ends_with("self_attn.q_proj.weight") {
        Some(cfg.num_attention_heads)
    } else if hf_name.ends_with("self_attn.k_proj.weight") {
        Some(cfg.num_key_value_heads)
    } else {
        None
    }
}

/// llama.cpp's names of the whole-model tensors and Hugging Face's.
const MODEL_TENSORS: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// llama.cpp's names of a block's tensors (`blk.N.`) and Hugging Face's (`model.layers.N.`),
/// in the order llama.cpp's converter writes them.
const LAYER_TENSORS: [(&str, &str); 11] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// llama.cpp's tensor names, back to Hugging Face's.
fn hf_name(gguf: &str) -> Option<String> {
    if let Some((_, hf)) = MODEL_TENSORS.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let (layer, part) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, module) = LAYER_TENSORS.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{module}"))
}

/// Hugging Face's tensor names, to llama.cpp's.
fn gguf_name(hf: &str) -> Option<String> {
    if let Some((gguf, _)) = MODEL_TENSORS.iter().find(|(_, h)| *h == hf) {
        return Some(gguf.to_string());
    }
    let (layer, module) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, _) = LAYER_TENSORS.iter().find(|(_, h)| *h == module)?;
    Some(format!("blk.{layer}.{part}"))
}

/// Undoes llama.cpp's permutation of a head's rows: interleaved pairs [a0 b0 a1 b1] back to
/// halves [a0 a1 b0 b1].
fn halve_rotary_pairs(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_names_map_back() {
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("blk.11.attn_output.weight").unwrap(),
            "model.layers.11.self_attn.o_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
        for name in [
            "blk.3.attn_k_norm.weight",
            "output.weight",
            "blk.0.ffn_up.weight",
        ] {
            assert_eq!(gguf_name(&hf_name(name).unwrap()).unwrap(), name);
        }
        assert!(gguf_name("model.layers.0.mlp.act_fn").is_none());
    }

    #[test]
    fn rotary_rows_return_to_halves() {
        // One head, head_dim 4: GGUF rows [a0 b0 a1 b1] -> Hugging Face [a0 a1 b0 b1].
        let gguf = Tensor::new(&[[0f32], [2.], [1.], [3.]], &Device::Cpu).unwrap();
        let hf = halve_rotary_pairs(&gguf, 1).unwrap();
        assert_eq!(
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 1., 2., 3.]
        );
    }
}
