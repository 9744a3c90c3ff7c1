//! The `arf` command line: the embedded demo, and commands against a running gateway.

mod commands;
mod demo;
pub mod models;
mod progress;
mod run_config;

use std::path::PathBuf;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::Secret;
use arf_common::dataset::{JsonlReader, OnBadRow, conversation_to_wire};
use arf_proto::v1 as pb;
use arf_proto::v1::pipeline_client::PipelineClient;
use clap::{Parser, Subcommand};

pub use commands::{export, report, run, watch};
pub use demo::{DemoArgs, demo};
pub use run_config::RunConfigArgs;

/// The conversations bundled with ARF (written for it; see gateway/data/README.md).
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
}

impl GatewayClientArgs {
    pub fn connect(&self) -> anyhow::Result<PipelineClient<GrpcChannel>> {
        let options = ClientOptions {
            auth_token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            ..Default::default()
        };
        Ok(PipelineClient::new(connect_lazy(&self.gateway, &options)?)
            .max_decoding_message_size(64 * 1024 * 1024))
    }
}

/// JSONL text as wire rows; a bad row stops with its line number and field.
pub fn rows_from_jsonl(text: &[u8], source: &str) -> anyhow::Result<Vec<pb::DatasetRow>> {
    JsonlReader::new(text, source, OnBadRow::Stop)
        .map(|r| {
            let (line, record) = r?;
            Ok(pb::DatasetRow {
                line: line as u32,
                conversation: Some(conversation_to_wire(&record.conversation)),
                teacher_summary: record.summary.unwrap_or_default(),
                references: record.references,
                split: pb::RowSplit::Unspecified as i32,
            })
        })
        .collect()
}

/// Streams the spec, then the rows, as CreateRun wants them.
pub async fn create_run(
    client: &mut PipelineClient<GrpcChannel>,
    spec: pb::RunSpec,
    rows: Vec<pb::DatasetRow>,
) -> anyhow::Result<pb::Run> {
    use pb::create_run_request::Part;
    let messages: Vec<pb::CreateRunRequest> = std::iter::once(Part::Spec(spec))
        .chain(rows.into_iter().map(Part::Row))
        .map(|p| pb::CreateRunRequest { part: Some(p) })
        .collect();
    Ok(client
        .create_run(futures::stream::iter(messages))
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner())
}
