//! The `arf` command line: the embedded demo, and commands against a running gateway.

mod commands;
mod demo;
pub mod models;
mod outcome;
mod progress;
mod run_config;

use std::path::PathBuf;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::Secret;
use arf_common::dataset::{JsonlReader, OnBadRow, conversation_to_wire, stream_jsonl_file};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use clap::{Parser, Subcommand};

pub use commands::{export, report, run, watch};
pub use demo::{DemoArgs, demo};
pub use run_config::RunConfigArgs;

/// The conversations bundled with ARF (written for it; see arf/data/README.md).
pub const SAMPLE: &str = include_str!("../../data/sample_conversations.jsonl");

#[derive(Parser, Debug)]
#[command(
    name = "arf",
    version,
    about = "ARF: analyze, revise and fine-tune on teacher summaries"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The embedded default: the whole suite in this process on loopback, the whole pipeline over
    /// the bundled sample (or --dataset), with progress bars; ends by printing the report's path.
    Demo(DemoArgs),
    /// Serve the Pipeline API like the `gateway` binary, and also host fine-tuned students
    /// in-process for evaluation (this binary links the inference engine; `gateway` does not).
    Gateway {
        #[command(flatten)]
        server: arf_common::config::ServerArgs,
        #[command(flatten)]
        gateway: gateway::config::GatewayArgs,
    },
    /// Serve the Analyzer, as the `analyzer-svc` binary does.
    Analyzer(analyzer_svc::serve::ServeArgs),
    /// Serve an Editor replica, as the `editor-svc` binary does.
    Editor(editor_svc::serve::ServeArgs),
    /// Serve the Trainer, as the `trainer-svc` binary does.
    Trainer(trainer_svc::serve::ServeArgs),
    /// Create a run on a gateway from a JSONL dataset, and optionally follow it.
    Run {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        /// JSONL rows `{id, channel, turns, summary, references?}`, streamed to the gateway.
        dataset: PathBuf,
        /// Read the file on the gateway's machine instead of streaming it.
        #[arg(long)]
        server_side: bool,
        /// Follow the run to its end.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        config: RunConfigArgs,
    },
    /// Print a run's events, from a sequence number on, until it ends.
    Watch {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        run_id: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Write a run's refined dataset as JSONL.
    Export {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        run_id: String,
        /// openai (chat fine-tuning format) or plain.
        #[arg(long, default_value = "openai")]
        format: String,
        /// Output file (stdout when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Fetch a run's report (Markdown and SVG charts) into a folder.
    Report {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        run_id: String,
        #[arg(long, short, default_value = ".")]
        output: PathBuf,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayClientArgs {
    /// The gateway's endpoint.
    #[arg(long, env = "ARF_GATEWAY", default_value = "http://127.0.0.1:50050")]
    pub gateway: String,
    /// Bearer token for the gateway.
    #[arg(long, env = "ARF_GATEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// PEM CA bundle to verify the gateway's certificate.
    #[arg(long, env = "ARF_GATEWAY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for a gateway that asks for mutual TLS (with --tls-key).
    #[arg(long, env = "ARF_GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARF_GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl GatewayClientArgs {
    pub fn connect(&self) -> anyhow::Result<PipelineClient<GrpcChannel>> {
        let options = ClientOptions {
            auth_token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            ..Default::default()
        };
        Ok(PipelineClient::new(connect_lazy(&self.gateway, &options)?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }
}

/// A JSONL record as a wire row.
fn wire_row(line: usize, record: arf_common::dataset::Record) -> pb::DatasetRow {
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
pub fn stream_jsonl(path: &std::path::Path) -> anyhow::Result<RowStream> {
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
pub fn rows_in_memory(rows: Vec<pb::DatasetRow>) -> RowStream {
    Box::pin(futures::stream::iter(rows.into_iter().map(Ok)))
}

pub type RowStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = anyhow::Result<pb::DatasetRow>> + Send>>;

/// Streams the spec, the rows, then the end that closes them, as CreateRun wants them. A row
/// that fails to read aborts the call: the gateway, missing the end, runs nothing.
pub async fn create_run(
    client: &mut PipelineClient<GrpcChannel>,
    spec: pb::RunSpec,
    rows: RowStream,
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
