//! The TweetSumm corpus beside the checkout (../shared/data/tweetsumm), as the editor's benches
//! read it: each conversation as its turns, one `role: text` line each.

use std::path::Path;

use anyhow::Context as _;

/// The conversations of one TweetSumm file (`train.jsonl`, `valid.jsonl`, ...).
pub fn conversations(file: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/tweetsumm")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)?;
            Ok(row["turns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{}: {}",
                        t["role"].as_str().unwrap_or(""),
                        t["text"].as_str().unwrap_or("")
                    )
                })
                .collect())
        })
        .collect()
}
