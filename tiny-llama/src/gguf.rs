//! The tiny Llama as one GGUF file, the other format the editor loads: the same vocabulary,
//! chat template and seeded weights as the Hugging Face layout, in llama.cpp's naming and
//! quantized (Q8_0, the usual choice for a 70B editor that must fit one GPU, or F32).
//!
//! The tokenizer travels inside the file (`tokenizer.ggml.*`, model `gpt2`, i.e. byte-level
//! BPE), as llama.cpp's converter writes it for Llama 3. The query and key projections are
//! permuted the way that converter permutes them (llama.cpp applies rotary embeddings to
//! interleaved pairs, Hugging Face to the two halves of each head). Llama 3.1's `llama3`
//! rope scaling is left out: mistral.rs' GGUF Llama does not read it, and the weights are
//! random anyway.

use std::path::Path;

use anyhow::{Context as _, ensure};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{
    BEGIN_OF_TEXT, CHAT_TEMPLATE, EOT, SPECIALS, TinyLlamaSpec, Vocabulary, random_weights,
};

/// Metadata key that marks a GGUF file written here: random weights, meaningless output.
pub const RANDOM_WEIGHTS_KEY: &str = "arf.random_weights";

/// llama.cpp's token types: 1 normal, 3 control (the special tokens).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;

/// Writes the tiny Llama of `spec` as a GGUF file at `path`, its projections stored as
/// `dtype` (Q8_0 or F32; norms stay F32). Q8_0 needs every row length to be a multiple of 32.
pub fn write_tiny_llama_gguf(
    path: &Path,
    spec: &TinyLlamaSpec,
    dtype: GgmlDType,
) -> anyhow::Result<()> {
    spec.validate()?;
    ensure!(
        spec.family == crate::TinyFamily::Llama,
        "the tiny GGUF is written for a Llama only"
    );
    ensure!(
        matches!(dtype, GgmlDType::Q8_0 | GgmlDType::F32),
        "the tiny GGUF is written as Q8_0 or F32, not {dtype:?}"
    );
    let vocab = Vocabulary::build();
    let metadata = metadata(spec, &vocab, dtype);
    let mut tensors = Vec::new();
    for (name, shape, values) in random_weights(spec, vocab.size()) {
        let mut tensor = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?;
        if name.ends_with("q_proj.weight") {
            tensor = interleave_rotary_pairs(&tensor, spec.num_attention_heads)?;
        } else if name.ends_with("k_proj.weight") {
            tensor = interleave_rotary_pairs(&tensor, spec.num_key_value_heads)?;
        }
        let stored = if shape.len() == 1 {
            GgmlDType::F32
        } else {
            dtype
        };
        let quantized = QTensor::quantize(&tensor, stored)
            .with_context(|| format!("quantizing {name} to {stored:?}"))?;
        tensors.push((gguf_name(&name), quantized));
    }

    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &metadata, &tensors)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn metadata(spec: &TinyLlamaSpec, vocab: &Vocabulary, dtype: GgmlDType) -> Vec<(String, Value)> {
    let u32_of = |n: usize| Value::U32(n as u32);
    let tokens: Vec<Value> = vocab
        .tokens
        .iter()
        .cloned()
        .chain(SPECIALS.iter().map(|s| s.to_string()))
        .map(Value::String)
        .collect();
    let token_types: Vec<Value> = (0..vocab.size())
        .map(|id| {
            Value::I32(if id < vocab.tokens.len() {
                NORMAL
            } else {
                CONTROL
            })
        })
        .collect();
    let merges: Vec<Value> = vocab
        .merges
        .iter()
        .map(|(a, b)| Value::String(format!("{a} {b}")))
        .collect();
    [
        ("general.architecture", Value::String("llama".into())),
        (
            "general.name",
            Value::String("arf tiny random-weight llama (meaningless output)".into()),
        ),
        // What the marker file says for the Hugging Face layout: a model service reports it.
        (RANDOM_WEIGHTS_KEY, Value::Bool(true)),
        // llama.cpp's file types: 0 all F32, 7 mostly Q8_0.
        (
            "general.file_type",
            Value::U32(if dtype == GgmlDType::F32 { 0 } else { 7 }),
        ),
        ("llama.context_length", u32_of(spec.max_position_embeddings)),
        ("llama.embedding_length", u32_of(spec.hidden_size)),
        ("llama.block_count", u32_of(spec.num_hidden_layers)),
        ("llama.feed_forward_length", u32_of(spec.intermediate_size)),
        (
            "llama.attention.head_count",
            u32_of(spec.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv",
            u32_of(spec.num_key_value_heads),
        ),
        ("llama.rope.dimension_count", u32_of(spec.head_dim())),
        ("llama.rope.freq_base", Value::F32(spec.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(spec.rms_norm_eps as f32),
        ),
        ("llama.vocab_size", u32_of(vocab.size())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("llama-bpe".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(token_types)),
        ("tokenizer.ggml.merges", Value::Array(merges)),
        (
            "tokenizer.ggml.bos_token_id",
            u32_of(vocab.special_id(BEGIN_OF_TEXT)),
        ),
        ("tokenizer.ggml.eos_token_id", u32_of(vocab.special_id(EOT))),
        (
            "tokenizer.chat_template",
            Value::String(CHAT_TEMPLATE.into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// llama.cpp's name for a Hugging Face Llama tensor.
fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, name)) = fixed.iter().find(|(h, _)| *h == hf) {
        return name.to_string();
    }
    let per_layer = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (layer, module) = rest.split_once('.').unwrap_or((rest, ""));
    let module = module.strip_suffix(".weight").unwrap_or(module);
    let gguf = per_layer
        .iter()
        .find(|(h, _)| *h == module)
        .map_or(module, |(_, g)| *g);
    format!("blk.{layer}.{gguf}.weight")
}

/// Rows of each head reordered from (half, i) to (i, half): llama.cpp's `permute`.
fn interleave_rotary_pairs(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Content;

    #[test]
    fn llama_cpp_names() {
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.1.self_attn.o_proj.weight"),
            "blk.1.attn_output.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.post_attention_layernorm.weight"),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }

    #[test]
    fn rotary_pairs_interleave_per_head() {
        // One head of 4 rows [a0 a1 b0 b1] (halves a, b) becomes [a0 b0 a1 b1].
        let w = Tensor::new(
            &[[0f32], [1.], [2.], [3.], [4.], [5.], [6.], [7.]],
            &Device::Cpu,
        )
        .unwrap();
        let p = interleave_rotary_pairs(&w, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(p, [0., 2., 1., 3., 4., 6., 5., 7.]);
    }

    #[test]
    fn writes_a_quantized_file_with_its_tokenizer_and_template() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let spec = TinyLlamaSpec::default();
        write_tiny_llama_gguf(&path, &spec, GgmlDType::Q8_0).unwrap();
        let mut file = std::fs::File::open(&path).unwrap();
        let content = Content::read(&mut file).unwrap();
        assert_eq!(
            content.tensor_infos.len(),
            2 + 9 * spec.num_hidden_layers + 1
        );
        assert_eq!(
            content.tensor_infos["blk.0.attn_q.weight"].ggml_dtype,
            GgmlDType::Q8_0
        );
        assert_eq!(
            content.tensor_infos["blk.0.attn_k.weight"].shape.dims(),
            [32, 64]
        );
        assert_eq!(
            content.tensor_infos["output_norm.weight"].ggml_dtype,
            GgmlDType::F32
        );
        let md = &content.metadata;
        assert_eq!(md["general.architecture"].to_string().unwrap(), "llama");
        let tokens = md["tokenizer.ggml.tokens"].to_vec().unwrap();
        let eos = md["tokenizer.ggml.eos_token_id"].to_u32().unwrap() as usize;
        assert_eq!(tokens[eos].to_string().unwrap(), EOT);
        assert_eq!(
            md["tokenizer.chat_template"].to_string().unwrap(),
            CHAT_TEMPLATE
        );
        // Quantized, the file is about a quarter of the f32 weights.
        let f32_bytes = 4
            * (2 * 64 * Vocabulary::build().size()
                + spec.num_hidden_layers * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 128));
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(
            size < f32_bytes / 3,
            "{size} bytes against {f32_bytes} in f32"
        );
    }
}
