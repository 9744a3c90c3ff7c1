//! Evaluate's query: an item's evaluation, with its event.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    pub async fn save_evaluation(
        &self,
        run_id: &str,
        conversation_id: &str,
        evaluation: &Evaluation,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let update = sqlx::query(
            "UPDATE items SET evaluation = $3 WHERE run_id = $1 AND conversation_id = $2 AND evaluation IS NULL",
        )
        .bind(run_id)
        .bind(conversation_id)
        .bind(serde_json::to_string(evaluation)?);
        self.update_with_event(run_id, update, event).await
    }
}
