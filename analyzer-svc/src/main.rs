//! `analyzer-svc`: the analyzer as its own server.

use std::path::PathBuf;

use analyzer_svc::grpc::AnalyzerService;
use analyzer_svc::{Analyzer, Limits};
use arf_common::client::{ClientOptions, connect_lazy};
use arf_common::config::{Secret, ServerArgs};
use arf_proto::service_names::ANALYZER;
use clap::Parser;
use tonic::service::Routes;

/// Finds and categorizes the errors of teacher summaries.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Editor endpoint (http[s]://host:port) for the model-judged detectors; without it they are refused.
    #[arg(long, env = "ARF_JUDGE_ENDPOINT")]
    judge_endpoint: Option<String>,

    /// Bearer token for the judge endpoint.
    #[arg(long, env = "ARF_JUDGE_TOKEN", hide_env_values = true)]
    judge_token: Option<Secret>,

    /// PEM CA bundle to verify the judge endpoint's certificate.
    #[arg(long, env = "ARF_JUDGE_TLS_CA")]
    judge_tls_ca: Option<PathBuf>,

    /// Largest summary accepted, in bytes.
    #[arg(long, env = "ARF_MAX_SUMMARY_BYTES", default_value_t = Limits::default().max_summary_bytes)]
    max_summary_bytes: usize,

    /// Largest conversation accepted (all turns), in bytes.
    #[arg(long, env = "ARF_MAX_CONVERSATION_BYTES", default_value_t = Limits::default().max_conversation_bytes)]
    max_conversation_bytes: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = &Args::parse();
    arf_common::server::run_binary(
        "arf-analyzer",
        &[ANALYZER],
        50051,
        &args.server,
        args,
        |health, shutdown| async move {
            let judge = match &args.judge_endpoint {
                Some(endpoint) => {
                    let options = ClientOptions {
                        auth_token: args.judge_token.clone(),
                        tls_ca: args.judge_tls_ca.clone(),
                        ..Default::default()
                    };
                    Some(connect_lazy(endpoint, &options)?)
                }
                None => None,
            };
            let limits = Limits {
                max_summary_bytes: args.max_summary_bytes,
                max_conversation_bytes: args.max_conversation_bytes,
                ..Limits::default()
            };
            let service = AnalyzerService::new(
                Analyzer::new(limits),
                judge,
                args.server.max_message_bytes,
                shutdown,
            );
            health.set_serving(ANALYZER, true).await;
            Ok(Routes::new(
                service.into_server(args.server.max_message_bytes),
            ))
        },
    )
    .await
}
