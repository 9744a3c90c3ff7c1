//! The revision's output: a JSON object with one string, constrained while it is generated and
//! parsed afterwards. Output that does not parse is a reported failure, never a silent pass.

use serde_json::{Value, json};

use crate::error::EditorError;

/// The schema the revision is generated under. Whitespace between JSON tokens is fixed
/// (`whitespace_flexible: false`): with free whitespace a weak model can loop on spaces until its
/// token budget runs out. `minLength` forbids an empty revision.
pub fn revision_schema(max_chars: usize) -> Value {
    json!({
        "x-guidance": {"whitespace_flexible": false},
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": max_chars}},
        "required": ["summary"],
        "additionalProperties": false
    })
}

/// The model's constrained output as `T`; `what` names it in the error (a JSON object cut off
/// by the token budget says so through its finish reason).
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(
    output: &str,
    finish_reason: &str,
    what: &str,
) -> Result<T, EditorError> {
    serde_json::from_str(output.trim()).map_err(|e| {
        EditorError::BadOutput(format!(
            "{what} is not the expected JSON ({e}; finish reason {finish_reason:?}, {} bytes of output)",
            output.len()
        ))
    })
}

/// The revised summary in the model's output.
pub fn parse_revision(output: &str, finish_reason: &str) -> Result<String, EditorError> {
    #[derive(serde::Deserialize)]
    struct Revision {
        summary: String,
    }
    let revision: Revision = parse_json(output, finish_reason, "the revision")?;
    let summary = revision.summary.trim();
    if summary.is_empty() {
        return Err(EditorError::BadOutput(
            "the revised summary is empty".into(),
        ));
    }
    Ok(summary.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_and_reports_anything_else() {
        assert_eq!(
            parse_revision(r#"{"summary":" Fixed text. "}"#, "stop").unwrap(),
            "Fixed text."
        );
        let truncated = parse_revision(r#"{"summary":"Fixed te"#, "length")
            .unwrap_err()
            .to_string();
        assert!(truncated.contains("\"length\""), "{truncated}");
        assert!(parse_revision(r#"{"summary":"   "}"#, "stop").is_err());
        assert!(parse_revision("not json", "stop").is_err());
    }
}
