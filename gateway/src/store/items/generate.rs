//! Generate's queries: the summaries the teacher wrote for rows that had none, what they
//! cost, and the ones it could not write.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    /// Records that the teacher could not summarize the item: the later stages skip it.
    pub async fn fail_generation(
        &self,
        run_id: &str,
        conversation_id: &str,
        error: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let update = sqlx::query(
            "UPDATE items SET generation_error = $3 \
             WHERE run_id = $1 AND conversation_id = $2 AND teacher_summary = '' AND generation_error IS NULL",
        )
        .bind(run_id)
        .bind(conversation_id)
        .bind(error);
        self.update_with_event(run_id, update, event).await
    }

    /// Records the summary the teacher wrote, and what it cost.
    pub async fn save_generated_summary(
        &self,
        run_id: &str,
        conversation_id: &str,
        summary: &str,
        usage: &TeacherUsage,
        trace_parent: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let update = sqlx::query(
            "UPDATE items SET teacher_summary = $3, teacher_input_tokens = $4, teacher_output_tokens = $5, teacher_ms = $6, \
             trace_parent = $7 WHERE run_id = $1 AND conversation_id = $2 AND teacher_summary = ''",
        )
        .bind(run_id)
        .bind(conversation_id)
        .bind(summary)
        .bind(usage.input_tokens as i64)
        .bind(usage.output_tokens as i64)
        .bind(usage.millis as i64)
        .bind(trace_parent);
        self.update_with_event(run_id, update, event).await
    }

    /// What the Generate stage cost over the whole run: summaries written and their usage.
    pub async fn generation_totals(&self, run_id: &str) -> anyhow::Result<(u32, TeacherUsage)> {
        let r = sqlx::query(
            "SELECT COUNT(teacher_ms) AS written, \
                    CAST(COALESCE(SUM(teacher_input_tokens), 0) AS BIGINT) AS input_tokens, \
                    CAST(COALESCE(SUM(teacher_output_tokens), 0) AS BIGINT) AS output_tokens, \
                    CAST(COALESCE(SUM(teacher_ms), 0) AS BIGINT) AS millis \
             FROM items WHERE run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        let millis: i64 = r.try_get("millis")?;
        Ok((
            to_u32(r.try_get("written")?),
            TeacherUsage {
                input_tokens: to_u32(r.try_get("input_tokens")?),
                output_tokens: to_u32(r.try_get("output_tokens")?),
                millis: millis.max(0) as u64,
            },
        ))
    }
}
