//! Ingest's queries: a run's rows stored in batches, and the rows it could not read.

// Part of `items`: its types, columns and row reader.
use super::*;

impl Store {
    /// Inserts a batch in one transaction. Returns, per item, whether it was new (false: its
    /// conversation id is already in the run).
    pub async fn insert_items(&self, run_id: &str, items: &[NewItem]) -> anyhow::Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        self.fence(&mut tx, run_id).await?;
        let mut inserted = Vec::with_capacity(items.len());
        // Personal data replaced in the new rows, per kind: one upsert per kind and batch.
        let mut scrubbed = std::collections::BTreeMap::<&str, i64>::new();
        for item in items {
            let n = sqlx::query(
                "INSERT INTO items (run_id, conversation_id, line, split, conversation, teacher_summary, refs, \
                 needs_summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(run_id)
            .bind(&item.conversation.id)
            .bind(item.line as i64)
            .bind(item.split.as_str())
            .bind(serde_json::to_string(&item.conversation)?)
            .bind(&item.teacher_summary)
            .bind(serde_json::to_string(&item.references)?)
            .bind(item.teacher_summary.is_empty() as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            inserted.push(n == 1);
            if n == 1 {
                for (kind, count) in &item.pii_scrubbed {
                    *scrubbed.entry(kind).or_default() += i64::from(*count);
                }
            }
        }
        for (kind, spans) in scrubbed {
            sqlx::query(
                "INSERT INTO pii_scrubbed (run_id, kind, spans) VALUES ($1, $2, $3) \
                 ON CONFLICT (run_id, kind) DO UPDATE SET spans = pii_scrubbed.spans + excluded.spans",
            )
            .bind(run_id)
            .bind(kind)
            .bind(spans)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.context("storing dataset rows")?;
        Ok(inserted)
    }

    /// The personal data replaced in the run's rows, per kind (empty unless it scrubs).
    pub async fn pii_scrubbed(
        &self,
        run_id: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
        let rows = sqlx::query("SELECT kind, spans FROM pii_scrubbed WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, to_u32(r.try_get("spans")?))))
            .collect()
    }

    pub async fn add_bad_row(&self, run_id: &str, row: &pb::BadRow) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        self.fence(&mut tx, run_id).await?;
        sqlx::query("INSERT INTO bad_rows (run_id, line, field, message) VALUES ($1, $2, $3, $4)")
            .bind(run_id)
            .bind(row.line as i64)
            .bind(&row.field)
            .bind(&row.message)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn bad_rows(&self, run_id: &str, limit: usize) -> anyhow::Result<Vec<pb::BadRow>> {
        let rows = sqlx::query(
            "SELECT line, field, message FROM bad_rows WHERE run_id = $1 ORDER BY line LIMIT $2",
        )
        .bind(run_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(pb::BadRow {
                    line: to_u32(r.try_get("line")?),
                    field: r.try_get("field")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }
}
