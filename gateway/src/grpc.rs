//! The gRPC face of the gateway (the public Pipeline API): the only place that maps requests,
//! responses and errors between `arf.v1` and the pipeline.

use std::sync::Arc;

use arf_common::server::ResponseStream;
use arf_common::server::watch::{EventLog, watch_log};
use arf_common::status::invalid_field;
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_server::{Pipeline as PipelineRpc, PipelineServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::pipeline::{ConfigRefused, IngestError, Pipeline, RowSource, stages};
use crate::store::{RunRecord, Unimproved};

const BAD_ROWS_IN_RUN: usize = 20;
const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// How long a watcher on a gateway that does not drive the run may lag its events.
const SHARED_STORE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Clone)]
pub struct PipelineService {
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
}

impl PipelineService {
    pub fn new(pipeline: Arc<Pipeline>, shutdown: CancellationToken) -> Self {
        Self { pipeline, shutdown }
    }

    pub fn into_server(self, max_message_bytes: usize) -> PipelineServer<Self> {
        PipelineServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    async fn run(&self, run_id: &str) -> Result<RunRecord, Status> {
        if run_id.is_empty() {
            return Err(invalid_field("run_id", "must not be empty"));
        }
        self.pipeline
            .store()
            .run(run_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no run {run_id:?}")))
    }

    async fn to_wire(&self, run: RunRecord) -> Result<pb::Run, Status> {
        let store = self.pipeline.store();
        let counts = store
            .counts(&run.id, Unimproved::of(&run.config))
            .await
            .map_err(internal)?;
        let progress = stages(&run.config)
            .into_iter()
            .map(|stage| crate::pipeline::stage_progress(&counts, stage))
            .collect();
        Ok(pb::Run {
            last_event_sequence: store.last_event_sequence(&run.id).await.map_err(internal)?,
            bad_rows: store
                .bad_rows(&run.id, BAD_ROWS_IN_RUN)
                .await
                .map_err(internal)?,
            id: run.id,
            display_name: run.display_name,
            state: run.state as i32,
            config: Some(run.config),
            current_stage: run.current_stage as i32,
            progress,
            counts: Some(counts),
            training_job_id: run.training_job_id,
            student_model_dir: run.student_model_dir,
            baseline_job_id: run.baseline_job_id,
            create_time: Some(crate::store::timestamp(run.create_time_ms)),
            end_time: run.end_time_ms.map(crate::store::timestamp),
            error: run.error,
        })
    }
}

fn internal(e: anyhow::Error) -> Status {
    arf_common::status::internal_error("the gateway", &format!("{e:#}"))
}

/// A run's event log, for WatchRun: it ends at the run's final state (stored together with its
/// event, so the log's last event is the final state).
struct RunLog {
    pipeline: Arc<Pipeline>,
    run_id: String,
}

impl EventLog for RunLog {
    type Event = pb::RunEvent;

    async fn after(&self, after: u64) -> Result<Vec<pb::RunEvent>, Status> {
        self.pipeline
            .store()
            .events_after(&self.run_id, after, 256)
            .await
            .map_err(internal)
    }

    async fn terminal(&self) -> Result<Option<u64>, Status> {
        let last = self
            .pipeline
            .store()
            .last_event(&self.run_id)
            .await
            .map_err(internal)?;
        Ok(last.and_then(|e| match e.kind {
            Some(pb::run_event::Kind::State(s))
                if pb::RunState::try_from(s).is_ok_and(is_final) =>
            {
                Some(e.sequence)
            }
            _ => None,
        }))
    }

    /// Other gateways on a shared store append to runs they drive: read again every so often.
    fn poll_every(&self) -> Option<std::time::Duration> {
        self.pipeline
            .store()
            .is_shared()
            .then_some(SHARED_STORE_POLL)
    }

    fn sequence(event: &pb::RunEvent) -> u64 {
        event.sequence
    }
}

fn is_final(state: pb::RunState) -> bool {
    matches!(
        state,
        pb::RunState::Succeeded | pb::RunState::Failed | pb::RunState::Cancelled
    )
}

/// The rows after the spec, up to the `DatasetEnd` that closes them. A stream that ends
/// without it, or whose end announces another count, yields an error: the upload broke.
fn rows_until_end(inbound: Streaming<pb::CreateRunRequest>) -> crate::pipeline::RowStream {
    use pb::create_run_request::Part;
    Box::pin(futures::stream::unfold(
        (Some(inbound), 0u32),
        |(inbound, sent)| async move {
            let mut inbound = inbound?; // None: the end was reached (or an error already sent)
            let message = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    let broken = Status::aborted(format!(
                        "the row stream stopped after {sent} rows without its DatasetEnd: the upload broke, nothing was run"
                    ));
                    return Some((Err(broken), (None, sent)));
                }
                Err(s) => return Some((Err(s), (None, sent))),
            };
            match message.part {
                Some(Part::Row(row)) => Some((Ok(row), (Some(inbound), sent + 1))),
                Some(Part::End(end)) if end.rows == sent => None,
                Some(Part::End(end)) => {
                    let message = format!("{} rows announced, {sent} received", end.rows);
                    Some((Err(invalid_field("end.rows", message)), (None, sent)))
                }
                _ => {
                    let message = "after the spec, every message is a row, then one end";
                    Some((Err(invalid_field("row", message)), (None, sent)))
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl PipelineRpc for PipelineService {
    type WatchRunStream = ResponseStream<pb::RunEvent>;
    type ExportDatasetStream = ResponseStream<pb::ExportChunk>;

    async fn create_run(
        &self,
        request: Request<Streaming<pb::CreateRunRequest>>,
    ) -> Result<Response<pb::Run>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| invalid_field("spec", "the first message must be the run spec"))?;
        let Some(pb::create_run_request::Part::Spec(spec)) = first.part else {
            return Err(invalid_field(
                "spec",
                "the first message must be the run spec",
            ));
        };
        let paths = &self.pipeline.client_paths;
        let rows = if spec.dataset_path.is_empty() {
            RowSource::Stream(rows_until_end(inbound))
        } else {
            // Opened now, and judged by the file it holds: what is read is what was checked.
            RowSource::File(
                paths
                    .datasets
                    .open("spec.dataset_path", &spec.dataset_path)?,
            )
        };
        let student_base = spec
            .config
            .as_ref()
            .map_or("", |c| &c.student_base_model_dir);
        if !student_base.is_empty() {
            paths
                .models
                .confine("spec.config.student_base_model_dir", student_base)?;
        }
        let student_endpoint = spec
            .config
            .as_ref()
            .and_then(|c| c.evaluation.as_ref())
            .map_or("", |e| &e.student_endpoint);
        if !student_endpoint.is_empty() {
            paths
                .allow_student_endpoint("spec.config.evaluation.student_endpoint", student_endpoint)
                .map_err(refused)?;
        }
        self.pipeline
            .check_analyzer_can(spec.config.as_ref())
            .await
            .map_err(refused)?;
        self.pipeline
            .check_trainer_can(spec.config.as_ref())
            .await
            .map_err(refused)?;
        // On a task of its own: a client that goes away mid-upload drops this handler, and the
        // upload must still see the broken stream and fail its run (not stop between two
        // writes and leave it INGESTING).
        let pipeline = self.pipeline.clone();
        let upload = tokio::spawn(async move { pipeline.create_run(spec, rows).await });
        let run_id = upload
            .await
            .map_err(|e| internal(anyhow::anyhow!("the upload's task failed: {e}")))?
            .map_err(|e| match e {
                IngestError::InvalidSpec { field, message } => invalid_field(&field, message),
                IngestError::BadRow { run_id, row } => invalid_field(
                    &row.field,
                    format!("line {}: {} (run {run_id} failed)", row.line, row.message),
                ),
                IngestError::Transport(status) => status,
                IngestError::Internal(e) => internal(e),
            })?;
        Ok(Response::new(self.to_wire(self.run(&run_id).await?).await?))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        Ok(Response::new(
            self.to_wire(self.run(&request.into_inner().run_id).await?)
                .await?,
        ))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let size = arf_common::paging::page_size(request.page_size);
        let offset = arf_common::paging::parse_offset_token(&request.page_token)
            .map_err(|why| invalid_field("page_token", why))?;
        let mut runs = self
            .pipeline
            .store()
            .runs(offset, size + 1)
            .await
            .map_err(internal)?;
        let next_page_token = if runs.len() > size {
            runs.truncate(size);
            arf_common::paging::offset_token(offset + size)
        } else {
            String::new()
        };
        let mut wire = Vec::with_capacity(runs.len());
        for run in runs {
            wire.push(self.to_wire(run).await?);
        }
        let runs = wire;
        Ok(Response::new(pb::ListRunsResponse {
            runs,
            next_page_token,
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run = self.run(&request.into_inner().run_id).await?;
        if !is_final(run.state) && !self.pipeline.cancel(&run.id) {
            // Not driven by this process: cancelled in the store when nobody drives it, or
            // asked of the gateway that does (it stops at its next heartbeat).
            self.pipeline
                .cancel_elsewhere(&run.id)
                .await
                .map_err(internal)?;
        }
        // The driver records CANCELLED at its next item; give it a moment so the answer says so.
        for _ in 0..50 {
            let now = self.run(&run.id).await?;
            if is_final(now.state) {
                return Ok(Response::new(self.to_wire(now).await?));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Response::new(self.to_wire(self.run(&run.id).await?).await?))
    }

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let request = request.into_inner();
        self.run(&request.run_id).await?;
        // Subscribed before the log is first read, so no event falls between the two.
        let changes = self.pipeline.subscribe(&request.run_id);
        let log = RunLog {
            pipeline: self.pipeline.clone(),
            run_id: request.run_id,
        };
        Ok(Response::new(watch_log(
            log,
            changes,
            self.shutdown.clone(),
            request.after_sequence,
        )))
    }

    async fn export_dataset(
        &self,
        request: Request<pb::ExportDatasetRequest>,
    ) -> Result<Response<Self::ExportDatasetStream>, Status> {
        let request = request.into_inner();
        let run = self.run(&request.run_id).await?;
        let format = pb::ExportFormat::try_from(request.format)
            .map_err(|_| invalid_field("format", "unknown export format"))?;
        // Chunks are sent as they fill, page by page: the export is never whole in memory, and
        // a client that reads slowly holds back the reading (a bounded channel).
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let pipeline = self.pipeline.clone();
        tokio::spawn(async move {
            let mut chunk = Vec::new();
            let mut after = 0;
            loop {
                let (lines, last) =
                    match crate::export::page(pipeline.store(), &run, format, after).await {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx.send(Err(internal(e))).await;
                            return;
                        }
                    };
                for line in lines {
                    if !chunk.is_empty() && chunk.len() + line.len() > EXPORT_CHUNK_BYTES {
                        let data = std::mem::take(&mut chunk);
                        if tx.send(Ok(pb::ExportChunk { data })).await.is_err() {
                            return; // the client went away
                        }
                    }
                    chunk.extend_from_slice(line.as_bytes());
                    chunk.push(b'\n');
                }
                match last {
                    Some(position) => after = position,
                    None => break,
                }
            }
            if !chunk.is_empty() {
                let _ = tx.send(Ok(pb::ExportChunk { data: chunk })).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let run = self.run(&request.into_inner().run_id).await?;
        let report = crate::report::build(self.pipeline.store(), &run)
            .await
            .map_err(internal)?;
        let dir = self.pipeline.data_dir.join("runs").join(&run.id);
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::write(dir.join("report.md"), &report.markdown)?;
            report
                .files
                .iter()
                .try_for_each(|f| std::fs::write(dir.join(&f.name), &f.content))
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the report files");
        }
        Ok(Response::new(pb::Report {
            run_id: run.id,
            markdown: report.markdown,
            files: report
                .files
                .into_iter()
                .map(|f| pb::ReportFile {
                    name: f.name,
                    content_type: "image/svg+xml".into(),
                    content: f.content.into_bytes(),
                })
                .collect(),
            overall: report.overall,
            per_channel: report.per_channel,
            path: dir.join("report.md").display().to_string(),
            gate: Some(report.gate),
            judge_uninformative: report.judge_uninformative.unwrap_or_default(),
            differences: report.differences,
            pii_scrubbed: report.pii_scrubbed.into_iter().collect(),
        }))
    }
}

/// A refused configuration's status: retry later, a field to fix, or not this client's to ask.
fn refused(why: ConfigRefused) -> Status {
    match why {
        ConfigRefused::AnalyzerUnreachable(message) => Status::unavailable(message),
        ConfigRefused::Unsupported { field, why } => invalid_field(&field, why),
        ConfigRefused::NotListed(message) => Status::permission_denied(message),
    }
}
