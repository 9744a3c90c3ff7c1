//! Up-front checks of a job, so a bad request fails at CreateJob rather than minutes later.

use super::{JobData, JobError, JobSpec};
use crate::model::LlamaConfig;
use crate::model::weights::weight_files;

fn invalid(field: &str, message: impl Into<String>) -> JobError {
    JobError::Invalid { field: field.into(), message: message.into() }
}

/// Checks files, the model, the data and the hyperparameters; the error names the field.
pub fn validate_spec(spec: &JobSpec) -> Result<(), JobError> {
    let cfg = &spec.config;
    cfg.validate().map_err(|(f, m)| invalid(&f, m))?;
    let dir = &cfg.base_model_dir;
    if dir.as_os_str().is_empty() {
        return Err(invalid("base_model_dir", "must be set"));
    }
    if !dir.is_dir() {
        return Err(invalid("base_model_dir", format!("{} is not a directory", dir.display())));
    }
    for f in ["config.json", "tokenizer.json"] {
        if !dir.join(f).exists() {
            return Err(invalid("base_model_dir", format!("{} has no {f}", dir.display())));
        }
    }
    let files = weight_files(dir).map_err(|e| invalid("base_model_dir", e.to_string()))?;
    if let Some(missing) = files.iter().find(|f| !f.exists()) {
        return Err(invalid("base_model_dir", format!("missing weights file {}", missing.display())));
    }
    LlamaConfig::from_dir(dir).map_err(|e| invalid("base_model_dir", e.to_string()))?;
    crate::train::data::ChatFormat::from_dir(dir).map_err(|e| invalid("base_model_dir", e.to_string()))?;
    if cfg.lora.target_modules.is_empty() {
        return Err(invalid("hyperparameters.lora.target_modules", "no module to adapt"));
    }
    match &spec.data {
        JobData::Inline(examples) => {
            if examples.is_empty() {
                return Err(invalid("inline.examples", "at least one example is needed"));
            }
            for (i, e) in examples.iter().enumerate() {
                if e.summary.trim().is_empty() {
                    return Err(invalid(&format!("inline.examples[{i}].summary"), "must not be empty"));
                }
                if e.conversation.turns.is_empty() {
                    return Err(invalid(&format!("inline.examples[{i}].conversation.turns"), "must not be empty"));
                }
            }
        }
        JobData::Jsonl(path) => {
            if !path.is_file() {
                return Err(invalid("jsonl_path", format!("{} is not a file", path.display())));
            }
        }
    }
    Ok(())
}
