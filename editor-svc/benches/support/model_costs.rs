//! What a GGUF model costs per token, from its file: the work behind "share of peak". A prompt
//! token is compute (2 FLOPs per weight of every layer, plus its attention over the positions
//! before it); a decoded token is memory (every weight byte once, the output layer included,
//! plus the cached keys and values of its context).

use std::path::Path;

use anyhow::Context as _;
use candle_core::quantized::gguf_file::Content;

pub struct ModelCosts {
    /// Weights of the layers a prompt token passes through (the output layer runs for the last
    /// prompt position only, so it is left out).
    layer_weights: f64,
    /// Bytes a decoded token reads: every tensor once (a tied output layer is the embedding).
    weight_bytes: f64,
    /// `layers * heads * head_dim`: attention's query width over all layers.
    query_width: f64,
    /// `layers * kv_heads * head_dim * 2` (keys and values): cached values per position.
    kv_values: f64,
}

impl ModelCosts {
    pub fn read(gguf: &Path) -> anyhow::Result<Self> {
        let mut file =
            std::fs::File::open(gguf).with_context(|| format!("opening {}", gguf.display()))?;
        let content =
            Content::read(&mut file).with_context(|| format!("reading {}", gguf.display()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .context("general.architecture")?
            .to_string()?
            .clone();
        let meta = |key: &str| -> anyhow::Result<f64> {
            let key = format!("{arch}.{key}");
            Ok(content
                .metadata
                .get(&key)
                .with_context(|| key.clone())?
                .to_u32()? as f64)
        };
        let (layers, heads, kv_heads, hidden) = (
            meta("block_count")?,
            meta("attention.head_count")?,
            meta("attention.head_count_kv")?,
            meta("embedding_length")?,
        );
        let head_dim = hidden / heads;
        let (mut layer_weights, mut weight_bytes) = (0f64, 0f64);
        for (name, info) in &content.tensor_infos {
            let elements = info.shape.elem_count();
            let bytes = elements / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let embedding = name == "token_embd.weight";
            let tied = !content.tensor_infos.contains_key("output.weight");
            if !embedding || tied {
                weight_bytes += bytes as f64;
            }
            if name.starts_with("blk.") && info.shape.dims().len() == 2 {
                layer_weights += elements as f64;
            }
        }
        Ok(Self {
            layer_weights,
            weight_bytes,
            query_width: layers * heads * head_dim,
            kv_values: layers * kv_heads * head_dim * 2.0,
        })
    }

    /// FLOPs per token of a prompt of `len` tokens: the layers' products, and attention's two
    /// products over the `(len + 1) / 2` positions a token sees on average.
    pub fn prompt_flop_per_token(&self, len: usize) -> f64 {
        2.0 * self.layer_weights + 4.0 * self.query_width * (len as f64 + 1.0) / 2.0
    }

    /// Bytes one decoded token reads after `context` positions, its cache holding
    /// `kv_bytes_per_value` per key or value.
    pub fn decode_bytes_per_token(&self, context: usize, kv_bytes_per_value: f64) -> f64 {
        self.weight_bytes + self.kv_values * context as f64 * kv_bytes_per_value
    }
}
