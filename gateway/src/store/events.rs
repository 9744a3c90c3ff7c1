//! The event log of each run: sequence numbers from 1, stored before they are announced, so a
//! client that reconnects with the last number it saw misses nothing. Appends are fenced by the
//! run's lease and serialized by the run's row (`runs.last_event_seq`): the log stays one
//! gap-free sequence whichever gateway writes it.

use anyhow::Context as _;
use arf_proto::v1 as pb;
use prost::Message;
use sqlx::{Any, Row as _, Transaction};

use super::Store;

impl Store {
    /// Appends an event and returns it with its sequence number and time.
    pub async fn append_event(
        &self,
        run_id: &str,
        kind: pb::run_event::Kind,
    ) -> anyhow::Result<pb::RunEvent> {
        let mut tx = self.pool.begin().await?;
        let event = self.append_in(&mut tx, run_id, kind).await?;
        tx.commit().await?;
        Ok(event)
    }

    pub async fn events_after(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<pb::RunEvent>> {
        let rows = sqlx::query(
            "SELECT event FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get("event")?;
                pb::RunEvent::decode(bytes.as_slice())
                    .with_context(|| format!("run {run_id:?}: a stored event does not decode"))
            })
            .collect()
    }

    /// The run's events that `keep` selects, read a page at a time: the report's stage and
    /// training events, without every item's.
    pub async fn events_where(
        &self,
        run_id: &str,
        keep: impl Fn(&pb::RunEvent) -> bool,
    ) -> anyhow::Result<Vec<pb::RunEvent>> {
        let mut kept = Vec::new();
        let mut after = 0;
        loop {
            let page = self.events_after(run_id, after, 1024).await?;
            let Some(last) = page.last() else {
                return Ok(kept);
            };
            after = last.sequence;
            kept.extend(page.into_iter().filter(&keep));
        }
    }

    /// The run's newest event.
    pub async fn last_event(&self, run_id: &str) -> anyhow::Result<Option<pb::RunEvent>> {
        let bytes: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT event FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        bytes
            .map(|b| pb::RunEvent::decode(b.as_slice()).map_err(Into::into))
            .transpose()
    }

    pub async fn last_event_sequence(&self, run_id: &str) -> anyhow::Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0).max(0) as u64)
    }

    /// Appends an event inside the caller's transaction, so that a change and the event
    /// announcing it are committed together (a watcher never sees one without the other).
    /// One statement takes the run's next number, checks the lease and locks the run's row to
    /// the commit (the run's appends go one at a time, numbered without gaps); refused with
    /// [`super::LeaseLost`] when another gateway holds the run. Called last in a transaction,
    /// so the lock is held for the least time.
    pub(super) async fn append_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        run_id: &str,
        kind: pb::run_event::Kind,
    ) -> anyhow::Result<pb::RunEvent> {
        let numbered: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE runs SET last_event_seq = last_event_seq + 1 \
             WHERE id = $1 AND {} RETURNING last_event_seq",
            super::leases::fenced(2)
        ))
        .bind(run_id)
        .bind(self.claim(run_id))
        .fetch_optional(&mut **tx)
        .await?;
        let sequence = match numbered {
            Some(seq) => seq.max(1) as u64,
            None => {
                // A newer claim, or the run ended (this fails), or no such run.
                self.fence(tx, run_id).await?;
                anyhow::bail!("no run {run_id} to append an event to")
            }
        };
        let event = pb::RunEvent {
            sequence,
            run_id: run_id.to_string(),
            time: Some(super::timestamp(self.clock_ms())),
            kind: Some(kind),
        };
        sqlx::query("INSERT INTO events (run_id, seq, event) VALUES ($1, $2, $3)")
            .bind(run_id)
            .bind(event.sequence as i64)
            .bind(event.encode_to_vec())
            .execute(&mut **tx)
            .await?;
        Ok(event)
    }
}
