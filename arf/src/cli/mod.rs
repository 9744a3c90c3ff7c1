//! The `arf` command line: the embedded demo, and commands against a running gateway.

mod commands;
mod demo;
mod event_json;
mod export_model;
pub mod models;
mod outcome;
mod progress;
mod run_config;
mod serve_student;

use std::path::PathBuf;

use arf_common::client::{ClientOptions, GrpcChannel, connect_lazy};
use arf_common::config::Secret;
use arf_proto::v1::pipeline_client::PipelineClient;
use clap::{Parser, Subcommand};

pub use commands::{EventOutput, export, report, run, watch};
pub use demo::{DemoArgs, demo};
pub use export_model::{ExportModelArgs, export_model};
pub use run_config::RunConfigArgs;
pub use serve_student::{ServeStudentArgs, serve_student};

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
        /// Follow the run to its end, printing its events.
        #[arg(long)]
        watch: bool,
        /// With --watch: events as lines to read (text) or one JSON object a line (json).
        #[arg(long, value_enum, default_value_t = EventOutput::Text)]
        output: EventOutput,
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
        /// Events as lines to read (text) or one JSON object a line (json).
        #[arg(long, value_enum, default_value_t = EventOutput::Text)]
        output: EventOutput,
    },
    /// Write a run's refined dataset, or the preference pairs its revisions make, as JSONL.
    Export {
        #[command(flatten)]
        gateway: GatewayClientArgs,
        run_id: String,
        /// openai (chat fine-tuning format) or plain: the refined training pairs; dpo (TRL's
        /// conversational preference layout) or openai-preference (OpenAI's preference
        /// fine-tuning): one (chosen revision, rejected teacher summary) pair per accepted
        /// revision.
        #[arg(long, default_value = "openai")]
        format: String,
        /// Output file (stdout when absent).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Serve a finished run's ARF student over the OpenAI HTTP API (`/v1/chat/completions`)
    /// and gRPC, from its merged folder: run it where the trainer wrote that folder.
    ServeStudent(ServeStudentArgs),
    /// Write a finished run's ARF student as one GGUF file (llama.cpp, Ollama, LM Studio): run it
    /// where the trainer wrote the merged folder.
    ExportModel(ExportModelArgs),
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
    #[arg(long, env = "ARF_GATEWAY", default_value_t = arf_proto::default_ports::loopback(arf_proto::default_ports::PIPELINE))]
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
