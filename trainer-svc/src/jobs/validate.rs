//! Up-front checks of a job, so a bad request fails at CreateJob rather than minutes later.

use super::{JobData, JobError, JobSpec};
use crate::model::BaseModel;

fn invalid(field: &str, message: impl Into<String>) -> JobError {
    JobError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// What every example must have, wherever it comes from; `field` is its path in the request.
pub fn check_example(field: &str, e: &crate::train::Example) -> Result<(), JobError> {
    if e.summary.trim().is_empty() {
        return Err(invalid(&format!("{field}.summary"), "must not be empty"));
    }
    if e.conversation.turns.is_empty() {
        return Err(invalid(
            &format!("{field}.conversation.turns"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// Checks files, the model, the data and the hyperparameters; the error names the field.
pub fn validate_spec(spec: &JobSpec) -> Result<(), JobError> {
    validate_base(&spec.config)?;
    validate_data(&spec.data)
}

/// The base model (its files, architecture, tokenizer and chat template) and the
/// hyperparameters: what CreateJob's `validate_only` checks.
pub fn validate_base(cfg: &crate::train::TrainConfig) -> Result<(), JobError> {
    cfg.validate().map_err(|(f, m)| invalid(&f, m))?;
    let base = &cfg.base_model_dir;
    if base.as_os_str().is_empty() {
        return Err(invalid("base_model_dir", "must be set"));
    }
    let bad_base = |e: &dyn std::fmt::Display| invalid("base_model_dir", e.to_string());
    let model = BaseModel::resolve(base).map_err(|e| bad_base(&e))?;
    model.check_files().map_err(|e| bad_base(&e))?;
    model.config().map_err(|e| bad_base(&e))?;
    crate::train::data::ChatFormat::for_base(base).map_err(|e| bad_base(&e))?;
    if cfg.lora.target_modules.is_empty() {
        return Err(invalid(
            "hyperparameters.lora.target_modules",
            "no module to adapt",
        ));
    }
    Ok(())
}

fn validate_data(data: &JobData) -> Result<(), JobError> {
    match data {
        JobData::Inline(examples) => {
            if examples.is_empty() {
                return Err(invalid("inline.examples", "at least one example is needed"));
            }
            for (i, e) in examples.iter().enumerate() {
                check_example(&format!("inline.examples[{i}]"), e)?;
            }
        }
        // Checked example by example as it arrived; the file is the trainer's own.
        JobData::Uploaded(_) => {}
        JobData::Jsonl(path) => {
            if !path.is_file() {
                return Err(invalid(
                    "jsonl_path",
                    format!("{} is not a file", path.display()),
                ));
            }
        }
    }
    Ok(())
}
