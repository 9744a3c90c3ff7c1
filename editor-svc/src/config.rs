//! The editor's configuration: a clap struct any binary can flatten (the editor's own, the
//! gateway's demo), and the validated [`EditorConfig`] the library runs on.

use std::path::PathBuf;

use anyhow::Context as _;
use mistralrs::{IsqType, ModelDType};

/// Sequences the engine decodes together, unless configured.
pub const DEFAULT_MAX_SEQS: usize = 32;
/// Generations accepted at once, unless configured.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Tokens generated when a request says 0, unless configured.
pub const DEFAULT_MAX_TOKENS: u32 = 512;

/// Editor flags. Every one can come from an `ARF_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct EditorArgs {
    /// The model: a local Hugging Face directory (config.json, tokenizer.json, safetensors) or a
    /// local GGUF file. Hub ids are refused: the editor never downloads.
    #[arg(
        long,
        env = "ARF_EDITOR_MODEL",
        required_unless_present = "tiny_model_dir",
        conflicts_with = "tiny_model_dir"
    )]
    pub model: Option<PathBuf>,

    /// Write a tiny random-weight Llama into this directory and serve it. Every code path is
    /// real, but its output is meaningless: for tests and demos only.
    #[arg(long, env = "ARF_EDITOR_TINY_MODEL_DIR")]
    pub tiny_model_dir: Option<PathBuf>,

    /// In-situ quantization of a safetensors model at load: none, q4k, q8_0, q4_0, ... (K-quants
    /// need dimensions that are multiples of 256; smaller models fall back).
    #[arg(long, env = "ARF_EDITOR_ISQ", value_parser = parse_isq, default_value = "none")]
    pub isq: Isq,

    /// Weights and activations dtype: auto, f32, f16, bf16.
    #[arg(long, env = "ARF_EDITOR_DTYPE", value_parser = parse_dtype, default_value = "auto")]
    pub dtype: ModelDType,

    /// Sequences the engine decodes together (mistral.rs's batch).
    #[arg(long, env = "ARF_EDITOR_MAX_SEQS", default_value_t = DEFAULT_MAX_SEQS)]
    pub max_seqs: usize,

    /// Generations accepted at once; beyond it calls get RESOURCE_EXHAUSTED with RetryInfo.
    #[arg(long, env = "ARF_EDITOR_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Tokens generated when a request says 0.
    #[arg(long, env = "ARF_EDITOR_DEFAULT_MAX_TOKENS", default_value_t = DEFAULT_MAX_TOKENS)]
    pub default_max_tokens: u32,

    /// Finished sequences whose KV caches the engine keeps, to reuse for a prompt asked again
    /// (the patched cache serves only a whole prompt, never a shared prefix: patches/README.md);
    /// 0 (the default) turns the cache off. Worth it where the same prompt comes back: a
    /// revision's best-of-n candidates (the gateway sends the others after the first; `arf demo`
    /// and `arf suite` turn it on, 32), several replies scored after a generation (Evaluate's
    /// students). Each entry holds a prompt's KV cache (SmolLM2: ~46 KB a token).
    #[arg(long, env = "ARF_EDITOR_PREFIX_CACHE_SEQS", default_value_t = 0)]
    pub prefix_cache_seqs: usize,

    /// Record prompts and completions in spans (they hold customer conversations: off by default).
    #[arg(long, env = "ARF_LOG_CONTENT")]
    pub log_content: bool,
}

/// An ISQ choice: `None` serves the weights as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Isq(pub Option<IsqType>);

fn parse_isq(s: &str) -> Result<Isq, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Isq(None));
    }
    mistralrs::core::parse_isq_value(s, None).map(|t| Isq(Some(t)))
}

fn parse_dtype(s: &str) -> Result<ModelDType, String> {
    s.parse()
}

/// What the editor library runs on.
#[derive(Debug, Clone)]
pub struct EditorConfig {
    /// A local model directory or GGUF file.
    pub model_path: PathBuf,
    pub isq: Option<IsqType>,
    pub dtype: ModelDType,
    pub max_seqs: usize,
    pub max_in_flight: usize,
    pub default_max_tokens: u32,
    /// 0: no prefix cache (see `EditorArgs::prefix_cache_seqs`).
    pub prefix_cache_seqs: usize,
    /// Prompts and completions recorded in spans (`--log-content`).
    pub log_content: bool,
}

impl EditorConfig {
    /// The flags' defaults for a model path: no quantization, automatic dtype.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            isq: None,
            dtype: ModelDType::Auto,
            max_seqs: DEFAULT_MAX_SEQS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            prefix_cache_seqs: 0,
            log_content: false,
        }
    }
}

impl EditorArgs {
    /// The validated configuration. With `--tiny-model-dir`, writes the tiny model first.
    pub fn into_config(self) -> anyhow::Result<EditorConfig> {
        let model_path = match (self.model, self.tiny_model_dir) {
            (Some(model), _) => model,
            (None, Some(dir)) => {
                arf_tiny_llama::write_tiny_llama(&dir, &Default::default())
                    .with_context(|| format!("writing the tiny model into {}", dir.display()))?;
                tracing::warn!(dir = %dir.display(),
                    "SERVING A TINY RANDOM-WEIGHT MODEL: every code path is real, but its revisions and generations are MEANINGLESS");
                dir
            }
            (None, None) => anyhow::bail!("--model (or --tiny-model-dir) is required"),
        };
        anyhow::ensure!(self.max_seqs > 0, "--max-seqs must be at least 1");
        anyhow::ensure!(self.max_in_flight > 0, "--max-in-flight must be at least 1");
        anyhow::ensure!(
            self.default_max_tokens > 0,
            "--default-max-tokens must be at least 1"
        );
        Ok(EditorConfig {
            model_path,
            isq: self.isq.0,
            dtype: self.dtype,
            max_seqs: self.max_seqs,
            max_in_flight: self.max_in_flight,
            default_max_tokens: self.default_max_tokens,
            prefix_cache_seqs: self.prefix_cache_seqs,
            log_content: self.log_content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        editor: EditorArgs,
    }

    #[test]
    fn a_model_or_a_tiny_model_dir_is_required() {
        assert!(Cli::try_parse_from(["x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--model", "m", "--tiny-model-dir", "t"]).is_err());
        let cli = Cli::try_parse_from([
            "x",
            "--model",
            "/models/llama",
            "--isq",
            "q8_0",
            "--dtype",
            "f32",
        ])
        .unwrap();
        assert_eq!(cli.editor.isq, Isq(Some(IsqType::Q8_0)));
        assert!(
            Cli::try_parse_from(["x", "--model", "m", "--isq", "q9"]).is_err(),
            "unknown ISQ type"
        );
        assert_eq!(
            Cli::try_parse_from(["x", "--model", "m"])
                .unwrap()
                .editor
                .isq,
            Isq(None)
        );
    }
}
