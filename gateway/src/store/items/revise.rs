//! Revise's query: how an item's revision ended, with its event.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    pub async fn save_revision(
        &self,
        run_id: &str,
        conversation_id: &str,
        revised: Revised<'_>,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let Revised {
            outcome,
            summary: final_summary,
            rounds,
            analysis: revised_analysis,
            losing,
        } = revised;
        let losing = if losing.is_empty() {
            None
        } else {
            Some(serde_json::to_string(losing)?)
        };
        let update = sqlx::query(
            "UPDATE items SET revision_outcome = $3, final_summary = $4, revision_rounds = $5, revised_analysis = $6, \
             losing_candidates = $7 \
             WHERE run_id = $1 AND conversation_id = $2 AND revision_outcome IS NULL",
        )
        .bind(run_id)
        .bind(conversation_id)
        .bind(outcome.as_str())
        .bind(final_summary.map(str::to_string))
        .bind(rounds as i64)
        .bind(revised_analysis.map(|a| a.encode_to_vec()))
        .bind(losing);
        self.update_with_event(run_id, update, event).await
    }
}
