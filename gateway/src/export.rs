//! A run's data as JSONL: the refined (conversation -> summary) pairs, in the OpenAI chat
//! fine-tuning format (the same prompt the trainer and the student's evaluation use) or a plain
//! one; or the (chosen, rejected) preference pairs that revision makes, for DPO.

use arf_common::dataset::{Conversation, SUMMARIZE_SYSTEM_PROMPT, summarize_user_prompt};
use arf_proto::v1 as pb;
use serde_json::{Value, json};

use crate::store::{PreferencePair, RunRecord, Store, TrainingPair, Unimproved};

/// Items read from the store at a time: an export of any size holds one page in memory.
const PAGE: usize = 256;

/// The JSON lines of the run's export in `format`, page by page after the position `after` (0
/// first); with the position to go on from (`None`: the end). Training pairs follow the run's
/// own policy for unimproved summaries.
pub async fn page(
    store: &Store,
    run: &RunRecord,
    format: pb::ExportFormat,
    after: i64,
) -> anyhow::Result<(Vec<String>, Option<i64>)> {
    if matches!(
        format,
        pb::ExportFormat::Dpo | pb::ExportFormat::OpenaiPreference
    ) {
        let (pairs, last) = store.preference_pairs_page(&run.id, after, PAGE).await?;
        let lines = pairs.into_iter().map(|p| preference_line(p, format));
        return Ok((lines.collect(), last));
    }
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
        _ => {
            let mut messages = prompt_messages(&conversation);
            messages.push(assistant(summary));
            json!({ "messages": messages })
        }
    }
    .to_string()
}

/// A preference pair as TRL's conversational DPO layout or OpenAI's preference fine-tuning.
fn preference_line(pair: PreferencePair, format: pb::ExportFormat) -> String {
    let PreferencePair {
        conversation,
        chosen,
        rejected,
        rejected_source,
    } = pair;
    let prompt = prompt_messages(&conversation);
    match format {
        pb::ExportFormat::OpenaiPreference => json!({
            "input": { "messages": prompt },
            "preferred_output": [assistant(chosen)],
            "non_preferred_output": [assistant(rejected)],
        }),
        _ => json!({
            "id": conversation.id,
            "prompt": prompt,
            "chosen": [assistant(chosen)],
            "rejected": [assistant(rejected)],
            "rejected_source": rejected_source,
        }),
    }
    .to_string()
}

/// The system and user messages that ask for a conversation's summary: the prompt the student
/// is trained and evaluated with.
fn prompt_messages(conversation: &Conversation) -> Vec<Value> {
    vec![
        json!({"role": "system", "content": SUMMARIZE_SYSTEM_PROMPT}),
        json!({"role": "user", "content": summarize_user_prompt(conversation)}),
    ]
}

fn assistant(content: String) -> Value {
    json!({"role": "assistant", "content": content})
}
