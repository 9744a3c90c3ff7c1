//! Items: one conversation of a run with its teacher summary, and its result per stage.
//! Every `save_*` only fills a result that is still empty, so a stage that runs twice for the
//! same item (after a restart) cannot record it twice; and it appends the item's event in the
//! same transaction, so a watcher never sees a result without its event (or the reverse), and
//! a result saved once has one event.

use anyhow::Context as _;
use arf_common::dataset::Conversation;
use arf_proto::v1 as pb;
use pb::run_event::Kind;
use prost::Message;
use rusqlite::params;

use super::Store;
use super::evaluation::Evaluation;
use super::events::append_in;
use super::outcome::{RevisionOutcome, Unimproved};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Holdout,
}

impl Split {
    fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Holdout => "holdout",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub line: u32,
    pub split: Split,
    pub conversation: Conversation,
    pub teacher_summary: String,
    pub references: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ItemRecord {
    pub line: u32,
    pub split: Split,
    pub conversation: Conversation,
    pub teacher_summary: String,
    pub references: Vec<String>,
    pub analysis: Option<pb::AnalyzeResponse>,
    pub revision_outcome: Option<RevisionOutcome>,
    pub final_summary: Option<String>,
    pub revision_rounds: Option<u32>,
    pub revised_analysis: Option<pb::AnalyzeResponse>,
    pub evaluation: Option<Evaluation>,
    pub trace_parent: Option<String>,
}

/// One (conversation -> summary) pair of the refined training set.
#[derive(Debug, Clone)]
pub struct TrainingPair {
    pub conversation: Conversation,
    pub summary: String,
    /// "revised" (an accepted revision) or "teacher" (the teacher's own summary).
    pub source: &'static str,
}

/// What writing one teacher summary cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeacherUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub millis: u64,
}

/// Items read at a time by [`Store::items_in_pages`].
const PAGE: usize = 512;

const COLUMNS: &str = "line, split, conversation, teacher_summary, refs, analysis, revision_outcome, final_summary, \
                       revision_rounds, revised_analysis, evaluation, trace_parent";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRecord> {
    let decode = |i: usize| -> rusqlite::Result<Option<pb::AnalyzeResponse>> {
        Ok(row
            .get::<_, Option<Vec<u8>>>(i)?
            .and_then(|b| pb::AnalyzeResponse::decode(b.as_slice()).ok()))
    };
    let json_err = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let conversation: String = row.get(2)?;
    let refs: String = row.get(4)?;
    let evaluation: Option<String> = row.get(10)?;
    Ok(ItemRecord {
        line: row.get(0)?,
        split: if row.get::<_, String>(1)? == "holdout" {
            Split::Holdout
        } else {
            Split::Train
        },
        conversation: serde_json::from_str(&conversation).map_err(|e| json_err(2, e))?,
        teacher_summary: row.get(3)?,
        references: serde_json::from_str(&refs).map_err(|e| json_err(4, e))?,
        analysis: decode(5)?,
        revision_outcome: match row.get::<_, Option<String>>(6)? {
            None => None,
            Some(s) => Some(RevisionOutcome::parse(&s).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    6,
                    rusqlite::types::Type::Text,
                    format!("unknown revision outcome {s:?}").into(),
                )
            })?),
        },
        final_summary: row.get(7)?,
        revision_rounds: row.get(8)?,
        revised_analysis: decode(9)?,
        evaluation: evaluation
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| json_err(10, e))?,
        trace_parent: row.get(11)?,
    })
}

impl Store {
    /// Inserts a batch in one transaction. Returns, per item, whether it was new (false: its
    /// conversation id is already in the run).
    pub fn insert_items(&self, run_id: &str, items: &[NewItem]) -> anyhow::Result<Vec<bool>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut inserted = Vec::with_capacity(items.len());
        {
            let mut stmt = tx.prepare(
                "INSERT OR IGNORE INTO items (run_id, conversation_id, line, split, conversation, teacher_summary, refs, \
                 needs_summary) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for item in items {
                let n = stmt.execute(params![
                    run_id,
                    item.conversation.id,
                    item.line,
                    item.split.as_str(),
                    serde_json::to_string(&item.conversation)?,
                    item.teacher_summary,
                    serde_json::to_string(&item.references)?,
                    item.teacher_summary.is_empty(),
                ])?;
                inserted.push(n == 1);
            }
        }
        tx.commit().context("storing dataset rows")?;
        Ok(inserted)
    }

    pub fn add_bad_row(&self, run_id: &str, row: &pb::BadRow) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO bad_rows (run_id, line, field, message) VALUES (?1, ?2, ?3, ?4)",
            params![run_id, row.line, row.field, row.message],
        )?;
        Ok(())
    }

    pub fn bad_rows(&self, run_id: &str, limit: usize) -> anyhow::Result<Vec<pb::BadRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT line, field, message FROM bad_rows WHERE run_id = ?1 ORDER BY line LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![run_id, limit as i64], |r| {
                Ok(pb::BadRow {
                    line: r.get(0)?,
                    field: r.get(1)?,
                    message: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn select_items(
        &self,
        run_id: &str,
        condition: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<ItemRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM items WHERE run_id = ?1 AND ({condition}) ORDER BY line LIMIT ?2"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let items = stmt
            .query_map(params![run_id, limit as i64], from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items)
    }

    pub fn items(&self, run_id: &str) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(run_id, "1", usize::MAX >> 1)
    }

    /// Every item of the run, read a page at a time: the store's one lock is held for a page,
    /// not for the whole run, so the other runs' stages commit in between (GetReport).
    pub fn items_in_pages(&self, run_id: &str) -> anyhow::Result<Vec<ItemRecord>> {
        let mut items = Vec::new();
        let mut after = 0i64;
        loop {
            let page = self.page_by_rowid(run_id, "1", after, PAGE)?;
            let Some(&(_, last)) = page.last() else {
                items.sort_by_key(|i: &ItemRecord| i.line);
                return Ok(items);
            };
            after = last;
            items.extend(page.into_iter().map(|(item, _)| item));
        }
    }

    /// Up to `limit` items matching `condition` after `after_rowid`, in insertion (dataset)
    /// order, with their rowids. By rowid, unique per item: clients may send two rows with one
    /// line number, and a page cut by line could lose one.
    fn page_by_rowid(
        &self,
        run_id: &str,
        condition: &str,
        after_rowid: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(ItemRecord, i64)>> {
        let sql = format!(
            "SELECT {COLUMNS}, rowid FROM items WHERE run_id = ?1 AND rowid > ?2 AND ({condition}) \
             ORDER BY rowid LIMIT ?3"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let page = stmt
            .query_map(params![run_id, after_rowid, limit as i64], |r| {
                Ok((from_row(r)?, r.get::<_, i64>(12)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page)
    }

    /// Items that arrived without a teacher summary and have none yet.
    pub fn pending_generation(
        &self,
        run_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(
            run_id,
            "teacher_summary = '' AND generation_error IS NULL",
            limit,
        )
    }

    /// Records that the teacher could not summarize the item: the later stages skip it.
    pub fn fail_generation(
        &self,
        run_id: &str,
        conversation_id: &str,
        error: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        self.update_with_event(
            run_id,
            "UPDATE items SET generation_error = ?3 \
             WHERE run_id = ?1 AND conversation_id = ?2 AND teacher_summary = '' AND generation_error IS NULL",
            params![run_id, conversation_id, error],
            event,
        )
    }

    /// Records the summary the teacher wrote, and what it cost.
    pub fn save_generated_summary(
        &self,
        run_id: &str,
        conversation_id: &str,
        summary: &str,
        usage: &TeacherUsage,
        trace_parent: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        self.update_with_event(
            run_id,
            "UPDATE items SET teacher_summary = ?3, teacher_input_tokens = ?4, teacher_output_tokens = ?5, teacher_ms = ?6, \
             trace_parent = ?7 WHERE run_id = ?1 AND conversation_id = ?2 AND teacher_summary = ''",
            params![run_id, conversation_id, summary, usage.input_tokens, usage.output_tokens, usage.millis, trace_parent],
            event,
        )
    }

    /// Runs one UPDATE of an item's result and, when it changed the item (its result was still
    /// empty), appends `event`, in one transaction.
    fn update_with_event(
        &self,
        run_id: &str,
        sql: &str,
        params: impl rusqlite::Params,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let event = match tx.execute(sql, params)? {
            0 => None,
            _ => Some(append_in(&tx, run_id, event)?),
        };
        tx.commit()?;
        Ok(event)
    }

    /// What the Generate stage cost over the whole run: summaries written and their usage.
    pub fn generation_totals(&self, run_id: &str) -> anyhow::Result<(u32, TeacherUsage)> {
        Ok(self.conn().query_row(
            "SELECT COUNT(teacher_ms), COALESCE(SUM(teacher_input_tokens), 0), COALESCE(SUM(teacher_output_tokens), 0), \
                    COALESCE(SUM(teacher_ms), 0) FROM items WHERE run_id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, TeacherUsage { input_tokens: r.get(1)?, output_tokens: r.get(2)?, millis: r.get(3)? })),
        )?)
    }

    /// Items with a teacher summary still to analyze.
    pub fn pending_analysis(&self, run_id: &str, limit: usize) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(run_id, "analysis IS NULL AND teacher_summary != ''", limit)
    }

    pub fn save_analysis(
        &self,
        run_id: &str,
        conversation_id: &str,
        analysis: &pb::AnalyzeResponse,
        trace_parent: &str,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        self.update_with_event(
            run_id,
            "UPDATE items SET analysis = ?3, flagged = ?4, trace_parent = ?5, analysis_failed = ?6 \
             WHERE run_id = ?1 AND conversation_id = ?2 AND analysis IS NULL",
            params![
                run_id,
                conversation_id,
                analysis.encode_to_vec(),
                !analysis.findings.is_empty(),
                trace_parent,
                !analysis.detector_failures.is_empty()
            ],
            event,
        )
    }

    /// Training items whose teacher summary was analyzed and has no revision outcome yet.
    pub fn pending_revision(&self, run_id: &str, limit: usize) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(
            run_id,
            "split = 'train' AND analysis IS NOT NULL AND revision_outcome IS NULL",
            limit,
        )
    }

    pub fn save_revision(
        &self,
        run_id: &str,
        conversation_id: &str,
        outcome: RevisionOutcome,
        final_summary: Option<&str>,
        rounds: u32,
        revised_analysis: Option<&pb::AnalyzeResponse>,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        self.update_with_event(
            run_id,
            "UPDATE items SET revision_outcome = ?3, final_summary = ?4, revision_rounds = ?5, revised_analysis = ?6 \
             WHERE run_id = ?1 AND conversation_id = ?2 AND revision_outcome IS NULL",
            params![run_id, conversation_id, outcome.as_str(), final_summary, rounds, revised_analysis.map(|a| a.encode_to_vec())],
            event,
        )
    }

    /// The refined training pairs: accepted revisions, clean teacher summaries, and, when the
    /// policy keeps them, the teacher summaries that never improved.
    pub fn training_pairs(
        &self,
        run_id: &str,
        unimproved: Unimproved,
    ) -> anyhow::Result<Vec<TrainingPair>> {
        Ok(self
            .training_pairs_page(run_id, unimproved, 0, usize::MAX >> 1)?
            .0)
    }

    /// The training pairs among the next `limit` revised items after the item `after` (a
    /// position from the previous page; 0 at the start), in dataset order, and the position of
    /// the last item read (the next page starts after it; `None`: no more items).
    pub fn training_pairs_page(
        &self,
        run_id: &str,
        unimproved: Unimproved,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<TrainingPair>, Option<i64>)> {
        let condition = "split = 'train' AND revision_outcome IS NOT NULL";
        let items = self.page_by_rowid(run_id, condition, after, limit)?;
        let last = items.last().map(|(_, rowid)| *rowid);
        let pairs = items
            .into_iter()
            .filter_map(|(i, _)| {
                let outcome = i.revision_outcome.filter(|o| o.trained_on(unimproved))?;
                Some(match (outcome.is_revised(), i.final_summary) {
                    (true, Some(revised)) => TrainingPair {
                        conversation: i.conversation,
                        summary: revised,
                        source: "revised",
                    },
                    _ => TrainingPair {
                        conversation: i.conversation,
                        summary: i.teacher_summary,
                        source: "teacher",
                    },
                })
            })
            .collect();
        Ok((pairs, last))
    }

    /// The teacher's summaries of the training conversations, as they are: what a student
    /// would learn from without ARF.
    pub fn unrevised_pairs(&self, run_id: &str) -> anyhow::Result<Vec<(Conversation, String)>> {
        let items = self.select_items(
            run_id,
            "split = 'train' AND teacher_summary != ''",
            usize::MAX >> 1,
        )?;
        Ok(items
            .into_iter()
            .map(|i| (i.conversation, i.teacher_summary))
            .collect())
    }

    pub fn pending_evaluation(
        &self,
        run_id: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(
            run_id,
            "split = 'holdout' AND evaluation IS NULL AND teacher_summary != ''",
            limit,
        )
    }

    pub fn save_evaluation(
        &self,
        run_id: &str,
        conversation_id: &str,
        evaluation: &Evaluation,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        self.update_with_event(
            run_id,
            "UPDATE items SET evaluation = ?3 WHERE run_id = ?1 AND conversation_id = ?2 AND evaluation IS NULL",
            params![run_id, conversation_id, serde_json::to_string(evaluation)?],
            event,
        )
    }

    /// The run's counts; `unimproved` (the run's policy) decides which items are training examples.
    pub fn counts(&self, run_id: &str, unimproved: Unimproved) -> anyhow::Result<pb::RunCounts> {
        let conn = self.conn();
        let accepted = RevisionOutcome::sql_list(RevisionOutcome::is_revised);
        let unimproved_outcomes = RevisionOutcome::sql_list(RevisionOutcome::is_unimproved);
        let trained = RevisionOutcome::sql_list(|o| o.trained_on(unimproved));
        let failed = RevisionOutcome::sql_list(|o| o == RevisionOutcome::Failed);
        let sql = format!(
            "SELECT COUNT(*),
                    COUNT(analysis),
                    COALESCE(SUM(flagged), 0),
                    COALESCE(SUM(revision_outcome IN ({accepted})), 0),
                    COALESCE(SUM(revision_outcome IN ({unimproved_outcomes})), 0),
                    COALESCE(SUM(split = 'holdout'), 0),
                    COUNT(evaluation),
                    COALESCE(SUM(needs_summary), 0),
                    COUNT(teacher_ms),
                    COALESCE(SUM(split = 'train' AND revision_outcome IN ({trained})), 0),
                    COUNT(revision_outcome),
                    COALESCE(SUM(analysis_failed), 0),
                    COALESCE(SUM(revision_outcome IN ({failed})), 0),
                    COUNT(generation_error)
             FROM items WHERE run_id = ?1"
        );
        let counts = conn.query_row(&sql, [run_id], |r| {
            Ok(pb::RunCounts {
                rows: r.get(0)?,
                analyzed: r.get(1)?,
                flagged: r.get(2)?,
                revisions_accepted: r.get(3)?,
                revisions_rejected: r.get(4)?,
                held_out: r.get(5)?,
                evaluated: r.get(6)?,
                without_summary: r.get(7)?,
                generated: r.get(8)?,
                training_examples: r.get(9)?,
                revise_done: r.get(10)?,
                analysis_failed: r.get(11)?,
                revisions_failed: r.get(12)?,
                generation_failed: r.get(13)?,
                bad_rows: 0,
            })
        })?;
        let bad_rows: u32 = conn.query_row(
            "SELECT COUNT(*) FROM bad_rows WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        Ok(pb::RunCounts { bad_rows, ..counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn item_event(id: &str) -> Kind {
        Kind::Item(pb::ItemProgress {
            conversation_id: id.into(),
            stage: pb::Stage::Analyze as i32,
            outcome: "clean".into(),
            findings: 0,
        })
    }

    /// GetReport reads a large run page by page (by rowid: two rows may share a line number),
    /// and gets every item once, in line order.
    #[test]
    fn items_read_in_pages_are_all_there_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("arf.db")).unwrap();
        store
            .create_run("r", "r", &pb::RunConfig::default())
            .unwrap();
        let item = |i: u32| NewItem {
            // Every line twice: pages cannot be cut by line.
            line: i / 2,
            split: Split::Train,
            conversation: serde_json::from_str(&format!(
                r#"{{"id":"c{i}","channel":"chat","turns":[{{"role":"customer","text":"t"}}]}}"#
            ))
            .unwrap(),
            teacher_summary: "s".into(),
            references: vec![],
        };
        let items: Vec<NewItem> = (0..1201).rev().map(item).collect();
        store.insert_items("r", &items).unwrap();
        let read = store.items_in_pages("r").unwrap();
        assert_eq!(read.len(), 1201);
        let mut ids: Vec<&str> = read.iter().map(|i| i.conversation.id.as_str()).collect();
        assert!(read.windows(2).all(|w| w[0].line <= w[1].line));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1201);

        // The export pages the same way: every training pair once.
        for i in 0..1201 {
            let id = format!("c{i}");
            let event = item_event(&id);
            store
                .save_revision("r", &id, RevisionOutcome::Clean, None, 0, None, event)
                .unwrap();
        }
        let (mut exported, mut after) = (0, 0);
        loop {
            let (pairs, last) = store
                .training_pairs_page("r", Unimproved::Exclude, after, 256)
                .unwrap();
            exported += pairs.len();
            match last {
                Some(position) => after = position,
                None => break,
            }
        }
        assert_eq!(exported, 1201);
    }

    /// An item's result and its event are one commit: the event is there exactly when the
    /// result is, and a result saved a second time (a stage redone after a restart) adds none.
    #[test]
    fn an_item_result_is_saved_once_with_its_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("arf.db")).unwrap();
        store
            .create_run("r", "r", &pb::RunConfig::default())
            .unwrap();
        let conversation: Conversation = serde_json::from_str(
            r#"{"id":"c1","channel":"chat","turns":[{"role":"customer","text":"Late order."}]}"#,
        )
        .unwrap();
        store
            .insert_items(
                "r",
                &[NewItem {
                    line: 1,
                    split: Split::Train,
                    conversation,
                    teacher_summary: "The order is late.".into(),
                    references: vec![],
                }],
            )
            .unwrap();
        let analysis = pb::AnalyzeResponse::default();
        let first = store
            .save_analysis("r", "c1", &analysis, "", item_event("c1"))
            .unwrap();
        assert!(first.is_some());
        let again = store
            .save_analysis("r", "c1", &analysis, "", item_event("c1"))
            .unwrap();
        assert!(again.is_none(), "{again:?}");
        let items: Vec<_> = store
            .events_after("r", 0, 100)
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, Some(Kind::Item(_))))
            .collect();
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(store.items("r").unwrap()[0].analysis.is_some());
    }
}
