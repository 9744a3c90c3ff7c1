//! CreateRun: the spec is checked, the run recorded, and the rows (streamed by the client or
//! read from a JSONL file on this machine) are validated and stored in batches. A bad row is
//! reported with its line number and field, and skipped or fatal as the spec says.

use std::pin::Pin;
use std::sync::Arc;

use arf_common::bounds;
use arf_common::dataset::{
    OnBadRow, Record, conversation_from_wire, read_jsonl_opened, stream_jsonl,
};
use arf_common::privacy::scrub::{ScrubCounts, scrub_record};
use arf_common::status::field_violations;
use arf_proto::v1 as pb;
use futures::{Stream, StreamExt};
use pb::run_event::Kind;
use rand::Rng;

use super::revise::MAX_REVISION_CANDIDATES;

use super::{Pipeline, stages};
use crate::store::{LeaseLost, NewItem, Split};

const BATCH: usize = 256;
/// Bytes of rows held before they are written (a batch is cut short at this size): one row may
/// be up to a line's or a message's limit (8 MiB, 16 MiB), so 256 rows alone would not bound it.
const BATCH_BYTES: usize = 8 << 20;
/// Rows a dataset file is read ahead of the store: up to 8 MiB each.
const READ_AHEAD: usize = 8;
const DEFAULT_HOLDOUT: f32 = 0.2;

/// The rows a client streams after the spec: each row, or what broke the stream.
pub type RowStream = Pin<Box<dyn Stream<Item = Result<pb::DatasetRow, tonic::Status>> + Send>>;

pub enum RowSource {
    /// Rows sent by the client after the spec.
    Stream(RowStream),
    /// A JSONL file on the gateway's machine, open (confined when it was opened).
    File(arf_common::paths::Opened),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The spec itself is wrong (nothing was created).
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    /// A bad row under the FAIL policy (the run was recorded as FAILED).
    #[error("line {}: {}: {}", .row.line, .row.field, .row.message)]
    BadRow { run_id: String, row: pb::BadRow },
    /// The client's stream broke.
    #[error("reading the rows: {0}")]
    Transport(tonic::Status),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn invalid(field: &str, message: impl Into<String>) -> IngestError {
    IngestError::InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks what can be checked before any row is read.
fn validate(spec: &pb::RunSpec) -> Result<(), IngestError> {
    if spec.display_name.chars().count() > bounds::MAX_DISPLAY_NAME {
        return Err(invalid(
            "spec.display_name",
            format!("at most {} characters", bounds::MAX_DISPLAY_NAME),
        ));
    }
    let c = spec.config.as_ref();
    if let Some(c) = c {
        if let Some(training) = &c.training {
            bounds::check_hyperparameters(training)
                .map_err(|(f, m)| invalid(&format!("spec.config.training.{f}"), m))?;
        }
        for (i, s) in c.stages.iter().enumerate() {
            if !matches!(pb::Stage::try_from(*s), Ok(st) if st != pb::Stage::Unspecified) {
                return Err(invalid(
                    &format!("spec.config.stages[{i}]"),
                    "unknown stage",
                ));
            }
        }
        if c.revision_rounds > 10 {
            return Err(invalid("spec.config.revision_rounds", "at most 10"));
        }
        if c.revision_candidates > MAX_REVISION_CANDIDATES {
            return Err(invalid(
                "spec.config.revision_candidates",
                format!("at most {MAX_REVISION_CANDIDATES}"),
            ));
        }
        if pb::AcceptanceRule::try_from(c.acceptance).is_err() {
            return Err(invalid(
                "spec.config.acceptance",
                format!("unknown acceptance rule {}", c.acceptance),
            ));
        }
        // Enums: an unknown value is refused, never read as the default.
        if pb::UnimprovedPolicy::try_from(c.on_unimproved).is_err() {
            return Err(invalid(
                "spec.config.on_unimproved",
                format!("unknown policy {}", c.on_unimproved),
            ));
        }
        if pb::RepairMode::try_from(c.repair).is_err() {
            return Err(invalid(
                "spec.config.repair",
                format!("unknown repair mode {}", c.repair),
            ));
        }
        if pb::Privacy::try_from(c.privacy).is_err() {
            return Err(invalid(
                "spec.config.privacy",
                format!("unknown privacy mode {}", c.privacy),
            ));
        }
        let most = bounds::MAX_GENERATED_TOKENS;
        if c.revision_max_tokens > most {
            return Err(invalid(
                "spec.config.revision_max_tokens",
                format!("at most {most}"),
            ));
        }
        if let Some(e) = &c.evaluation {
            if !(0.0..1.0).contains(&e.holdout_fraction) {
                return Err(invalid(
                    "spec.config.evaluation.holdout_fraction",
                    "must be in [0, 1)",
                ));
            }
            if e.max_summary_tokens > most {
                return Err(invalid(
                    "spec.config.evaluation.max_summary_tokens",
                    format!("at most {most}"),
                ));
            }
        }
    }
    Ok(())
}

/// On a gateway that hosts no students (the `gateway` binary links no inference engine), an
/// evaluating run must say where its student is served, and cannot ask for the comparison that
/// serves two more models.
fn students_served_elsewhere(config: &pb::RunConfig) -> Result<(), IngestError> {
    const HOSTED: &str = "or run the gateway as `arf gateway`, which serves students in-process";
    for (asked, field) in [
        (config.compare_unrevised, "spec.config.compare_unrevised"),
        (
            config.compare_filter_only,
            "spec.config.compare_filter_only",
        ),
        (config.compare_oracle, "spec.config.compare_oracle"),
    ] {
        if asked {
            return Err(invalid(
                field,
                format!("this gateway hosts no models to compare; drop the comparison, {HOSTED}"),
            ));
        }
    }
    let endpoint = config
        .evaluation
        .as_ref()
        .map_or("", |e| e.student_endpoint.as_str());
    if endpoint.is_empty() {
        return Err(invalid(
            "spec.config.evaluation.student_endpoint",
            format!(
                "this gateway hosts no students: name an editor that serves the student, {HOSTED}"
            ),
        ));
    }
    Ok(())
}

/// Held out or not, by a seeded hash of the conversation id: the same for every order of rows
/// and every restart.
fn split(seed: u64, id: &str, fraction: f32) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's high bits barely move for ids that differ in their last characters: mix them
    // (the splitmix64 finalizer) before reading a uniform number out of them.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    if unit < f64::from(fraction) {
        Split::Holdout
    } else {
        Split::Train
    }
}

const SUMMARY_REQUIRED: &str = "a teacher summary is required when the run has no Generate stage";

fn new_run_id() -> String {
    let mut rng = rand::rng();
    format!("run-{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff)
}

/// A row from the wire as a record, or what is wrong with it. Without a Generate stage, every
/// row must bring its teacher summary.
fn from_wire(row: pb::DatasetRow, line: u32, generates: bool) -> Result<Record, pb::BadRow> {
    let bad = |field: String, message: String| pb::BadRow {
        line,
        field,
        message,
    };
    let conversation = conversation_from_wire(row.conversation, "conversation").map_err(|s| {
        let (field, message) = field_violations(&s)
            .into_iter()
            .next()
            .unwrap_or_else(|| ("conversation".into(), s.message().into()));
        bad(field, message)
    })?;
    let summary = match row.teacher_summary.trim() {
        "" if generates => None,
        "" => return Err(bad("teacher_summary".into(), SUMMARY_REQUIRED.into())),
        _ => Some(row.teacher_summary),
    };
    let record = Record {
        conversation,
        summary,
        references: row.references,
        labels: vec![],
        injections: vec![],
    };
    record
        .validate()
        .map_err(|(field, message)| bad(field, message))?;
    Ok(record)
}

impl Pipeline {
    /// Records the run, stores its rows, and starts it. Returns the run id.
    pub async fn create_run(
        self: &Arc<Self>,
        spec: pb::RunSpec,
        rows: RowSource,
    ) -> Result<String, IngestError> {
        validate(&spec)?;
        let config = spec.config.clone().unwrap_or_default();
        let evaluation = config.evaluation.clone().unwrap_or_default();
        let evaluates = stages(&config).contains(&pb::Stage::Evaluate);
        if evaluates && self.student_host.is_none() {
            students_served_elsewhere(&config)?;
        }
        let fraction = if !evaluates {
            0.0
        } else if evaluation.holdout_fraction > 0.0 {
            evaluation.holdout_fraction
        } else {
            DEFAULT_HOLDOUT
        };
        let fail_fast = spec.on_bad_row == pb::BadRowPolicy::Fail as i32;

        let run_id = new_run_id();
        let name = if spec.display_name.is_empty() {
            run_id.clone()
        } else {
            spec.display_name.clone()
        };
        // INGESTING until the last row is stored: a run that stops partway never runs.
        self.store().create_run(&run_id, &name, &config).await?;
        // Its lease is renewed while the rows come (a large upload outlasts a lease).
        let _ingesting = self.ingesting(&run_id);
        let stored = async {
            self.emit(&run_id, Kind::State(pb::RunState::Ingesting as i32))
                .await?;

            let generates = stages(&config).contains(&pb::Stage::Generate);
            let scrubs = config.privacy() == pb::Privacy::ScrubPii;
            let mut records = self.records(rows, generates);
            let mut batch = Vec::with_capacity(BATCH);
            let mut batch_bytes = 0usize;
            let mut good = 0usize;
            let (mut seen, mut bad) = (0usize, 0usize);
            loop {
                let next = records.next().await;
                let done = next.is_none();
                match &next {
                    Some(Ok(_)) => seen += 1,
                    Some(Err(RowError::Bad(_))) => (seen, bad) = (seen + 1, bad + 1),
                    Some(Err(RowError::Transport(_))) | None => {}
                }
                let too_many = if seen > bounds::MAX_ROWS {
                    Some(format!("at most {} rows per run", bounds::MAX_ROWS))
                } else if bad > bounds::MAX_BAD_ROWS {
                    Some(format!(
                        "more than {} bad rows: is this the right file? (the first ones are in the run's events)",
                        bounds::MAX_BAD_ROWS
                    ))
                } else {
                    None
                };
                if let Some(message) = too_many {
                    self.set_state(&run_id, pb::RunState::Failed, &format!("rows: {message}"))
                        .await?;
                    return Err(invalid("rows", message));
                }
                match next {
                    Some(Ok((line, mut record, forced))) => {
                        // Before the row is stored: nothing later holds the raw values.
                        let pii_scrubbed = if scrubs {
                            scrub_record(&mut record)
                        } else {
                            ScrubCounts::new()
                        };
                        let item = NewItem {
                            line,
                            split: forced.unwrap_or_else(|| {
                                split(evaluation.seed, &record.conversation.id, fraction)
                            }),
                            teacher_summary: record.summary.unwrap_or_default(),
                            references: record.references,
                            conversation: record.conversation,
                            pii_scrubbed,
                        };
                        batch_bytes += item.text_bytes();
                        batch.push(item);
                    }
                    Some(Err(RowError::Bad(row))) => {
                        self.bad_row(&run_id, &row, fail_fast).await?;
                    }
                    Some(Err(RowError::Transport(status))) => {
                        self.set_state(
                            &run_id,
                            pb::RunState::Failed,
                            &format!("the client's row stream broke: {}", status.message()),
                        )
                        .await?;
                        return Err(IngestError::Transport(status));
                    }
                    None => {}
                }
                if batch.len() >= BATCH || batch_bytes >= BATCH_BYTES || (done && !batch.is_empty())
                {
                    batch_bytes = 0;
                    let inserted = self.store().insert_items(&run_id, &batch).await?;
                    for (item, new) in batch.drain(..).zip(inserted) {
                        if new {
                            good += 1;
                        } else {
                            let row = pb::BadRow {
                                line: item.line,
                                field: "conversation.id".into(),
                                message: format!(
                                    "duplicate conversation id {:?}",
                                    item.conversation.id
                                ),
                            };
                            self.bad_row(&run_id, &row, fail_fast).await?;
                        }
                    }
                    if self.cancelled_while_ingesting(&run_id).await? {
                        return Ok(());
                    }
                }
                if done {
                    break;
                }
            }
            if good == 0 {
                self.set_state(
                    &run_id,
                    pb::RunState::Failed,
                    "the dataset has no valid rows",
                )
                .await?;
                return Err(invalid("rows", "the dataset has no valid rows"));
            }
            // QUEUED only now, and only if no CancelRun came meanwhile.
            if self.store().finish_ingest(&run_id).await? {
                self.notify(&run_id);
                self.start(&run_id);
            }
            Ok::<(), IngestError>(())
        };
        match stored.await {
            // CancelRun (or another gateway that took the run over) ended the run while its rows
            // came: the store takes none of them now. Stop reading; the answer shows the run as
            // it stands.
            Err(IngestError::Internal(e)) if e.downcast_ref::<LeaseLost>().is_some() => Ok(run_id),
            stored => stored.map(|()| run_id),
        }
    }

    /// CancelRun during the upload marks the run CANCELLED in the store (or, when another
    /// gateway got it, asks this one to): stop reading rows.
    async fn cancelled_while_ingesting(&self, run_id: &str) -> anyhow::Result<bool> {
        if self.store().cancel_requested(run_id).await? {
            self.set_state(run_id, pb::RunState::Cancelled, "cancelled by request")
                .await?;
            return Ok(true);
        }
        Ok(self
            .store()
            .run(run_id)
            .await?
            .is_some_and(|r| r.state == pb::RunState::Cancelled))
    }

    /// Records a bad row; under the FAIL policy also fails the run.
    async fn bad_row(
        &self,
        run_id: &str,
        row: &pb::BadRow,
        fatal: bool,
    ) -> Result<(), IngestError> {
        self.store().add_bad_row(run_id, row).await?;
        self.emit(run_id, Kind::BadRow(row.clone())).await?;
        if fatal {
            let message = format!("line {}: {}: {}", row.line, row.field, row.message);
            self.set_state(run_id, pb::RunState::Failed, &message)
                .await?;
            return Err(IngestError::BadRow {
                run_id: run_id.to_string(),
                row: row.clone(),
            });
        }
        Ok(())
    }

    /// Both sources as one stream of (line, record) or bad rows.
    /// Each record comes with the split its row asked for, if any.
    fn records(
        &self,
        rows: RowSource,
        generates: bool,
    ) -> Pin<Box<dyn Stream<Item = Result<(u32, Record, Option<Split>), RowError>> + Send>> {
        match rows {
            RowSource::Stream(stream) => Box::pin(stream.enumerate().map(move |(i, row)| {
                let row = row.map_err(RowError::Transport)?;
                let line = if row.line > 0 { row.line } else { i as u32 + 1 };
                let forced = match row.split() {
                    pb::RowSplit::Unspecified => None,
                    pb::RowSplit::Train => Some(Split::Train),
                    pb::RowSplit::Holdout => Some(Split::Holdout),
                };
                from_wire(row, line, generates)
                    .map(|r| (line, r, forced))
                    .map_err(RowError::Bad)
            })),
            RowSource::File(opened) => {
                // Opened (and its open errors answered) by CreateRun's handler.
                let source = opened.path.display().to_string();
                let reader = read_jsonl_opened(opened.file, source, OnBadRow::Skip);
                let rows = stream_jsonl(reader, READ_AHEAD);
                Box::pin(rows.map(move |item| match item {
                    Ok((line, record)) if record.summary.is_none() && !generates => {
                        Err(RowError::Bad(pb::BadRow {
                            line: line as u32,
                            field: "summary".into(),
                            message: SUMMARY_REQUIRED.into(),
                        }))
                    }
                    Ok((line, record)) => Ok((line as u32, record, None)),
                    Err(bad) => Err(RowError::Bad(pb::BadRow {
                        line: bad.line as u32,
                        field: bad.field,
                        message: bad.message,
                    })),
                }))
            }
        }
    }
}

enum RowError {
    Bad(pb::BadRow),
    Transport(tonic::Status),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_seeded_and_close_to_the_fraction() {
        let ids: Vec<String> = (0..2000).map(|i| format!("conv-{i}")).collect();
        let held = |seed| {
            ids.iter()
                .filter(|id| split(seed, id, 0.2) == Split::Holdout)
                .count()
        };
        // Pinned: a gateway upgraded or restarted mid-run must put every item where it was.
        assert_eq!(held(7), 386);
        let first: Vec<usize> = (0..12)
            .filter(|i| split(7, &format!("conv-{i}"), 0.2) == Split::Holdout)
            .collect();
        assert_eq!(first, [3]);
        assert_ne!(
            ids.iter().map(|id| split(1, id, 0.2)).collect::<Vec<_>>(),
            ids.iter().map(|id| split(2, id, 0.2)).collect::<Vec<_>>()
        );
        assert_eq!(
            ids.iter()
                .filter(|id| split(7, id, 0.0) == Split::Holdout)
                .count(),
            0
        );
    }
}
