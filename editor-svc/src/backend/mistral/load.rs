//! Loading the model through mistral.rs, from local files only.
//!
//! mistral.rs treats any string it cannot find on disk as a Hugging Face hub id and downloads
//! it (0.8.1 ignores HF_HUB_OFFLINE), so the path is checked here first: a directory is a
//! Hugging Face model directory, a `.gguf` file is a GGUF model, anything else is refused.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use mistralrs::{GgufModelBuilder, IsqType, Model, ModelDType, TextModelBuilder};

use crate::backend::ModelDescription;
use crate::config::EditorConfig;

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// config.json, tokenizer.json, tokenizer_config.json (chat template), *.safetensors.
    HfDirectory(PathBuf),
    /// One GGUF file (tokenizer and chat template inside it).
    Gguf(PathBuf),
}

impl ModelSource {
    /// Refuses anything that is not an existing local model, with a message that says why.
    pub fn resolve(path: &Path) -> anyhow::Result<Self> {
        if path.is_dir() {
            ensure!(
                path.join("config.json").is_file(),
                "{} is a directory without config.json: not a Hugging Face model directory",
                path.display()
            );
            return Ok(Self::HfDirectory(path.to_path_buf()));
        }
        if path.is_file() {
            ensure!(
                path.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf")),
                "{} is a file but not a .gguf model; give a Hugging Face model directory or a GGUF file",
                path.display()
            );
            return Ok(Self::Gguf(path.to_path_buf()));
        }
        bail!(
            "model {} does not exist locally. The editor loads local files only and never downloads: \
             a hub id such as meta-llama/Llama-3.1-70B-Instruct is refused. Download the model first and give its directory.",
            path.display()
        )
    }
}

/// mistral.rs's prefix cache size, `None` when off (the default: see the flag's help).
fn prefix_cache(config: &EditorConfig) -> Option<usize> {
    (config.prefix_cache_seqs > 0).then_some(config.prefix_cache_seqs)
}

/// The device mistral.rs uses: CUDA when built with the `cuda` feature (the GPU is chosen with
/// CUDA_VISIBLE_DEVICES: `with_device` is ignored in 0.8.1), the CPU otherwise.
const USE_CUDA: bool = cfg!(feature = "cuda");

/// `auto` means the fast dtype of the device: mistral.rs' own choice on a CPU is BF16 (a 2x2
/// matmul works, so it is taken), which runs several times slower than f32 there.
fn effective_dtype(requested: ModelDType) -> ModelDType {
    match requested {
        ModelDType::Auto if !USE_CUDA => ModelDType::F32,
        other => other,
    }
}

pub async fn load_model(config: &EditorConfig) -> anyhow::Result<(Model, ModelDescription)> {
    let source = ModelSource::resolve(&config.model_path)?;
    let dtype = effective_dtype(config.dtype);
    // A bad `ARF_KV_CACHE` fails the load here, not every request after it.
    let kv_cache = mistralrs::core::cpu_kv_cache_dtype().map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let model = match &source {
        ModelSource::HfDirectory(dir) => {
            // mistral.rs reads the files while it builds (the weights are memory-mapped, so the
            // view's links may go once it has): the view is dropped at the end of this arm.
            let loadable = super::model_dir::loadable_dir(dir)?;
            let mut builder = TextModelBuilder::new(loadable.path().display().to_string())
                .with_dtype(dtype)
                .with_max_num_seqs(config.max_seqs)
                .with_prefix_cache_n(prefix_cache(config));
            if !USE_CUDA {
                builder = builder.with_force_cpu();
            }
            if let Some(isq) = config.isq {
                builder = builder.with_isq(isq);
            }
            let built = builder.build().await;
            drop(loadable);
            built
        }
        ModelSource::Gguf(file) => {
            ensure!(
                config.isq.is_none(),
                "--isq applies to safetensors models; a GGUF file is already quantized"
            );
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut builder = GgufModelBuilder::new(dir.display().to_string(), vec![name])
                .with_max_num_seqs(config.max_seqs)
                .with_prefix_cache_n(prefix_cache(config));
            if !USE_CUDA {
                builder = builder.with_force_cpu();
            }
            builder.build().await
        }
    }
    .with_context(|| format!("loading {}", config.model_path.display()))?;
    // A GGUF file's activations dtype is mistral.rs' own pick (F16 on a CPU), not ours.
    let reported = if matches!(source, ModelSource::Gguf(_)) {
        config.dtype
    } else {
        dtype
    };
    let description = describe(config, &source, &model, reported)?;
    // Said once per load: the same model runs at different speeds on different kernels.
    let kernels = if USE_CUDA {
        "CUDA".to_string()
    } else {
        format!(
            "{}, kv cache {kv_cache:?} ({})",
            arf_common::cpu::kernel_summary(),
            mistralrs::core::KV_CACHE_ENV
        )
    };
    tracing::info!(model = %description.model_id, architecture = %description.architecture,
        quantization = %description.quantization, device = %description.device, kernels = %kernels,
        max_context_tokens = description.max_context_tokens, random_weights = description.random_weights,
        load_seconds = started.elapsed().as_secs_f64(), "model loaded");
    Ok((model, description))
}

fn describe(
    config: &EditorConfig,
    source: &ModelSource,
    model: &Model,
    dtype: ModelDType,
) -> anyhow::Result<ModelDescription> {
    let (architecture, config_context, random_weights, quantization) = match source {
        ModelSource::HfDirectory(dir) => {
            let text =
                std::fs::read_to_string(dir.join("config.json")).context("reading config.json")?;
            let json: serde_json::Value =
                serde_json::from_str(&text).context("parsing config.json")?;
            let architecture = json["architectures"][0]
                .as_str()
                .or(json["model_type"].as_str())
                .unwrap_or("unknown")
                .to_string();
            let context = json["max_position_embeddings"].as_u64().map(|n| n as usize);
            let quantization = config
                .isq
                .map(isq_name)
                .unwrap_or_else(|| "none".to_string());
            (
                architecture,
                context,
                arf_tiny_llama::is_tiny_model(dir),
                quantization,
            )
        }
        ModelSource::Gguf(file) => {
            let gguf = GgufDescription::read(file)?;
            (
                gguf.architecture,
                gguf.context,
                gguf.random_weights,
                gguf.quantization,
            )
        }
    };
    let engine_context = model.max_sequence_length().ok().flatten();
    let max_context_tokens = engine_context
        .or(config_context)
        .context("the model reports no maximum sequence length")?;
    Ok(ModelDescription {
        model_id: config.model_path.display().to_string(),
        architecture,
        quantization,
        dtype: dtype_name(dtype),
        device: if USE_CUDA {
            "cuda:0".to_string()
        } else {
            "cpu".to_string()
        },
        max_context_tokens,
        max_concurrent_sequences: config.max_seqs,
        random_weights,
    })
}

/// What a GGUF file's header says about the model.
struct GgufDescription {
    architecture: String,
    context: Option<usize>,
    quantization: String,
    random_weights: bool,
}

impl GgufDescription {
    fn read(file: &Path) -> anyhow::Result<Self> {
        use candle_core::quantized::gguf_file::Content;
        let mut reader =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let content = Content::read(&mut reader)
            .with_context(|| format!("reading the GGUF header of {}", file.display()))?;
        let md = &content.metadata;
        let architecture = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        let context = md
            .get(&format!("{architecture}.context_length"))
            .and_then(|v| v.to_u64().ok())
            .map(|n| n as usize);
        // The attention weights' type is what "a Q4K model" means; norms stay F32 in every file.
        let quantization = content
            .tensor_infos
            .get("blk.0.attn_q.weight")
            .or_else(|| content.tensor_infos.values().next())
            .map_or_else(
                || "unknown".to_string(),
                |t| format!("{:?}", t.ggml_dtype).to_lowercase(),
            );
        let random_weights = md
            .get(arf_tiny_llama::RANDOM_WEIGHTS_KEY)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(Self {
            architecture,
            context,
            quantization,
            random_weights,
        })
    }
}

fn isq_name(isq: IsqType) -> String {
    format!("{isq:?}").to_lowercase()
}

fn dtype_name(dtype: ModelDType) -> String {
    match dtype {
        ModelDType::Auto => "auto",
        ModelDType::BF16 => "bf16",
        ModelDType::F16 => "f16",
        ModelDType::F32 => "f32",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_stray_files_are_refused() {
        let err = ModelSource::resolve(Path::new("meta-llama/Llama-3.1-8B-Instruct"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("never downloads"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ModelSource::resolve(dir.path())
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
        let stray = dir.path().join("weights.bin");
        std::fs::write(&stray, b"x").unwrap();
        assert!(ModelSource::resolve(&stray).is_err());
        let gguf = dir.path().join("model.Q4_K_M.gguf");
        std::fs::write(&gguf, b"x").unwrap();
        assert_eq!(
            ModelSource::resolve(&gguf).unwrap(),
            ModelSource::Gguf(gguf)
        );
    }
}
