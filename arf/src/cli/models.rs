//! Real models for the command line: the named ones of the model cache
//! ([`arf_common::models`]), and a GGUF's dequantized copy.

use std::path::{Path, PathBuf};

pub use arf_common::models::{cache_dir, resolve};

/// The GGUF file as a dequantized f32 Hugging Face directory under `data_dir`, written on first
/// use: the same numbers the students are merged in, so the zero-shot base model is evaluated
/// as the students are (`StudentHost`). The editor serves the GGUF itself (faster: Q4_1 kernels).
pub fn dequantized_copy(gguf: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let stem = gguf
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let dir = data_dir.join(format!("{stem}.f32"));
    if !dir.join("config.json").is_file() {
        eprintln!(
            "writing a dequantized f32 copy of {} to {} (once)",
            gguf.display(),
            dir.display()
        );
        let tmp = data_dir.join(format!("{stem}.f32.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        trainer_svc::model::gguf::write_dequantized(gguf, &tmp)?;
        std::fs::rename(&tmp, &dir)?;
    }
    Ok(dir)
}
