//! A Hugging Face model directory in the layout mistral.rs 0.8.1 reads.
//!
//! Two layouts exist in the wild: the released Llama 3.1 checkpoints (`rope_theta` and
//! `rope_scaling` at the top of `config.json`, the chat template inside
//! `tokenizer_config.json`) and what transformers 5 writes (`rope_parameters`, a separate
//! `chat_template.jinja`). mistral.rs 0.8.1 refuses the second (`missing field rope_theta`).
//! The editor never refuses such a model: it hands mistral.rs a *view* of the directory, a
//! temporary folder of symbolic links to the original files beside a rewritten `config.json`
//! (and `tokenizer_config.json` with the template inlined). The user's files are not touched.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Map, Value};

/// transformers' default for a Llama config that names no base frequency.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The directory to give mistral.rs: the original, or a view that lives as long as this value.
pub struct LoadableDir {
    view: Option<tempfile::TempDir>,
    original: PathBuf,
}

impl LoadableDir {
    pub fn path(&self) -> &Path {
        self.view
            .as_ref()
            .map_or(self.original.as_path(), |v| v.path())
    }

    /// Whether the directory needed rewriting.
    #[cfg(test)]
    fn is_view(&self) -> bool {
        self.view.is_some()
    }
}

/// The directory itself when mistral.rs reads it as it is; a normalized view otherwise.
pub fn loadable_dir(dir: &Path) -> anyhow::Result<LoadableDir> {
    let config = read_json(&dir.join("config.json"))?.context("config.json is missing")?;
    let config = match config {
        Value::Object(map) => map,
        _ => anyhow::bail!("{}: config.json is not a JSON object", dir.display()),
    };
    let new_config = normalized_config(&config);
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = read_json(&tokenizer_config_path)?;
    let new_tokenizer_config = inlined_template(dir, tokenizer_config.as_ref())?;
    if new_config.is_none() && new_tokenizer_config.is_none() {
        return Ok(LoadableDir {
            view: None,
            original: dir.to_path_buf(),
        });
    }

    let view = tempfile::Builder::new()
        .prefix("arf-model-view-")
        .tempdir()
        .context("creating the model view")?;
    let rewritten = ["config.json", "tokenizer_config.json"];
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if rewritten.iter().any(|r| name == *r) {
            continue;
        }
        // Absolute targets: the view may be read from any working directory.
        let target = std::fs::canonicalize(entry.path())?;
        std::os::unix::fs::symlink(&target, view.path().join(&name))
            .with_context(|| format!("linking {} into the model view", target.display()))?;
    }
    write_json(
        &view.path().join("config.json"),
        &Value::Object(new_config.unwrap_or(config)),
    )?;
    if let Some(tc) = new_tokenizer_config.or(tokenizer_config) {
        write_json(&view.path().join("tokenizer_config.json"), &tc)?;
    }
    tracing::info!(model = %dir.display(), view = %view.path().display(),
        "model directory in the transformers 5 layout: serving it through a normalized view");
    Ok(LoadableDir {
        view: Some(view),
        original: dir.to_path_buf(),
    })
}

/// `config.json` with `rope_theta` (and `rope_scaling`) at the top level, or `None` when it
/// already has them.
fn normalized_config(config: &Map<String, Value>) -> Option<Map<String, Value>> {
    if config.contains_key("rope_theta") {
        return None;
    }
    let mut out = config.clone();
    let params = config.get("rope_parameters").and_then(Value::as_object);
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(DEFAULT_ROPE_THETA);
    out.insert("rope_theta".into(), theta.into());
    if let Some(p) = params {
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            let mut scaling = p.clone();
            scaling.remove("rope_theta");
            out.insert("rope_scaling".into(), Value::Object(scaling));
        }
    }
    out.remove("rope_parameters");
    Some(out)
}

/// `tokenizer_config.json` with the template of `chat_template.jinja` inlined, or `None` when
/// the template is already inside (or there is no separate file).
fn inlined_template(dir: &Path, tokenizer_config: Option<&Value>) -> anyhow::Result<Option<Value>> {
    if tokenizer_config
        .and_then(|c| c.get("chat_template"))
        .is_some_and(|t| !t.is_null())
    {
        return Ok(None);
    }
    let jinja = dir.join("chat_template.jinja");
    let Ok(template) = std::fs::read_to_string(&jinja) else {
        return Ok(None);
    };
    let mut out = match tokenizer_config {
        Some(Value::Object(map)) => map.clone(),
        Some(_) => anyhow::bail!(
            "{}: tokenizer_config.json is not a JSON object",
            dir.display()
        ),
        None => Map::new(),
    };
    out.insert("chat_template".into(), Value::String(template));
    Ok(Some(Value::Object(out)))
}

fn read_json(path: &Path) -> anyhow::Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rope_parameters_become_the_released_keys() {
        let t5 = obj(
            json!({"hidden_size": 8, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
        );
        let out = normalized_config(&t5).unwrap();
        assert_eq!(out["rope_theta"], json!(500000.0));
        assert_eq!(
            out["rope_scaling"],
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
        );
        assert!(!out.contains_key("rope_parameters"));

        let plain =
            obj(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}));
        let out = normalized_config(&plain).unwrap();
        assert_eq!(out["rope_theta"], json!(100000.0));
        assert!(!out.contains_key("rope_scaling"));

        assert!(
            normalized_config(&obj(json!({"rope_theta": 1.0}))).is_none(),
            "released layout: unchanged"
        );
        assert_eq!(
            normalized_config(&obj(json!({}))).unwrap()["rope_theta"],
            json!(DEFAULT_ROPE_THETA)
        );
    }

    #[test]
    fn a_view_links_the_weights_and_inlines_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"rope_parameters":{"rope_theta":5.0}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token":"<s>"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("chat_template.jinja"), "{{ messages }}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        let view = loadable_dir(dir.path()).unwrap();
        assert!(view.is_view());
        let read = |f: &str| std::fs::read_to_string(view.path().join(f)).unwrap();
        assert_eq!(read("model.safetensors"), "weights");
        let tc: Value = serde_json::from_str(&read("tokenizer_config.json")).unwrap();
        assert_eq!(
            tc,
            json!({"bos_token": "<s>", "chat_template": "{{ messages }}"})
        );
        let cfg: Value = serde_json::from_str(&read("config.json")).unwrap();
        assert_eq!(cfg["rope_theta"], json!(5.0));
        // The originals are untouched.
        assert!(
            std::fs::read_to_string(dir.path().join("config.json"))
                .unwrap()
                .contains("rope_parameters")
        );

        std::fs::write(dir.path().join("config.json"), r#"{"rope_theta":5.0}"#).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"chat_template":"t"}"#,
        )
        .unwrap();
        let same = loadable_dir(dir.path()).unwrap();
        assert!(!same.is_view());
        assert_eq!(same.path(), dir.path());
    }
}
