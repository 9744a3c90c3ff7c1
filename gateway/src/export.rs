//! The refined (conversation -> summary) pairs as JSONL: the OpenAI chat fine-tuning format
//! (the same prompt the trainer and the student's evaluation use) or a plain one.

use arf_common::dataset::{SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
use arf_proto::v1 as pb;
use serde_json::json;

use crate::store::Store;
use crate::store::items::Unimproved;

/// One JSON line per training pair of the run, in the run's own policy for unimproved summaries.
pub fn lines(
    store: &Store,
    run: &crate::store::RunRecord,
    format: pb::ExportFormat,
) -> anyhow::Result<Vec<String>> {
    let pairs = store.training_pairs(&run.id, Unimproved::of(&run.config))?;
    Ok(pairs
        .into_iter()
        .map(|(conversation, summary, source)| match format {
            pb::ExportFormat::Plain => json!({
                "id": conversation.id,
                "channel": conversation.channel,
                "turns": conversation.turns,
                "summary": summary,
                "source": source,
            }),
            _ => json!({"messages": [
                {"role": "system", "content": SUMMARIZE_SYSTEM_PROMPT},
                {"role": "user", "content": summarize_user_prompt(&conversation)},
                {"role": "assistant", "content": summary},
            ]}),
        })
        .map(|v| v.to_string())
        .collect())
}
