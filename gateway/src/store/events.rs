//! The event log of each run: sequence numbers from 1, stored before they are announced, so a
//! client that reconnects with the last number it saw misses nothing.

use arf_proto::v1 as pb;
use prost::Message;
use rusqlite::{OptionalExtension, params};

use super::{Store, now_ms};

impl Store {
    /// Appends an event and returns it with its sequence number and time.
    pub fn append_event(
        &self,
        run_id: &str,
        kind: pb::run_event::Kind,
    ) -> anyhow::Result<pb::RunEvent> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let event = append_in(&tx, run_id, kind)?;
        tx.commit()?;
        Ok(event)
    }

    pub fn events_after(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<pb::RunEvent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT event FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let events = stmt
            .query_map(params![run_id, after, limit as i64], |r| {
                r.get::<_, Vec<u8>>(0)
            })?
            .filter_map(|b| b.ok().and_then(|b| pb::RunEvent::decode(b.as_slice()).ok()))
            .collect();
        Ok(events)
    }

    /// The run's events that `keep` selects, read a page at a time (the lock is held for one
    /// page): the report's stage and training events, without every item's.
    pub fn events_where(
        &self,
        run_id: &str,
        keep: impl Fn(&pb::RunEvent) -> bool,
    ) -> anyhow::Result<Vec<pb::RunEvent>> {
        let mut kept = Vec::new();
        let mut after = 0;
        loop {
            let page = self.events_after(run_id, after, 1024)?;
            let Some(last) = page.last() else {
                return Ok(kept);
            };
            after = last.sequence;
            kept.extend(page.into_iter().filter(&keep));
        }
    }

    /// The run's newest event.
    pub fn last_event(&self, run_id: &str) -> anyhow::Result<Option<pb::RunEvent>> {
        let bytes: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT event FROM events WHERE run_id = ?1 ORDER BY seq DESC LIMIT 1",
                [run_id],
                |r| r.get(0),
            )
            .optional()?;
        bytes
            .map(|b| pb::RunEvent::decode(b.as_slice()).map_err(Into::into))
            .transpose()
    }

    pub fn last_event_sequence(&self, run_id: &str) -> anyhow::Result<u64> {
        let seq: Option<u64> = self.conn().query_row(
            "SELECT MAX(seq) FROM events WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        Ok(seq.unwrap_or(0))
    }
}

/// Appends an event inside the caller's transaction, so that a change and the event announcing it
/// are committed together (a watcher never sees one without the other).
pub(super) fn append_in(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    kind: pb::run_event::Kind,
) -> anyhow::Result<pb::RunEvent> {
    let last: Option<u64> = tx
        .query_row(
            "SELECT MAX(seq) FROM events WHERE run_id = ?1",
            [run_id],
            |r| r.get::<_, Option<u64>>(0),
        )
        .optional()?
        .flatten();
    let event = pb::RunEvent {
        sequence: last.unwrap_or(0) + 1,
        run_id: run_id.to_string(),
        time: Some(super::timestamp(now_ms())),
        kind: Some(kind),
    };
    tx.execute(
        "INSERT INTO events (run_id, seq, event) VALUES (?1, ?2, ?3)",
        params![run_id, event.sequence, event.encode_to_vec()],
    )?;
    Ok(event)
}
