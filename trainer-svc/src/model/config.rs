//! `config.json` of a Llama or Qwen3 checkpoint, read both as the released checkpoints write it
//! (`rope_theta` + `rope_scaling`) and as transformers 5 writes it (`rope_parameters`).
//!
//! Qwen3 is Llama with two differences that matter to training: an RMS norm over each query and
//! key head before the rotation (`q_norm`, `k_norm`), and a head size set apart from
//! `hidden_size / num_attention_heads`. So it is one more configuration of the same model, not a
//! second model.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::ModelError;

/// How positions are rotated. Anything else is refused when the config is read, so a model
/// is never silently run with the wrong positions.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: default`, or no scaling at all).
    Default,
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The families the trainer knows: one decoder, configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    /// Llama plus per-head RMS norms on q and k before the rotation.
    Qwen3,
}

impl Architecture {
    /// What CreateJob and CreateRun name when they refuse a base.
    pub const SUPPORTED: &'static str = "LlamaForCausalLM (llama), Qwen3ForCausalLM (qwen3)";

    /// From `config.json`'s `architectures` (or its `model_type` when that is empty).
    fn from_hf(architectures: &[String], model_type: Option<&str>) -> Option<Self> {
        match architectures {
            [] => Self::from_gguf(model_type?),
            [one, ..] => [Self::Llama, Self::Qwen3]
                .into_iter()
                .find(|a| a.hf_class() == one),
        }
    }

    /// transformers' class, `config.json`'s `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    /// From GGUF's `general.architecture` (`llama`, `qwen3`), which is also `model_type`.
    pub fn from_gguf(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    /// GGUF's name for it: `general.architecture` and the prefix of its keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen3 => "qwen3",
        }
    }

    /// Whether each query and key head is RMS-normed before the rotation.
    pub fn qk_norm(self) -> bool {
        self == Self::Qwen3
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

/// The raw file: every field that matters, most of them optional because the two writers differ.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<Value>,
    #[serde(default)]
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    hidden_act: Option<String>,
    /// Qwen3: sliding-window attention on some layers (off in every released Qwen3).
    #[serde(default)]
    use_sliding_window: bool,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
        let Some(architecture) =
            Architecture::from_hf(&raw.architectures, raw.model_type.as_deref())
        else {
            return Err(ModelError::Config(format!(
                "unsupported architecture {:?} (model_type {:?}): the trainer knows {}",
                raw.architectures,
                raw.model_type,
                Architecture::SUPPORTED
            )));
        };
        if raw.attention_bias || raw.mlp_bias {
            return Err(ModelError::Config(
                "attention_bias / mlp_bias are not supported (Llama 3 and Qwen3 have none)".into(),
            ));
        }
        if raw.use_sliding_window {
            return Err(ModelError::Config(
                "use_sliding_window is not supported (no released Qwen3 uses it)".into(),
            ));
        }
        if let Some(act) = raw.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(ModelError::Config(format!(
                "hidden_act {act:?} is not supported (only silu)"
            )));
        }
        if raw.num_attention_heads == 0
            || !raw.hidden_size.is_multiple_of(raw.num_attention_heads) && raw.head_dim.is_none()
        {
            return Err(ModelError::Config(
                "hidden_size is not a multiple of num_attention_heads".into(),
            ));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(ModelError::Config(
                "num_attention_heads is not a multiple of num_key_value_heads".into(),
            ));
        }
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(ModelError::Config("head_dim must be even for RoPE".into()));
        }
        // transformers 5 folds rope_theta into rope_parameters; Llama 3.1 keeps both outside.
        let params = raw
            .rope_parameters
            .as_ref()
            .or(raw.rope_scaling.as_ref())
            .filter(|v| !v.is_null());
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                raw.rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let rope_scaling = match params {
            None => RopeScaling::Default,
            Some(p) => parse_rope(p)?,
        };
        Ok(Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings,
            max_position_embeddings: raw.max_position_embeddings,
        })
    }

    /// Number of parameters of the base model (for logs and the bench).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim;
        let q = self.num_attention_heads * self.head_dim;
        let qk_norms = if self.architecture.qk_norm() {
            2 * self.head_dim
        } else {
            0
        };
        let layer = h * q * 2 + h * kv * 2 + 3 * h * self.intermediate_size + 2 * h + qk_norms;
        let embed = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        embed + self.num_hidden_layers * layer + h
    }
}

fn parse_rope(p: &Value) -> Result<RopeScaling, ModelError> {
    // Older files say `type`, newer ones `rope_type`.
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        p.get(key).and_then(Value::as_f64).ok_or_else(|| {
            ModelError::Config(format!("rope scaling `llama3` needs a numeric `{key}`"))
        })
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(ModelError::Config(format!(
            "rope type {other:?} is not supported (only \"default\" and \"llama3\")"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
        "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1"#;

    #[test]
    fn reads_llama31_and_transformers5_layouts_alike() {
        let old = format!(
            r#"{{{BASE},"rope_theta":500000.0,"rope_scaling":{{"rope_type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        );
        let new = format!(
            r#"{{{BASE},"rope_parameters":{{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        );
        let a = LlamaConfig::from_json(&old).unwrap();
        let b = LlamaConfig::from_json(&new).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 500000.0);
        assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(a.head_dim, 4);
    }

    #[test]
    fn refuses_unknown_architectures_and_rope_types() {
        let yarn = format!(r#"{{{BASE},"rope_scaling":{{"rope_type":"yarn","factor":4.0}}}}"#);
        let err = LlamaConfig::from_json(&yarn).unwrap_err().to_string();
        assert!(err.contains("yarn"), "{err}");
        let mistral = BASE.replace("LlamaForCausalLM", "MistralForCausalLM");
        let err = LlamaConfig::from_json(&format!("{{{mistral}}}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MistralForCausalLM"), "{err}");
        assert!(
            err.contains("Qwen3ForCausalLM"),
            "names what is supported: {err}"
        );
    }

    #[test]
    fn reads_qwen3_with_its_own_head_size() {
        let qwen = BASE.replace("LlamaForCausalLM", "Qwen3ForCausalLM");
        let c = LlamaConfig::from_json(&format!(
            r#"{{{qwen},"head_dim":8,"rope_theta":1000000.0,"tie_word_embeddings":true,
            "use_sliding_window":false,"sliding_window":null,"max_window_layers":1}}"#
        ))
        .unwrap();
        assert_eq!(c.architecture, Architecture::Qwen3);
        assert_eq!((c.head_dim, c.hidden_size), (8, 8));
        assert!(c.tie_word_embeddings && c.architecture.qk_norm());
        let sliding = format!(r#"{{{qwen},"use_sliding_window":true}}"#);
        let err = LlamaConfig::from_json(&sliding).unwrap_err().to_string();
        assert!(err.contains("use_sliding_window"), "{err}");
    }
}
