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
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row as _};

use super::evaluation::Evaluation;
use super::outcome::{RevisionOutcome, Unimproved};
use super::{Store, Student, to_u32};

mod analyze;
mod evaluate;
mod export;
mod finetune;
mod generate;
mod ingest;
mod revise;

pub use export::PreferencePair;

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
    /// Personal data the gateway replaced in the row (`privacy: SCRUB_PII`), per kind.
    pub pii_scrubbed: arf_common::privacy::ScrubCounts,
}

impl NewItem {
    /// The bytes of text it holds (what an ingest batch is measured by).
    pub fn text_bytes(&self) -> usize {
        let turns: usize = self
            .conversation
            .turns
            .iter()
            .map(|t| t.text.len() + 8)
            .sum();
        let metadata: usize = self
            .conversation
            .metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        turns
            + metadata
            + self.conversation.id.len()
            + self.conversation.channel.len()
            + self.teacher_summary.len()
            + self.references.iter().map(String::len).sum::<usize>()
    }
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
    /// The candidates ranked below the accepted revision (none for any other outcome).
    pub losing_candidates: Vec<LosingCandidate>,
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

/// A candidate revision that the analyzer and the fidelity guard ranked below the one accepted
/// for its item (the guard refused it, or it scores worse): beside the accepted one, a
/// preference pair for DPO that best-of-n and later rounds make.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LosingCandidate {
    pub summary: String,
    /// The analyzer's severity-weighted error score of it.
    pub error_score: f64,
    /// Whether the fidelity guard passed it.
    pub faithful: bool,
}

/// What writing one teacher summary cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeacherUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub millis: u64,
}

/// Items read at a time by [`Store::item_page`].
const PAGE: usize = 512;

/// How an item's revision ended: its outcome, the revision kept (if any), the rounds it took
/// and the analysis of the revision.
#[derive(Debug, Clone, Copy)]
pub struct Revised<'a> {
    pub outcome: RevisionOutcome,
    pub summary: Option<&'a str>,
    pub rounds: u32,
    pub analysis: Option<&'a pb::AnalyzeResponse>,
    /// The candidates it beat (an accepted revision's; empty otherwise).
    pub losing: &'a [LosingCandidate],
}

impl Revised<'_> {
    /// Decided without a revision: clean, failed before any, ...
    pub fn without_revision(outcome: RevisionOutcome) -> Self {
        Self {
            outcome,
            summary: None,
            rounds: 0,
            analysis: None,
            losing: &[],
        }
    }
}

/// The items a stage has still to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Arrived without a teacher summary, and have none yet (none failed either).
    Generation,
    /// Have a teacher summary not yet analyzed.
    Analysis,
    /// Training items analyzed, without a revision outcome yet.
    Revision,
    /// Held-out items with a summary, not yet evaluated.
    Evaluation,
}

impl Pending {
    fn condition(self) -> &'static str {
        match self {
            Pending::Generation => "teacher_summary = '' AND generation_error IS NULL",
            Pending::Analysis => "analysis IS NULL AND teacher_summary != ''",
            Pending::Revision => {
                "split = 'train' AND analysis IS NOT NULL AND revision_outcome IS NULL"
            }
            Pending::Evaluation => {
                "split = 'holdout' AND evaluation IS NULL AND teacher_summary != ''"
            }
        }
    }
}

/// What [`from_row`] reads, by name.
const COLUMNS: &str = "conversation_id, line, split, conversation, teacher_summary, refs, analysis, \
                       revision_outcome, final_summary, revision_rounds, revised_analysis, losing_candidates, \
                       evaluation, trace_parent";

/// An item as stored. A value that does not decode is an error naming the item and the column
/// (a corrupt row must not pass for an item never analyzed).
pub(super) fn from_row(row: &AnyRow) -> anyhow::Result<ItemRecord> {
    let id: String = row.try_get("conversation_id")?;
    let within = |column: &str| format!("item {id:?}: stored {column}");
    let decode = |column: &str| -> anyhow::Result<Option<pb::AnalyzeResponse>> {
        row.try_get::<Option<Vec<u8>>, _>(column)?
            .map(|b| pb::AnalyzeResponse::decode(b.as_slice()))
            .transpose()
            .with_context(|| within(column))
    };
    let conversation: String = row.try_get("conversation")?;
    let refs: String = row.try_get("refs")?;
    let evaluation: Option<String> = row.try_get("evaluation")?;
    let losing: Option<String> = row.try_get("losing_candidates")?;
    let split: String = row.try_get("split")?;
    let line: i64 = row.try_get("line")?;
    Ok(ItemRecord {
        line: to_u32(line),
        split: if split == "holdout" {
            Split::Holdout
        } else {
            Split::Train
        },
        conversation: serde_json::from_str(&conversation)
            .with_context(|| within("conversation"))?,
        teacher_summary: row.try_get("teacher_summary")?,
        references: serde_json::from_str(&refs).with_context(|| within("refs"))?,
        analysis: decode("analysis")?,
        revision_outcome: match row.try_get::<Option<String>, _>("revision_outcome")? {
            None => None,
            Some(s) => Some(RevisionOutcome::parse(&s).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: unknown revision outcome {s:?}",
                    within("revision_outcome")
                )
            })?),
        },
        final_summary: row.try_get("final_summary")?,
        revision_rounds: row
            .try_get::<Option<i64>, _>("revision_rounds")?
            .map(to_u32),
        revised_analysis: decode("revised_analysis")?,
        losing_candidates: losing
            .map(|l| serde_json::from_str(&l))
            .transpose()
            .with_context(|| within("losing_candidates"))?
            .unwrap_or_default(),
        evaluation: evaluation
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .with_context(|| within("evaluation"))?,
        trace_parent: row.try_get("trace_parent")?,
    })
}

/// A query and its arguments, for [`Store::update_with_event`].
pub(super) type Update<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

impl Store {
    pub(super) async fn select_items(
        &self,
        run_id: &str,
        condition: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<ItemRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM items WHERE run_id = $1 AND ({condition}) ORDER BY line LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(run_id)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn items(&self, run_id: &str) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(run_id, "1 = 1", usize::MAX >> 2).await
    }

    /// The run's next page of items after `after_rowid` (0 for the first), with their rowids,
    /// in insertion (dataset) order; empty at the end. A page is one short query, so the other
    /// runs' stages commit in between, and a reader holds one page at a time (GetReport).
    pub async fn item_page(
        &self,
        run_id: &str,
        after_rowid: i64,
    ) -> anyhow::Result<Vec<(ItemRecord, i64)>> {
        self.page_by_rowid(run_id, "1 = 1", after_rowid, PAGE).await
    }

    /// Up to `limit` items matching `condition` after `after_rowid`, in insertion (dataset)
    /// order, with their rowids. By rowid, unique per item: clients may send two rows with one
    /// line number, and a page cut by line could lose one.
    pub(super) async fn page_by_rowid(
        &self,
        run_id: &str,
        condition: &str,
        after_rowid: i64,
        limit: usize,
    ) -> anyhow::Result<Vec<(ItemRecord, i64)>> {
        let sql = format!(
            "SELECT {COLUMNS}, rowid FROM items WHERE run_id = $1 AND rowid > $2 AND ({condition}) \
             ORDER BY rowid LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(run_id)
            .bind(after_rowid)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((from_row(r)?, r.try_get::<i64, _>("rowid")?)))
            .collect()
    }

    /// Up to `limit` of the items `stage` has still to do, in dataset order.
    pub async fn pending(
        &self,
        run_id: &str,
        stage: Pending,
        limit: usize,
    ) -> anyhow::Result<Vec<ItemRecord>> {
        self.select_items(run_id, stage.condition(), limit).await
    }

    /// Runs one UPDATE of an item's result and, when it changed the item (its result was still
    /// empty), appends `event`, in one transaction fenced by the run's lease.
    pub(super) async fn update_with_event(
        &self,
        run_id: &str,
        update: Update<'_>,
        event: Kind,
    ) -> anyhow::Result<Option<pb::RunEvent>> {
        let mut tx = self.pool.begin().await?;
        // The item first, the event (the lease check and the run's lock) last: the run's lock
        // is held for one statement and the commit. A fenced append rolls the update back.
        let event = match update.execute(&mut *tx).await?.rows_affected() {
            0 => None,
            _ => Some(self.append_in(&mut tx, run_id, event).await?),
        };
        tx.commit().await?;
        Ok(event)
    }

    /// The run's counts; `unimproved` (the run's policy) decides which items are training examples.
    pub async fn counts(
        &self,
        run_id: &str,
        unimproved: Unimproved,
    ) -> anyhow::Result<pb::RunCounts> {
        let accepted = RevisionOutcome::sql_list(RevisionOutcome::is_revised);
        let unimproved_outcomes = RevisionOutcome::sql_list(RevisionOutcome::is_unimproved);
        let trained = RevisionOutcome::sql_list(|o| o.trained_on(unimproved));
        let failed = RevisionOutcome::sql_list(|o| o == RevisionOutcome::Failed);
        let repaired = RevisionOutcome::sql_list(|o| o == RevisionOutcome::Repaired);
        // COUNT(*) FILTER: one form both databases read, and always a 64-bit integer.
        let sql = format!(
            "SELECT COUNT(*) AS rows_in,
                    COUNT(analysis) AS analyzed,
                    COUNT(*) FILTER (WHERE flagged = 1) AS flagged,
                    COUNT(*) FILTER (WHERE revision_outcome IN ({accepted})) AS accepted,
                    COUNT(*) FILTER (WHERE revision_outcome IN ({unimproved_outcomes})) AS rejected,
                    COUNT(*) FILTER (WHERE split = 'holdout') AS held_out,
                    COUNT(evaluation) AS evaluated,
                    COUNT(*) FILTER (WHERE needs_summary = 1) AS without_summary,
                    COUNT(teacher_ms) AS generated,
                    COUNT(*) FILTER (WHERE split = 'train' AND revision_outcome IN ({trained}))
                        AS training_examples,
                    COUNT(revision_outcome) AS revise_done,
                    COUNT(*) FILTER (WHERE analysis_failed = 1) AS analysis_failed,
                    COUNT(*) FILTER (WHERE revision_outcome IN ({failed})) AS revisions_failed,
                    COUNT(generation_error) AS generation_failed,
                    (SELECT COUNT(*) FROM bad_rows WHERE run_id = $1) AS bad_rows,
                    COUNT(*) FILTER (WHERE revision_outcome IN ({repaired})) AS repaired
             FROM items WHERE run_id = $1"
        );
        let r = sqlx::query(&sql).bind(run_id).fetch_one(&self.pool).await?;
        let n = |column: &str| -> anyhow::Result<u32> { Ok(to_u32(r.try_get(column)?)) };
        Ok(pb::RunCounts {
            rows: n("rows_in")?,
            analyzed: n("analyzed")?,
            flagged: n("flagged")?,
            revisions_accepted: n("accepted")?,
            revisions_rejected: n("rejected")?,
            held_out: n("held_out")?,
            evaluated: n("evaluated")?,
            without_summary: n("without_summary")?,
            generated: n("generated")?,
            training_examples: n("training_examples")?,
            revise_done: n("revise_done")?,
            analysis_failed: n("analysis_failed")?,
            revisions_failed: n("revisions_failed")?,
            generation_failed: n("generation_failed")?,
            bad_rows: n("bad_rows")?,
            repaired_by_rule: n("repaired")?,
        })
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
    #[tokio::test]
    async fn items_read_in_pages_are_all_there_once() {
        for (_db, store) in crate::store::testing::stores().await {
            read_in_pages(&store).await;
        }
    }

    async fn read_in_pages(store: &Store) {
        store
            .create_run("r", "r", &pb::RunConfig::default())
            .await
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
            pii_scrubbed: Default::default(),
        };
        let items: Vec<NewItem> = (0..1201).rev().map(item).collect();
        store.insert_items("r", &items).await.unwrap();
        let mut read = Vec::new();
        let mut after = 0;
        loop {
            let page = store.item_page("r", after).await.unwrap();
            let Some(&(_, last)) = page.last() else { break };
            assert!(last > after);
            after = last;
            read.extend(page.into_iter().map(|(item, _)| item));
        }
        assert_eq!(read.len(), 1201);
        let mut ids: Vec<&str> = read.iter().map(|i| i.conversation.id.as_str()).collect();
        // Insertion order, which the rows were given in reverse.
        assert!(read.windows(2).all(|w| w[0].line >= w[1].line));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1201);

        // The export pages the same way: every training pair once.
        for i in 0..1201 {
            let id = format!("c{i}");
            let event = item_event(&id);
            store
                .save_revision(
                    "r",
                    &id,
                    Revised::without_revision(RevisionOutcome::Clean),
                    event,
                )
                .await
                .unwrap();
        }
        let (mut exported, mut after) = (0, 0);
        loop {
            let (pairs, last) = store
                .training_pairs_page("r", Unimproved::Exclude, after, 256)
                .await
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
    #[tokio::test]
    async fn an_item_result_is_saved_once_with_its_one_event() {
        for (_db, store) in crate::store::testing::stores().await {
            saved_once(&store).await;
        }
    }

    /// Run "r" with one training item, "c1", whose teacher wrote `teacher_summary`.
    async fn one_item_run(store: &Store, teacher_summary: &str) {
        store
            .create_run("r", "r", &pb::RunConfig::default())
            .await
            .unwrap();
        let conversation: Conversation = serde_json::from_str(
            r#"{"id":"c1","channel":"chat","turns":[{"role":"customer","text":"Late order."}]}"#,
        )
        .unwrap();
        let item = NewItem {
            line: 1,
            split: Split::Train,
            conversation,
            teacher_summary: teacher_summary.into(),
            references: vec![],
            pii_scrubbed: Default::default(),
        };
        store.insert_items("r", &[item]).await.unwrap();
    }

    async fn saved_once(store: &Store) {
        one_item_run(store, "The order is late.").await;
        let analysis = pb::AnalyzeResponse::default();
        let first = store
            .save_analysis("r", "c1", &analysis, "", item_event("c1"))
            .await
            .unwrap();
        assert!(first.is_some());
        let again = store
            .save_analysis("r", "c1", &analysis, "", item_event("c1"))
            .await
            .unwrap();
        assert!(again.is_none(), "{again:?}");
        let items: Vec<_> = store
            .events_after("r", 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.kind, Some(Kind::Item(_))))
            .collect();
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(store.items("r").await.unwrap()[0].analysis.is_some());
    }

    /// An accepted revision keeps the candidates it beat, and each is one more preference pair
    /// after the one against the teacher's summary.
    #[tokio::test]
    async fn the_candidates_an_accepted_revision_beat_are_preference_pairs() {
        for (_db, store) in crate::store::testing::stores().await {
            candidates_are_pairs(&store).await;
        }
    }

    async fn candidates_are_pairs(store: &Store) {
        one_item_run(store, "The agent says the order is late.").await;
        let losing = [
            LosingCandidate {
                summary: "The customer says the order is late and was refunded.".into(),
                error_score: 0.0,
                faithful: false,
            },
            LosingCandidate {
                summary: "The order".into(),
                error_score: 2.5,
                faithful: true,
            },
        ];
        let revised = Revised {
            outcome: RevisionOutcome::Accepted,
            summary: Some("The customer says the order is late."),
            rounds: 1,
            analysis: Some(&pb::AnalyzeResponse::default()),
            losing: &losing,
        };
        store
            .save_revision("r", "c1", revised, item_event("c1"))
            .await
            .unwrap();
        assert_eq!(store.items("r").await.unwrap()[0].losing_candidates, losing);
        let (pairs, _) = store.preference_pairs_page("r", 0, 10).await.unwrap();
        let got: Vec<_> = pairs
            .iter()
            .map(|p| (p.chosen.as_str(), p.rejected.as_str(), p.rejected_source))
            .collect();
        let chosen = "The customer says the order is late.";
        assert_eq!(
            got,
            [
                (chosen, "The agent says the order is late.", "teacher"),
                (chosen, losing[0].summary.as_str(), "candidate"),
                (chosen, "The order", "candidate"),
            ]
        );
    }
}
