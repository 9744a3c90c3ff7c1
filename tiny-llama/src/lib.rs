//! Tiny random-weight Llama models in the real Hugging Face layout, for tests and the demo (and
//! tiny Qwen3 models, the same decoder with q/k head norms, for the second student family).
//!
//! The files are what a Llama 3.1 checkpoint ships (`config.json`, `tokenizer.json`,
//! `tokenizer_config.json` with the chat template, `generation_config.json`,
//! `model.safetensors`), only small and with seeded random weights, so the editor (mistral.rs)
//! and the trainer (candle) load them through the same code path as a real model. A marker file,
//! [`MARKER_FILE`], says the weights are random: a model service reports it, because such a
//! model's output is meaningless.
//!
//! The same spec and seed always give byte-identical files (the weights come from a fixed
//! SplitMix64 stream rather than a `rand` generator whose output may change between versions).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

mod gguf;
pub use gguf::{RANDOM_WEIGHTS_KEY, write_tiny_llama_gguf};

/// Written beside the model files; its presence means "random weights, meaningless output".
pub const MARKER_FILE: &str = "arf_tiny_model.json";

/// The Llama-3-style special tokens, in id order after the byte-level BPE vocabulary.
pub const BEGIN_OF_TEXT: &str = "<|begin_of_text|>";
pub const END_OF_TEXT: &str = "<|end_of_text|>";
pub const START_HEADER: &str = "<|start_header_id|>";
pub const END_HEADER: &str = "<|end_header_id|>";
pub const EOT: &str = "<|eot_id|>";
const SPECIALS: [&str; 5] = [BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT];

/// The Llama 3.1 chat template, reduced to system/user/assistant turns (no tools, no dates).
pub const CHAT_TEMPLATE: &str = "{{- bos_token }}\
{%- for message in messages %}\
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
{%- endfor %}\
{%- if add_generation_prompt %}\
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\
{%- endif %}";

/// English words (and their leading-space forms) whose merges the BPE learns, so ordinary text
/// takes fewer tokens than bytes. Any text still round-trips through the 256 byte symbols.
const COMMON_WORDS: &[&str] = &[
    "the", "and", "to", "of", "a", "in", "is", "for", "you", "that", "it", "on", "with", "was",
    "my", "order", "refund", "customer", "agent", "summary", "account", "please", "thanks", "help",
    "can", "not", "be", "have", "this", "we", "your", "will", "are", "ing", "ed", "er", "re", "on",
    "at",
];

/// Shape and seed of a tiny Llama. `Default` is the test model: Llama 3.1's layout
/// (grouped-query attention, llama3 rope scaling, untied embeddings) at a size that loads in
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyLlamaSpec {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Fewer than `num_attention_heads`: grouped-query attention, as in Llama 3.
    pub num_key_value_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// Standard deviation of the random projection and embedding weights.
    pub init_std: f32,
    pub seed: u64,
    pub family: TinyFamily,
}

/// Which checkpoint layout the files take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TinyFamily {
    /// `LlamaForCausalLM`, as Llama 3.1 ships it.
    #[default]
    Llama,
    /// `Qwen3ForCausalLM`: q/k head norms, a head size of twice `hidden / heads` (Qwen3 sets it
    /// apart), tied embeddings, plain rope at theta 1e6.
    Qwen3,
}

impl Default for TinyLlamaSpec {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            intermediate_size: 128,
            max_position_embeddings: 8192,
            rope_theta: 500_000.0,
            rms_norm_eps: 1e-5,
            init_std: 0.02,
            seed: 0x00A2_F11A,
            family: TinyFamily::Llama,
        }
    }
}

impl TinyLlamaSpec {
    pub fn head_dim(&self) -> usize {
        let per_head = self.hidden_size / self.num_attention_heads;
        match self.family {
            TinyFamily::Llama => per_head,
            TinyFamily::Qwen3 => 2 * per_head,
        }
    }

    /// A tiny Qwen3 of the default size.
    pub fn qwen3() -> Self {
        Self {
            family: TinyFamily::Qwen3,
            rope_theta: 1_000_000.0,
            ..Self::default()
        }
    }

    fn tied(&self) -> bool {
        self.family == TinyFamily::Qwen3
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.hidden_size > 0 && self.num_hidden_layers > 0,
            "hidden_size and num_hidden_layers must be positive"
        );
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not a multiple of num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.head_dim().is_multiple_of(2),
            "head_dim must be even for rotary embeddings"
        );
        ensure!(
            self.num_key_value_heads > 0
                && self
                    .num_attention_heads
                    .is_multiple_of(self.num_key_value_heads),
            "num_attention_heads {} is not a multiple of num_key_value_heads {}",
            self.num_attention_heads,
            self.num_key_value_heads
        );
        ensure!(
            self.intermediate_size > 0 && self.max_position_embeddings > 0,
            "sizes must be positive"
        );
        Ok(())
    }
}

/// The tokenizer's vocabulary: byte symbols, then merged tokens, then the special tokens.
struct Vocabulary {
    /// BPE tokens (byte symbols and merges) in id order.
    tokens: Vec<String>,
    merges: Vec<(String, String)>,
}

impl Vocabulary {
    fn build() -> Self {
        let mut tokens: Vec<String> = (0u8..=255).map(|b| byte_symbol(b).to_string()).collect();
        let mut known: std::collections::HashSet<String> = tokens.iter().cloned().collect();
        let mut merges = Vec::new();
        for word in COMMON_WORDS {
            for form in [word.to_string(), format!(" {word}")] {
                let symbols: Vec<String> =
                    form.bytes().map(|b| byte_symbol(b).to_string()).collect();
                // Merge left to right: every prefix becomes a token before the longer one.
                let mut prefix = symbols[0].clone();
                for next in &symbols[1..] {
                    let merged = format!("{prefix}{next}");
                    if known.insert(merged.clone()) {
                        merges.push((prefix.clone(), next.clone()));
                        tokens.push(merged.clone());
                    }
                    prefix = merged;
                }
            }
        }
        Self { tokens, merges }
    }

    fn special_id(&self, special: &str) -> usize {
        self.tokens.len() + SPECIALS.iter().position(|s| *s == special).unwrap_or(0)
    }

    fn size(&self) -> usize {
        self.tokens.len() + SPECIALS.len()
    }
}

/// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the others map to
/// code points from U+0100 on, so every byte is a visible character in the vocabulary.
fn byte_symbol(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let offset = (0..b).filter(|x| !printable(*x)).count() as u32;
    char::from_u32(256 + offset).unwrap_or('?')
}

/// Writes a tiny random-weight Llama into `dir` (created if missing) in the Hugging Face layout.
pub fn write_tiny_llama(dir: &Path, spec: &TinyLlamaSpec) -> anyhow::Result<()> {
    spec.validate()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let vocab = Vocabulary::build();
    let write_json = |name: &str, value: &Value| -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("cannot write {name} in {}", dir.display()))
    };
    write_json("config.json", &config_json(spec, &vocab))?;
    write_json("generation_config.json", &generation_config_json(&vocab))?;
    write_json("tokenizer.json", &tokenizer_json(&vocab))?;
    write_json("tokenizer_config.json", &tokenizer_config_json(&vocab))?;
    write_json(
        MARKER_FILE,
        &json!({
            "random_weights": true,
            "seed": spec.seed,
            "warning": "tiny random-weight Llama written by ARF for tests and the demo: its output is meaningless",
        }),
    )?;
    write_weights(&dir.join("model.safetensors"), spec, vocab.size())
}

/// True when `dir` holds a model written by [`write_tiny_llama`].
pub fn is_tiny_model(dir: &Path) -> bool {
    dir.join(MARKER_FILE).is_file()
}

fn config_json(spec: &TinyLlamaSpec, vocab: &Vocabulary) -> Value {
    let mut config = llama_config_json(spec, vocab);
    if spec.family == TinyFamily::Qwen3 {
        // As Qwen3's released config.json writes it: no rope scaling, no sliding window.
        let qwen = json!({
            "architectures": ["Qwen3ForCausalLM"],
            "model_type": "qwen3",
            "rope_scaling": null,
            "tie_word_embeddings": true,
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": spec.num_hidden_layers,
        });
        for (k, v) in qwen.as_object().unwrap() {
            config[k] = v.clone();
        }
        for k in ["mlp_bias", "pretraining_tp"] {
            config.as_object_mut().unwrap().remove(k);
        }
    }
    config
}

fn llama_config_json(spec: &TinyLlamaSpec, vocab: &Vocabulary) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": vocab.special_id(BEGIN_OF_TEXT),
        "eos_token_id": [vocab.special_id(END_OF_TEXT), vocab.special_id(EOT)],
        "head_dim": spec.head_dim(),
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": spec.init_std,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": spec.rms_norm_eps,
        // As the released Llama 3.1 config.json writes it.
        "rope_scaling": {
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3"
        },
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
        "dtype": "float32",
        "transformers_version": "4.43.0",
        "use_cache": true,
        "vocab_size": vocab.size(),
    })
}

fn generation_config_json(vocab: &Vocabulary) -> Value {
    json!({
        "bos_token_id": vocab.special_id(BEGIN_OF_TEXT),
        "eos_token_id": [vocab.special_id(END_OF_TEXT), vocab.special_id(EOT)],
        "do_sample": false,
        "transformers_version": "4.43.0",
    })
}

fn tokenizer_json(vocab: &Vocabulary) -> Value {
    let model_vocab: serde_json::Map<String, Value> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.clone(), json!(id)))
        .collect();
    let added: Vec<Value> = SPECIALS
        .iter()
        .map(|s| {
            json!({"id": vocab.special_id(s), "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let merges: Vec<String> = vocab
        .merges
        .iter()
        .map(|(a, b)| format!("{a} {b}"))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        // The chat template writes <|begin_of_text|> itself; the post-processor adds nothing.
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": model_vocab,
            "merges": merges,
        }
    })
}

fn tokenizer_config_json(vocab: &Vocabulary) -> Value {
    let decoder: serde_json::Map<String, Value> = SPECIALS
        .iter()
        .map(|s| {
            (vocab.special_id(s).to_string(),
             json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}))
        })
        .collect();
    json!({
        "added_tokens_decoder": decoder,
        "bos_token": BEGIN_OF_TEXT,
        "eos_token": EOT,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": true,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}

/// Deterministic f32 stream: SplitMix64 mapped to a uniform distribution with the given std.
struct WeightStream(u64);

impl WeightStream {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform on [-a, a] with a = std * sqrt(3), which has the requested standard deviation.
    fn fill(&mut self, n: usize, std: f32) -> Vec<f32> {
        let a = std * 3f32.sqrt();
        (0..n)
            .map(|_| {
                let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                (unit * 2.0 - 1.0) * a
            })
            .collect()
    }
}

/// The tensors of `LlamaForCausalLM`, names and shapes as Hugging Face writes them
/// (`[out_features, in_features]` for every projection).
fn tensor_shapes(spec: &TinyLlamaSpec, vocab_size: usize) -> Vec<(String, Vec<usize>)> {
    let (h, i, hd) = (spec.hidden_size, spec.intermediate_size, spec.head_dim());
    let mut shapes = vec![("model.embed_tokens.weight".to_string(), vec![vocab_size, h])];
    for l in 0..spec.num_hidden_layers {
        let p = format!("model.layers.{l}");
        shapes.extend([
            (
                format!("{p}.self_attn.q_proj.weight"),
                vec![spec.num_attention_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.k_proj.weight"),
                vec![spec.num_key_value_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.v_proj.weight"),
                vec![spec.num_key_value_heads * hd, h],
            ),
            (
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, spec.num_attention_heads * hd],
            ),
            (format!("{p}.mlp.gate_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.up_proj.weight"), vec![i, h]),
            (format!("{p}.mlp.down_proj.weight"), vec![h, i]),
            (format!("{p}.input_layernorm.weight"), vec![h]),
            (format!("{p}.post_attention_layernorm.weight"), vec![h]),
        ]);
        if spec.family == TinyFamily::Qwen3 {
            shapes.extend([
                (format!("{p}.self_attn.q_norm.weight"), vec![hd]),
                (format!("{p}.self_attn.k_norm.weight"), vec![hd]),
            ]);
        }
    }
    shapes.push(("model.norm.weight".to_string(), vec![h]));
    if !spec.tied() {
        shapes.push(("lm_head.weight".to_string(), vec![vocab_size, h]));
    }
    shapes
}

/// The seeded weights, in [`tensor_shapes`] order: `(name, shape, values)`.
fn random_weights(spec: &TinyLlamaSpec, vocab_size: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut stream = WeightStream(spec.seed);
    // Generated in a fixed order, so the values depend on the seed only.
    tensor_shapes(spec, vocab_size)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let values = if name.ends_with("norm.weight") {
                vec![1f32; n] // RMSNorm weights start at one, as in training.
            } else {
                stream.fill(n, spec.init_std)
            };
            (name, shape, values)
        })
        .collect()
}

fn write_weights(path: &Path, spec: &TinyLlamaSpec, vocab_size: usize) -> anyhow::Result<()> {
    let data: BTreeMap<String, (Vec<usize>, Vec<u8>)> = random_weights(spec, vocab_size)
        .into_iter()
        .map(|(name, shape, values)| {
            (
                name,
                (shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            )
        })
        .collect();
    let views = data
        .iter()
        .map(|(name, (shape, bytes))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(spec: &TinyLlamaSpec) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_llama(dir.path(), spec).unwrap();
        dir
    }

    #[test]
    fn writes_the_hugging_face_layout_with_llama_3_1_config() {
        let dir = written(&TinyLlamaSpec::default());
        for f in [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
            "model.safetensors",
            MARKER_FILE,
        ] {
            assert!(dir.path().join(f).is_file(), "{f} missing");
        }
        assert!(is_tiny_model(dir.path()));
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], "LlamaForCausalLM");
        assert_eq!(config["num_key_value_heads"], 2);
        assert_eq!(config["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(config["tie_word_embeddings"], false);
        let vocab = config["vocab_size"].as_u64().unwrap();
        assert!((300..=600).contains(&vocab), "vocab size {vocab}");
        let generation: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("generation_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            generation["eos_token_id"][1].as_u64(),
            Some(vocab - 1),
            "<|eot_id|> is an EOS id"
        );
    }

    #[test]
    fn a_tiny_qwen3_has_its_head_norms_own_head_size_and_tied_embeddings() {
        let spec = TinyLlamaSpec::qwen3();
        let dir = written(&spec);
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["architectures"][0], "Qwen3ForCausalLM");
        assert_eq!(config["head_dim"], 2 * 64 / 4);
        assert_eq!(config["tie_word_embeddings"], true);
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("model.layers.0.self_attn.q_norm.weight")
                .unwrap()
                .shape(),
            [32]
        );
        assert_eq!(
            st.tensor("model.layers.0.self_attn.q_proj.weight")
                .unwrap()
                .shape(),
            [4 * 32, 64]
        );
        assert!(st.tensor("lm_head.weight").is_err());
    }

    #[test]
    fn weights_have_the_hf_names_and_shapes() {
        let spec = TinyLlamaSpec::default();
        let dir = written(&spec);
        let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 2 + 9 * spec.num_hidden_layers + 1);
        assert_eq!(
            st.tensor("model.layers.1.self_attn.q_proj.weight")
                .unwrap()
                .shape(),
            [64, 64]
        );
        assert_eq!(
            st.tensor("model.layers.1.self_attn.k_proj.weight")
                .unwrap()
                .shape(),
            [32, 64]
        );
        assert_eq!(
            st.tensor("model.layers.0.mlp.down_proj.weight")
                .unwrap()
                .shape(),
            [64, 128]
        );
        let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
        let values: Vec<f32> = q
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let std = (values.iter().map(|v| v * v).sum::<f32>() / values.len() as f32).sqrt();
        assert!((0.015..0.025).contains(&std), "std {std}");
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_weights() {
        let a = written(&TinyLlamaSpec::default());
        let b = written(&TinyLlamaSpec::default());
        let c = written(&TinyLlamaSpec {
            seed: 7,
            ..Default::default()
        });
        for f in ["model.safetensors", "tokenizer.json", "config.json"] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f}"
            );
        }
        assert_ne!(
            std::fs::read(a.path().join("model.safetensors")).unwrap(),
            std::fs::read(c.path().join("model.safetensors")).unwrap()
        );
    }

    #[test]
    fn tokenizer_round_trips_text_and_knows_the_specials() {
        let dir = written(&TinyLlamaSpec::default());
        let tok = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let text = "The customer wants a refund for order #1234. Café ✓";
        let enc = tok.encode(text, false).unwrap();
        assert!(
            enc.get_ids().len() < text.len(),
            "merges shorten English text"
        );
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        let eot = tok.token_to_id(EOT).unwrap();
        let with_special = tok.encode(format!("hi{EOT}"), false).unwrap();
        assert_eq!(with_special.get_ids().last(), Some(&eot));
    }

    #[test]
    fn a_bad_spec_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TinyLlamaSpec {
            num_key_value_heads: 3,
            ..Default::default()
        };
        assert!(write_tiny_llama(dir.path(), &spec).is_err());
    }
}
