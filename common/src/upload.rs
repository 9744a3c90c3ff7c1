//! CreateRun's upload, as a client makes it: the spec, then the rows, then the end that closes
//! them. The command line, the tests and the benches of every crate create runs through it.

use crate::client::GrpcChannel;
use crate::dataset::{JsonlReader, OnBadRow, conversation_to_wire, stream_jsonl_file};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;

/// A JSONL record as a wire row.
fn wire_row(line: usize, record: crate::dataset::Record) -> pb::DatasetRow {
    pb::DatasetRow {
        line: line as u32,
        conversation: Some(conversation_to_wire(&record.conversation)),
        teacher_summary: record.summary.unwrap_or_default(),
        references: record.references,
        split: pb::RowSplit::Unspecified as i32,
    }
}

/// JSONL text as wire rows; a bad row stops with its line number and field.
pub fn rows_from_jsonl(text: &[u8], source: &str) -> anyhow::Result<Vec<pb::DatasetRow>> {
    JsonlReader::new(text, source, OnBadRow::Stop)
        .map(|r| {
            let (line, record) = r?;
            Ok(wire_row(line, record))
        })
        .collect()
}

/// A JSONL file's rows, read as they are sent (never the whole file in memory). A bad row ends
/// the stream with its error, line number and field.
pub fn stream_jsonl(path: &std::path::Path) -> anyhow::Result<UploadRows> {
    use futures::StreamExt as _;
    let rows = stream_jsonl_file(path, OnBadRow::Stop, ROWS_IN_FLIGHT)?;
    Ok(Box::pin(rows.map(|row| {
        row.map(|(line, record)| wire_row(line, record))
            .map_err(anyhow::Error::from)
    })))
}

/// Rows read ahead of the upload: enough to keep the stream busy, few enough to stay small.
const ROWS_IN_FLIGHT: usize = 64;

/// Rows already in memory (the bundled sample, a bench's selection) as a row stream.
pub fn rows_in_memory(rows: Vec<pb::DatasetRow>) -> UploadRows {
    Box::pin(futures::stream::iter(rows.into_iter().map(Ok)))
}

pub type UploadRows =
    std::pin::Pin<Box<dyn futures::Stream<Item = anyhow::Result<pb::DatasetRow>> + Send>>;

/// Streams the spec, the rows, then the end that closes them, as CreateRun wants them. A row
/// that fails to read aborts the call: the gateway, missing the end, runs nothing.
pub async fn create_run(
    client: &mut PipelineClient<GrpcChannel>,
    spec: pb::RunSpec,
    rows: UploadRows,
) -> anyhow::Result<pb::Run> {
    use futures::StreamExt as _;
    use pb::create_run_request::Part;
    let (failed, mut read_error) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let rows = futures::stream::unfold(
        (Some(rows), Some(failed), 0u32),
        |(rows, mut failed, sent)| async move {
            let mut rows = rows?;
            match rows.next().await {
                Some(Ok(row)) => Some((Part::Row(row), (Some(rows), failed, sent + 1))),
                None => Some((
                    Part::End(pb::DatasetEnd { rows: sent }),
                    (None, failed, sent),
                )),
                Some(Err(e)) => {
                    if let Some(f) = failed.take() {
                        let _ = f.send(e);
                    }
                    std::future::pending().await // no end; the call is dropped below
                }
            }
        },
    );
    let messages = futures::stream::once(std::future::ready(Part::Spec(spec)))
        .chain(rows)
        .map(|p| pb::CreateRunRequest { part: Some(p) });
    tokio::select! {
        created = client.create_run(messages) => Ok(created
            .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
            .into_inner()),
        Ok(e) = &mut read_error => Err(e.context("the upload was cancelled: no run was started")),
    }
}
