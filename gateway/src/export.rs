//! The refined (conversation -> summary) pairs as JSONL: the OpenAI chat fine-tuning format
//! (the same prompt the trainer and the student's evaluation use) or a plain one.

use arf_common::dataset::{SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
use arf_proto::v1 as pb;
use serde_json::json;

use crate::store::{RunRecord, Store, TrainingPair, Unimproved};

/// Items read from the store at a time: an export of any size holds one page in memory.
const PAGE: usize = 256;

/// The JSON lines of the run's training pairs, in the run's own policy for unimproved summaries,
/// page by page after the position `after` (0 first); with the position to go on from (`None`:
/// the end).
pub async fn page(
    store: &Store,
    run: &RunRecord,
    format: pb::ExportFormat,
    after: i64,
) -> anyhow::Result<(Vec<String>, Option<i64>)> {
    let (pairs, last) = store
        .training_pairs_page(&run.id, Unimproved::of(&run.config), after, PAGE)
        .await?;
    Ok((
        pairs.into_iter().map(|pair| line(pair, format)).collect(),
        last,
    ))
}

fn line(pair: TrainingPair, format: pb::ExportFormat) -> String {
    let TrainingPair {
        conversation,
        summary,
        source,
    } = pair;
    match format {
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
    }
    .to_string()
}
