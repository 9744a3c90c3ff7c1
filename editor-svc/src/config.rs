//! The editor's configuration: a clap struct any binary can flatten (the editor's own, the
//! gateway's demo), and the validated [`EditorConfig`] the library runs on.

use std::path::PathBuf;

use anyhow::Context as _;
use mistralrs::{IsqType, ModelDType};

/// The environment variable the upstream's API key is read from (never a flag: a flag shows in
/// `ps`).
pub const UPSTREAM_API_KEY_ENV: &str = "ARF_UPSTREAM_API_KEY";

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
        required_unless_present_any = ["tiny_model_dir", "upstream"],
        conflicts_with_all = ["tiny_model_dir", "upstream"]
    )]
    pub model: Option<PathBuf>,

    /// Write a tiny random-weight Llama into this directory and serve it. Every code path is
    /// real, but its output is meaningless: for tests and demos only.
    #[arg(long, env = "ARF_EDITOR_TINY_MODEL_DIR", conflicts_with = "upstream")]
    pub tiny_model_dir: Option<PathBuf>,

    /// What serves the model: `mistralrs` hosts `--model` in this process; `openai` forwards to
    /// the OpenAI-compatible server at `--upstream` (vLLM, TGI, llama.cpp's server, Ollama, a
    /// hosted API). The API key comes from ARF_UPSTREAM_API_KEY or `--upstream-api-key-file`.
    #[arg(long, env = "ARF_EDITOR_BACKEND", value_enum, default_value_t = BackendKind::Mistralrs)]
    pub backend: BackendKind,

    /// The upstream API's base URL, as the `openai` client's base_url (`http://host:8000/v1`).
    #[arg(long, env = "ARF_UPSTREAM_URL", requires = "upstream_model")]
    pub upstream: Option<String>,

    /// The model name the upstream serves.
    #[arg(long, env = "ARF_UPSTREAM_MODEL", requires = "upstream")]
    pub upstream_model: Option<String>,

    /// A file holding the upstream's API key (a mounted secret); else ARF_UPSTREAM_API_KEY.
    #[arg(long, env = "ARF_UPSTREAM_API_KEY_FILE")]
    pub upstream_api_key_file: Option<PathBuf>,

    /// PEM certificates to trust for an https upstream, besides the web's roots (an
    /// on-premises CA).
    #[arg(long, env = "ARF_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,

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

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// The model hosted in this process by mistral.rs.
    Mistralrs,
    /// An OpenAI-compatible server elsewhere.
    Openai,
}

/// Where the upstream is and how to reach it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The API's base URL, as the `openai` client's `base_url`: `http://host:8000/v1`.
    pub base_url: String,
    /// The model name the upstream serves (`model` in each request).
    pub model: String,
    pub api_key: Option<ApiKey>,
    /// PEM certificates to trust besides the system's web roots (an on-premises CA).
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    /// `model` at `base_url`, without a key or a CA of its own (a loopback server).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            ca_file: None,
        }
    }
}

/// A bearer token, never printed: `Debug` shows that one is set, not what it is.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into().trim().to_string();
        (!key.is_empty()).then_some(Self(key))
    }

    /// The key itself: for the Authorization header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
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
    /// Set: the model is served by this OpenAI-compatible upstream, and the fields above that
    /// describe local weights (path, ISQ, dtype, engine batch, prefix cache) are not used.
    pub upstream: Option<UpstreamConfig>,
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
            upstream: None,
        }
    }

    /// An editor that forwards to an OpenAI-compatible server (no local model path).
    pub fn upstream(upstream: UpstreamConfig) -> Self {
        Self {
            upstream: Some(upstream),
            ..Self::new(PathBuf::new())
        }
    }
}

impl EditorArgs {
    /// The validated configuration. With `--tiny-model-dir`, writes the tiny model first.
    pub fn into_config(self) -> anyhow::Result<EditorConfig> {
        anyhow::ensure!(self.max_in_flight > 0, "--max-in-flight must be at least 1");
        anyhow::ensure!(
            self.default_max_tokens > 0,
            "--default-max-tokens must be at least 1"
        );
        if self.backend == BackendKind::Openai || self.upstream.is_some() {
            anyhow::ensure!(
                self.backend == BackendKind::Openai,
                "--upstream needs --backend openai"
            );
            let (Some(base_url), Some(model)) = (self.upstream, self.upstream_model) else {
                anyhow::bail!("--backend openai needs --upstream URL and --upstream-model NAME");
            };
            let api_key = match &self.upstream_api_key_file {
                Some(file) => ApiKey::new(std::fs::read_to_string(file).with_context(|| {
                    format!("reading --upstream-api-key-file {}", file.display())
                })?),
                None => std::env::var(UPSTREAM_API_KEY_ENV)
                    .ok()
                    .and_then(ApiKey::new),
            };
            let mut config = EditorConfig::upstream(UpstreamConfig {
                base_url,
                model,
                api_key,
                ca_file: self.upstream_ca_file,
            });
            config.max_in_flight = self.max_in_flight;
            config.default_max_tokens = self.default_max_tokens;
            config.log_content = self.log_content;
            return Ok(config);
        }
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
        Ok(EditorConfig {
            model_path,
            isq: self.isq.0,
            dtype: self.dtype,
            max_seqs: self.max_seqs,
            max_in_flight: self.max_in_flight,
            default_max_tokens: self.default_max_tokens,
            prefix_cache_seqs: self.prefix_cache_seqs,
            log_content: self.log_content,
            upstream: None,
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

    #[test]
    fn an_upstream_replaces_the_model_and_its_key_never_shows() {
        let cli = Cli::try_parse_from([
            "x",
            "--backend",
            "openai",
            "--upstream",
            "http://127.0.0.1:8000/v1",
            "--upstream-model",
            "llama-70b",
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "sk-secret-123\n").unwrap();
        let mut args = cli.editor;
        args.upstream_api_key_file = Some(key_file);
        let config = args.into_config().unwrap();
        let upstream = config.upstream.as_ref().unwrap();
        assert_eq!(upstream.model, "llama-70b");
        assert!(upstream.api_key.is_some());
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        // An upstream and a local model exclude each other; an upstream needs its model name.
        assert!(Cli::try_parse_from(["x", "--model", "m", "--upstream", "http://h/v1"]).is_err());
        assert!(Cli::try_parse_from(["x", "--upstream", "http://h/v1"]).is_err());
        let no_backend =
            Cli::try_parse_from(["x", "--upstream", "http://h/v1", "--upstream-model", "m"])
                .unwrap();
        let err = no_backend.editor.into_config().unwrap_err().to_string();
        assert!(err.contains("--backend openai"), "{err}");
    }
}
