//! Where a base model comes from: a Hugging Face directory or one GGUF file. Everything that
//! reads a base (the model, its chat format, validation, the merged export) asks this type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::gguf::GgufFile;
use super::{LlamaConfig, ModelError, weights};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseModel {
    /// config.json, tokenizer.json, the chat template, *.safetensors.
    HfDir(PathBuf),
    /// A `.gguf` file: dequantized at load; tokenizer and template from its metadata.
    Gguf(PathBuf),
}

impl BaseModel {
    pub fn resolve(path: &Path) -> Result<Self, ModelError> {
        if path.is_dir() {
            return Ok(Self::HfDir(path.to_path_buf()));
        }
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Ok(Self::Gguf(path.to_path_buf()));
        }
        Err(ModelError::Config(format!(
            "{} is neither a Hugging Face model directory nor a .gguf file",
            path.display()
        )))
    }

    pub fn config(&self) -> Result<LlamaConfig, ModelError> {
        match self {
            Self::HfDir(dir) => LlamaConfig::from_dir(dir),
            Self::Gguf(file) => GgufFile::open(file)?.config(),
        }
    }

    /// The configuration and every weight under its Hugging Face name, in `dtype`.
    pub fn load(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<(LlamaConfig, HashMap<String, Tensor>), ModelError> {
        match self {
            Self::HfDir(dir) => Ok((
                LlamaConfig::from_dir(dir)?,
                weights::load_all(dir, dtype, device)?,
            )),
            Self::Gguf(file) => {
                let mut gguf = GgufFile::open(file)?;
                let cfg = gguf.config()?;
                let tensors = gguf.load_all(&cfg, dtype, device)?;
                Ok((cfg, tensors))
            }
        }
    }

    /// Checks that every file the model needs is there, without loading weights.
    pub fn check_files(&self) -> Result<(), ModelError> {
        match self {
            Self::HfDir(dir) => {
                for f in ["config.json", "tokenizer.json"] {
                    if !dir.join(f).exists() {
                        return Err(ModelError::Config(format!("{} has no {f}", dir.display())));
                    }
                }
                let files = weights::weight_files(dir)?;
                match files.iter().find(|f| !f.exists()) {
                    Some(missing) => Err(ModelError::Weights(format!(
                        "missing weights file {}",
                        missing.display()
                    ))),
                    None => Ok(()),
                }
            }
            Self::Gguf(file) => GgufFile::open(file).map(|_| ()),
        }
    }
}
