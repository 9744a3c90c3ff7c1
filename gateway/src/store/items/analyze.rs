//! Analyze's query: an item's analysis, with its event.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    pub async fn save_analysis(
        &self,
        run_id: &str,
        conversation_id: &str,
        analysis: &pb::AnalyzeResponse,
        trace_parent: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let update = sqlx::query(
            "UPDATE items SET analysis = $3, flagged = $4, trace_parent = $5, analysis_failed = $6 \
             WHERE run_id = $1 AND conversation_id = $2 AND analysis IS NULL",
        )
        .bind(run_id)
        .bind(conversation_id)
        .bind(analysis.encode_to_vec())
        .bind(!analysis.findings.is_empty() as i64)
        .bind(trace_parent)
        .bind(!analysis.detector_failures.is_empty() as i64);
        self.update_with_event(run_id, update, event).await
    }
}
